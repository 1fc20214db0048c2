"""The user journey's fixtures: the dashboard's browser (tests/browser.py)."""

from tests.browser import browser, page  # noqa: F401 (fixtures)
