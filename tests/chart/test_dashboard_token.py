"""The dashboard token: a Secret the chart generates (or the one given, or an existing
Secret), handed to the http-api only as PIPEOPS_DASHBOARD_TOKEN, and kept in sync with
what the NOTES tell people to read."""

from __future__ import annotations

import base64

from tests.chart.chart import AGENT_CONTAINERS, TOKEN, Chart, Rendered


def _env(rendered: Rendered, container: str) -> dict[str, object]:
    return {e["name"]: e.get("valueFrom", e.get("value"))
            for e in rendered.container(container).get("env", [])}


def test_a_token_is_generated_into_a_secret(rendered: Rendered) -> None:
    secret = rendered.one("Secret", f"{rendered.deployment['metadata']['name']}-dashboard")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 40 and token.isalnum()
    assert _env(rendered, "http-api")["PIPEOPS_DASHBOARD_TOKEN"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}}
    for other in set(AGENT_CONTAINERS) - {"http-api"}:
        assert "PIPEOPS_DASHBOARD_TOKEN" not in _env(rendered, other)


def test_a_given_token_is_used(chart: Chart) -> None:
    rendered = chart.template("--set", f"pipeops.token={TOKEN}",
                              "--set", "httpApi.dashboardToken=given-token-0123456789")
    secret = next(s for s in rendered.of_kind("Secret")
                  if s["metadata"]["name"].endswith("-dashboard"))
    assert base64.b64decode(secret["data"]["token"]) == b"given-token-0123456789"


def test_an_existing_secret_is_used_and_none_is_made(chart: Chart) -> None:
    rendered = chart.template("--set", f"pipeops.token={TOKEN}",
                              "--set", "httpApi.existingDashboardSecret=my-dashboard")
    assert not [s for s in rendered.of_kind("Secret")
                if s["metadata"]["name"].endswith("-dashboard")]
    assert _env(rendered, "http-api")["PIPEOPS_DASHBOARD_TOKEN"] == {
        "secretKeyRef": {"name": "my-dashboard", "key": "token"}}
