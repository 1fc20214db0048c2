"""The dashboard in a real browser: Debian's chromium, driven through Playwright (the
system browser; nothing is downloaded). It loads without a token and asks for it, then
shows the pod live: the heartbeat count rises and a new log line appears without a
reload. 10,000 events fed in keep the DOM bounded and the page responsive. A screenshot
is written to test-artifacts/dashboard.png."""

from __future__ import annotations

import time

from playwright.sync_api import Page

from tests.browser import login
from tests.helpers import ROOT
from tests.httpapi.pod import Pod

ARTIFACTS = ROOT / "test-artifacts"


def test_live_heartbeats_and_logs(pod: Pod, page: Page) -> None:
    login(page, pod.api.url, pod.api.token)
    page.wait_for_function("() => /^\\d+$/.test(document.getElementById('hb-sent').textContent)",
                           timeout=20000)
    first = int(page.text_content("#hb-sent") or 0)
    page.wait_for_function(
        f"() => Number(document.getElementById('hb-sent').textContent) > {first}", timeout=20000)
    page.wait_for_selector("#containers tr:nth-child(4)")
    assert "ready" in (page.text_content("#containers") or "")
    assert "connected" in (page.text_content("#tn-state") or "")

    marker = f"dashboard-{time.monotonic_ns()}"
    status, _, _ = pod.api.request("POST", "/api/runners/sessions/command", {
        "action": "wake_session", "payload": {"sessionId": "not-here"}, "id": marker})
    assert status == 200
    page.wait_for_selector(f"#logs .row:has-text('{marker}')", timeout=20000)
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1

    page.select_option("#logs-level", "warning")
    page.wait_for_selector(f"#logs .row.warning:has-text('{marker}')")
    assert page.locator("#logs .row.info").count() == 0

    status, _, _ = pod.api.request("POST", "/api/runners/sessions/command", {
        "action": "start_session", "payload": {"sessionId": "shown", "template": "nginx"}})
    assert status == 200
    page.wait_for_selector("#session-list td:has-text('shown')", timeout=20000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(2500)  # let the charts gather a few points for the picture
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10000


def test_ten_thousand_events_keep_the_page_responsive(pod: Pod, page: Page) -> None:
    login(page, pod.api.url, pod.api.token)
    started = time.monotonic()
    page.evaluate("""() => {
        for (let i = 0; i < 10000; i++) {
            window.pipeopsDashboard.ingest('events', {id: 1e9 + i, source: 'tunnel',
                level: i % 10 ? 'info' : 'warning', kind: 'event',
                message: 'synthetic event ' + i, time: new Date().toISOString(),
                attributes: {n: String(i)}});
        }
    }""")
    page.wait_for_selector("#events .row:has-text('synthetic event 9999')")
    rows = page.locator("#events .row").count()
    assert rows <= page.evaluate("() => window.pipeopsDashboard.maxRows")
    page.fill("#events-text", "synthetic event 9990")  # re-filtering stays quick
    page.wait_for_function("() => document.querySelectorAll('#events .row').length === 1")
    assert time.monotonic() - started < 15


def test_a_wrong_token_is_asked_again(pod: Pod, page: Page) -> None:
    page.goto(pod.api.url + "/dashboard")
    page.fill("#token", "not-the-token")
    page.click("#login button")
    page.wait_for_selector("#login-error:has-text('401')", timeout=15000)
    assert page.evaluate("() => sessionStorage.length") == 0
