"""The dashboard's browser for tests: Debian's chromium (`make setup`), driven through
Playwright (the system browser; nothing is downloaded).

`browser` (one per module) and `page` (one per test: a fresh context, and the test fails
if the page fetched anything from outside the pod) are fixtures; a test module imports
them. `login` opens the dashboard and gives it the token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: run `make setup`"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                              headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    opened = context.new_page()
    outside: list[str] = []
    opened.on("request", lambda r: outside.append(r.url)
              if not r.url.startswith(("http://127.0.0.1", "data:")) else None)
    yield opened
    context.close()
    assert outside == [], f"the page fetched from outside the pod: {outside}"


def login(page: Page, url: str, token: str) -> None:
    """Open ``url``/dashboard, which asks for the token, and give it."""
    page.goto(url + "/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#main")
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_selector("#main:not([hidden])")
