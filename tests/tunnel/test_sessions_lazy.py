"""Session management costs nothing until used (``tunnel.sessions``): the status watch
starts with the first session command, or at once when the state volume's marker says
live sessions were known (a restarted tunnel reports them again); switched off, session
commands fail with the reason and the cluster is never asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesim.testing import Kubesim
from pipeops_tunnel.session_status import MARKER
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    TunnelRun,
    kubesim_with_namespace,
    until,
    write_identity,
)

NS = "pipeops-sessions"  # TunnelRun's kubernetes.session_namespace


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with kubesim_with_namespace(NS) as ks:
        yield ks


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


def statuses(cp: FakeControlPlane, session_id: str) -> list[dict[str, Any]]:
    return [m for m in cp.messages
            if m.get("type") == "status" and m.get("sessionId") == session_id]


def a_session_made_elsewhere(ks: Kubesim, session_id: str) -> None:
    """A session Deployment the agent did not make in this run (an earlier run did)."""
    labels = {"app": "pipeops-session", "session": session_id}
    status, body = ks.request("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"session-{session_id}", "labels": labels},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "s", "image": "x"}]}}}})
    assert status == 201, body


async def start(cp: FakeControlPlane, state_dir: Path, kubeconfig: str,
                extra: list[str] | None = None) -> TunnelRun:
    run = TunnelRun(cp.url, state_dir, forwards={"agent-http": "127.0.0.1:9"},
                    kubeconfig=kubeconfig, extra=extra).start()
    await run.started()
    write_identity(state_dir)
    await cp.wait_connected()
    return run


async def test_the_watch_starts_with_the_first_session_command_and_survives_a_restart(
    cp: FakeControlPlane, kubesim: Kubesim, state_dir: Path
) -> None:
    await asyncio.to_thread(a_session_made_elsewhere, kubesim, "old")
    run = await start(cp, state_dir, kubesim.kubeconfig)
    try:
        # connected, a command's round trip later: nothing about sessions was asked for
        reply = await cp.command("c-bad", "wake_session", {})
        assert reply["type"] == "failed" and "sessionId" in reply["error"]
        assert statuses(cp, "old") == []
        assert not (state_dir / MARKER).exists()
        # every feature on, connected, idle: the Kubernetes client is not even imported
        assert "kubernetes" not in await run.imported()

        payload = {"sessionId": "new", "template": "nginx"}
        assert (await cp.command("c-new", "start_session", payload))["type"] == "complete"
        assert "kubernetes" in await run.imported()  # loaded by the first session command
        # the watch runs now: both sessions are reported, and the marker is written
        await until(lambda: statuses(cp, "old") and statuses(cp, "new"),
                    what="both sessions reported")
        assert statuses(cp, "old")[-1]["state"] == "hibernated"
        await until(lambda: (state_dir / MARKER).exists(), what="the marker")
    finally:
        await asyncio.to_thread(run.stop)

    # a restarted tunnel finds the marker and reports the live sessions without a command
    before = len(cp.session_messages)
    run = TunnelRun(cp.url, state_dir, forwards={"agent-http": "127.0.0.1:9"},
                    kubeconfig=kubesim.kubeconfig).start()
    try:
        await cp.wait_connected(before + 1)
        await until(lambda: any(m.get("sessionId") == "old"
                                for m in cp.session_messages[before]),
                    what="the old session reported after the restart")
        for session_id in ("old", "new"):
            reply = await cp.command(f"c-stop-{session_id}", "stop_session",
                                     {"sessionId": session_id})
            assert reply["type"] == "complete", reply
        # no live session is left: the marker goes, the next start loads nothing
        await until(lambda: not (state_dir / MARKER).exists(), what="the marker removed")
    finally:
        await asyncio.to_thread(run.stop)


async def test_switched_off_session_commands_fail_and_the_cluster_is_not_asked(
    cp: FakeControlPlane, kubesim: Kubesim, state_dir: Path
) -> None:
    (state_dir / MARKER).touch()  # even a marker does not start the watch
    await asyncio.to_thread(a_session_made_elsewhere, kubesim, "off")
    run = await start(cp, state_dir, kubesim.kubeconfig,
                      extra=["--set", "tunnel.sessions.enabled=false"])
    try:
        reply = await cp.command("c-off", "start_session",
                                 {"sessionId": "off2", "template": "nginx"})
        assert reply["type"] == "failed"
        assert "tunnel.sessions.enabled is false" in reply["error"]
        status, body = await asyncio.to_thread(
            kubesim.request, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/session-off2")
        assert status == 404, body
        assert statuses(cp, "off") == []
    finally:
        await asyncio.to_thread(run.stop)
