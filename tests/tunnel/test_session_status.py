"""The session state reporter (``status`` messages) on its own: against a real server for
the list and watch (``cluster``: kubesim and the real control plane, a namespace per
test), with a send function in place of the connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentkit.config import KubernetesConfig, ReconnectConfig
from agentkit.events import EventBus
from agentkit.kube import LazyKube
from agentkit.status import ServiceStatus
from pipeops_tunnel.session_status import MAX_QUEUED, SessionStatus, status_of
from tests.clusters import Cluster
from tests.tunnel.agent_helpers import until

NS = "sessions-here"  # the reporter's namespace in the test that calls no server
FAST = ReconnectConfig(backoff_base=0.05, backoff_max=0.2)
RUNNING = 60  # seconds for a session's pod to be Ready (a kwok node on a loaded machine)


@pytest.fixture
def ns(cluster: Cluster) -> str:
    return cluster.create_namespace("sessions")


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[LazyKube]:
    lazy = LazyKube(KubernetesConfig(in_cluster=False, kubeconfig=cluster.kubeconfig),
                    ServiceStatus("tunnel", "test", EventBus("tunnel")))
    yield lazy
    await lazy.aclose()


def deployment(session_id: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": "pipeops-session", "session": session_id}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"session-{session_id}", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "s", "image": "x"}]}}}}


def create(ks: Cluster, ns: str, session_id: str) -> None:
    status, body = ks.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                              deployment(session_id))
    assert status == 201, body


def delete(ks: Cluster, ns: str, session_id: str) -> None:
    status, body = ks.request(
        "DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/session-{session_id}")
    assert status == 200, body


def test_the_state_of_a_deployment() -> None:
    one = deployment("a")
    assert status_of(one) == {"type": "status", "sessionId": "a", "state": "starting",
                              "replicas": 1, "readyReplicas": 0}
    one["metadata"]["generation"] = 2
    one["status"] = {"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 1}
    assert status_of(one)["state"] == "running"  # type: ignore[index]
    # a status from before the latest spec (a wake, an update) is not "running" yet
    one["metadata"]["generation"] = 3
    assert status_of(one)["state"] == "starting"  # type: ignore[index]
    one["status"] = {"observedGeneration": 3, "updatedReplicas": 0, "readyReplicas": 1}
    assert status_of(one)["state"] == "starting"  # type: ignore[index]
    assert status_of(deployment("b", replicas=0))["state"] == "hibernated"  # type: ignore[index]
    assert status_of({"metadata": {"name": "not-a-session"}}) is None


async def test_what_the_control_plane_does_not_take_waits_and_the_latest_state_wins() -> None:
    never_called = LazyKube(KubernetesConfig(in_cluster=False, kubeconfig="/nonexistent"),
                            ServiceStatus("tunnel", "test", EventBus("tunnel")))
    reporter = SessionStatus(never_called, NS, FAST, max_sessions=2)
    taken: list[dict[str, Any]] = []
    reading = False

    def send(message: dict[str, Any]) -> bool:
        if reading:
            taken.append(message)
        return reading

    reporter.attach(send)
    one, two, three = (status_of(deployment(s)) for s in ("one", "two", "three"))
    assert one and two and three
    hibernated = {**one, "state": "hibernated", "replicas": 0}
    for message in (one, two, hibernated, three):  # three is over the bound of 2
        reporter._seen(message)
    assert taken == [] and reporter.unsent == 2
    reading = True
    reporter.flush()
    assert taken == [two, hibernated]  # one message per session, its latest state
    reporter.detach()
    reporter._seen({**two, "state": "stopped", "replicas": 0, "readyReplicas": 0})
    assert reporter.latest == {"one": hibernated}
    reporter.attach(send)  # a new connection: what waited, then every live session
    assert [(m["sessionId"], m["state"]) for m in taken[2:]] == [
        ("two", "stopped"), ("one", "hibernated")]

    # never more than MAX_QUEUED control messages waiting on the connection: commands'
    # acks and outcomes keep their room
    queued = MAX_QUEUED
    reporter.attach(send, lambda: queued)
    assert len(taken) == 4 and reporter.unsent == 1  # one's state again, held back
    queued = MAX_QUEUED - 1
    reporter.flush()
    assert len(taken) == 5 and reporter.unsent == 0


async def test_it_lists_watches_and_lists_again_after_the_history_is_gone(
        kube: LazyKube, cluster: Cluster, ns: str) -> None:
    create(cluster, ns, "before")  # there before the reporter: listed
    sent: list[dict[str, Any]] = []
    reporter = SessionStatus(kube, ns, FAST)
    reporter.attach(lambda m: sent.append(m) is None)
    task = asyncio.create_task(reporter.run())

    def states() -> dict[str, str]:
        return {m["sessionId"]: m["state"] for m in sent}

    try:
        await until(lambda: states().get("before") == "running",
                    RUNNING, what="the listed session")
        create(cluster, ns, "watched")
        await until(lambda: states().get("watched") == "running",
                    RUNNING, what="the watched session")
        # the watch ends, its history gone: listed again, then watched again
        await asyncio.to_thread(cluster.end_watches)
        create(cluster, ns, "after")
        await until(lambda: states().get("after") == "running",
                    RUNNING, what="a session after it")
        assert not task.done()

        # not watching (a restart) while one is deleted and the history expires: the
        # next list finds it gone and reports it stopped
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        delete(cluster, ns, "before")
        await asyncio.to_thread(cluster.expire_history)
        assert states()["before"] == "running"
        task = asyncio.create_task(reporter.run())
        await until(lambda: states().get("before") == "stopped", RUNNING, what="before stopped")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for session_id in ("watched", "after"):
            delete(cluster, ns, session_id)
