"""The tunnel's WebSocket cut 100 times while streams carry traffic (the control plane
kills the TCP connection, no close frame: a dead network): every cut is followed by a
reconnect, and afterwards nothing is left over in the tunnel: no stream, no task, no file
descriptor more than before, memory flat (RSS after the cuts against RSS after a warm-up,
within a generous bound: behaviour, not timing).

Traffic: threads fetch through the control plane's ``kubernetes-api`` forward (each
request a new stream to the API server through the tunnel: small lists and the large
OpenAPI document) and hold a watch open, reconnecting whenever a cut ends them.

To keep the test's length about the cuts and not the waits, the tunnel runs with a
reconnect cap of 0.05 s meanwhile (a cut within a minute of the last one backs off up to
the cap: 100 cuts at the pod's cap of 1 s would be ~1 min of waiting); it is put back
with the pod's own settings at the end."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tests.faults.pod import FaultPod
from tests.helpers import wait_for

CUTS = 100
WARMUP = 10
RSS_GROWTH = 32 * 2**20  # generous: a leak per stream or per connection shows as far more
SPARE = 2  # fds and tasks that may come and go on their own (a gRPC call being answered)


class Traffic:
    """Background requests through the tunnel's ``kubernetes-api`` forward."""

    def __init__(self, port: int, token: str, ca: str) -> None:
        self.port, self.token = port, token
        self.context = ssl.create_default_context(cafile=ca)
        self.stop = threading.Event()
        self.done = {"requests": 0, "errors": 0, "events": 0}
        self.threads = [threading.Thread(target=self._loop, args=(fn,), daemon=True)
                        for fn in (self._list, self._openapi, self._watch, self._list)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                           timeout=5)

    def _loop(self, fn: Callable[[http.client.HTTPSConnection], None]) -> None:
        while not self.stop.is_set():
            conn = self._connection()
            try:
                fn(conn)
                self.done["requests"] += 1
            except (OSError, http.client.HTTPException):
                self.done["errors"] += 1
                self.stop.wait(0.02)  # pacing a client that failed, not a wait for state
            finally:
                conn.close()

    def _get(self, conn: http.client.HTTPSConnection, path: str) -> bytes:
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise http.client.HTTPException(f"{path}: {reply.status}")
        return body

    def _list(self, conn: http.client.HTTPSConnection) -> None:
        self._get(conn, "/api/v1/pods")

    def _openapi(self, conn: http.client.HTTPSConnection) -> None:
        self._get(conn, "/openapi/v2")

    def _watch(self, conn: http.client.HTTPSConnection) -> None:
        conn.request("GET", "/api/v1/namespaces?watch=1&timeoutSeconds=30",
                     headers={"Authorization": f"Bearer {self.token}"})
        reply = conn.getresponse()
        while not self.stop.is_set() and reply.readline():
            self.done["events"] += 1


def _tunnel_view(pod: FaultPod) -> dict[str, Any]:
    status, view = pod.cp.request("GET", f"/debug/tunnels/{pod.cluster_id}")
    assert status == 200, view
    return dict(view)


def _forward_port(pod: FaultPod) -> int:
    view = wait_for(lambda: (v := _tunnel_view(pod)) and v["connected"] and v, 15,
                    what="the tunnel connected")
    return next(int(f["remote_port"]) for f in view["forwards"]
                if f["name"] == "kubernetes-api")


def _quiet(pod: FaultPod) -> dict[str, Any]:
    """The tunnel's runtime once it is connected with no stream open on either side."""
    def quiet() -> bool:
        view = _tunnel_view(pod)
        return bool(view["connected"] and view["stats"]
                    and view["stats"]["streams_active"] == 0
                    and pod.api.metric("pipeops_tunnel_streams_active",
                                       container="tunnel") == 0)

    wait_for(quiet, 20, what="connected, every stream closed")
    return dict(pod.describe("tunnel")["runtime"])


def _cut(pod: FaultPod, times: int) -> None:
    """Cut the connection ``times`` times, each time once a new one is up and carries a
    stream (every cut falls on a transfer)."""
    connects = 0  # the first cut: any connection
    for _ in range(times):
        view = wait_for(lambda seen=connects: (v := _tunnel_view(pod)) and v["connected"]
                        and v["connects"] > seen
                        and (v["stats"] or {}).get("streams_active", 0) > 0 and v, 15,
                        what="a new connection carrying a stream")
        connects = view["connects"]
        status, reply = pod.cp.request("POST", f"/debug/tunnels/{pod.cluster_id}/drop")
        assert status == 200, reply


@contextlib.contextmanager
def _fast_reconnect(pod: FaultPod) -> Iterator[None]:
    pod.kill("tunnel")
    pod.start_again("tunnel", "--set", "pipeops.reconnect.backoff_base=0.01",
                    "--set", "pipeops.reconnect.backoff_max=0.05")
    try:
        yield
    finally:
        pod.kill("tunnel")
        pod.start_again("tunnel")


def test_a_hundred_cuts_during_transfers_leak_nothing(pod: FaultPod) -> None:
    with _fast_reconnect(pod):
        reconnects = pod.api.metric("pipeops_tunnel_reconnects_total", container="tunnel")
        port = _forward_port(pod)
        connects = _tunnel_view(pod)["connects"]
        with Traffic(port, pod.kubesim.token, pod.kubesim.ca) as warm:
            wait_for(lambda: warm.done["requests"] >= 5, 15, what="traffic flowing")
            _cut(pod, WARMUP)
        before = _quiet(pod)
        with Traffic(port, pod.kubesim.token, pod.kubesim.ca) as traffic:
            wait_for(lambda: traffic.done["requests"] >= 5, 15, what="traffic flowing")
            _cut(pod, CUTS)
            wait_for(lambda: _tunnel_view(pod)["connected"], 15, what="the tunnel back")
            flowing = traffic.done["requests"]
            wait_for(lambda: traffic.done["requests"] > flowing + 5, 15,
                     what="traffic through the tunnel after the cuts")
        assert traffic.done["errors"] >= CUTS // 2  # the cuts did hit transfers
        assert _tunnel_view(pod)["connects"] == connects + WARMUP + CUTS
        assert pod.api.metric("pipeops_tunnel_reconnects_total",
                              container="tunnel") == reconnects + WARMUP + CUTS
        after = wait_for(lambda: (r := _quiet(pod))
                         and int(r["open_fds"]) <= int(before["open_fds"]) + SPARE
                         and int(r["tasks"]) <= int(before["tasks"]) + SPARE and r, 20,
                         what=f"the fds and tasks back to {before}")
        growth = int(after["rss_bytes"]) - int(before["rss_bytes"])
        assert growth < RSS_GROWTH, f"RSS grew {growth / 2**20:.1f} MiB over {CUTS} cuts"
        assert pod.services["tunnel"].proc is not None
        assert pod.services["tunnel"].proc.poll() is None
        print(f"traffic {traffic.done}; "
              f"runtime before {before}, after {after}")
