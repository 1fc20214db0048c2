"""The soak's traffic (bench/soak.py): one generator per kind of load, each counting what
it did in a :class:`_soak_report.Traffic`; they run together on one event loop (the
official Kubernetes client's calls and watches in a thread pool) until ``halt`` is set.
(The leading underscore keeps ``make bench`` from running it.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _soak_report as report
import httpx

DEMO_HOST = "demo.example.test"
HISTORY = 500  # agentkit.events.EventBus.history_size: each container's recent events
RING = 2000  # the http-api's realtime.buffer: the four containers' events for SSE resumes


class Load:
    """The traffic generators; each counts what it did in a :class:`report.Traffic`."""

    def __init__(self, endpoints: dict[str, Any], pool: concurrent.futures.Executor) -> None:
        from kubernetes import config

        self.ep = endpoints
        self.pool = pool
        self.halt = threading.Event()  # the threads' stop signal
        self.cp = endpoints["controlplane"]["url"]
        self.public = endpoints["gateway"]["public_url"]
        self.http_api = endpoints["http_api"]
        self.tunneled = config.new_client_from_config(config_file=endpoints["tunnel"]["kubeconfig"])
        self.direct = config.new_client_from_config(config_file=endpoints["kubesim"]["kubeconfig"])
        self.traffic: list[report.Traffic] = []
        self.began = time.monotonic()
        # the event histories, as the SSE items show them: per source the highest bus
        # sequence seen and when it reached the history's size; the same for the hub's ids
        self.rings: dict[str, dict[str, Any]] = {}

    def saw(self, item: dict[str, Any]) -> None:
        for name, count, size in ((item.get("source", "?"), item.get("sequence", 0),
                                   HISTORY), ("http-api ring", item.get("id", 0), RING)):
            ring = self.rings.setdefault(name, {"events": 0, "size": size, "full_at": None})
            ring["events"] = max(ring["events"], int(count))
            if ring["full_at"] is None and ring["events"] >= size:
                ring["full_at"] = time.monotonic() - self.began

    def counter(self, what: str) -> report.Traffic:
        self.traffic.append(report.Traffic(what))
        return self.traffic[-1]

    async def thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def forever(self, traffic: report.Traffic, step: Callable[[], Awaitable[None]],
                      pause: float) -> None:
        """``step`` again and again, ``pause`` apart; a failure is counted, then a pause."""
        while not self.halt.is_set():
            try:
                await step()
                traffic.ok += 1
            except Exception as exc:  # counted, and the last one shown, in the report
                traffic.failed(exc)
            await asyncio.sleep(pause)

    def tasks(self) -> list[Awaitable[None]]:
        return [self.api_requests(), self.watch("Ingresses (all namespaces)"),
                self.watch("session Deployments"), self.downloads(), self.uploads(),
                self.port_forward(), self.sse("events"), self.sse("logs"),
                self.sse("events", reconnect=20), self.ingress_churn(), self.commands()]

    async def api_requests(self) -> None:
        from kubernetes import client

        core, net = client.CoreV1Api(self.tunneled), client.NetworkingV1Api(self.tunneled)
        calls = [core.list_pod_for_all_namespaces, core.list_node, core.list_namespace,
                 net.list_ingress_for_all_namespaces]
        traffic = self.counter("API requests through the tunnel (pods, nodes, namespaces,"
                               " Ingresses)")
        turn = 0

        def call(fn: Callable[..., Any]) -> None:
            # the JSON as kubectl reads it, not the client's typed models (which refuse
            # kubesim's nodes: their nodeInfo has no bootID, machineID, ...)
            reply = fn(_request_timeout=30, _preload_content=False)
            try:
                body = json.loads(reply.data)
            finally:
                reply.release_conn()
            if "items" not in body:
                raise RuntimeError(f"not a list: {str(body)[:80]}")
            traffic.add("items", len(body["items"]))

        async def step() -> None:
            nonlocal turn
            turn += 1
            await self.thread(call, calls[turn % len(calls)])

        await self.forever(traffic, step, 0.25)

    async def watch(self, what: str) -> None:
        from kubernetes import client, watch

        if what.startswith("Ingresses"):
            list_fn: Any = client.NetworkingV1Api(self.tunneled).list_ingress_for_all_namespaces
            kwargs: dict[str, Any] = {}
        else:
            list_fn = client.AppsV1Api(self.tunneled).list_namespaced_deployment
            kwargs = {"namespace": "pipeops-sessions"}
        traffic = self.counter(f"watch of {what} through the tunnel (reopened every 15 s)")

        def once() -> None:
            w = watch.Watch()
            for _ in w.stream(list_fn, timeout_seconds=15, _request_timeout=60, **kwargs):
                traffic.add("events")
                if self.halt.is_set():
                    w.stop()

        await self.forever(traffic, lambda: self.thread(once), 0.1)

    async def downloads(self) -> None:
        traffic = self.counter("downloads from the demo app through the public listener"
                               " (1 MiB each, 16 chunks)")
        async with httpx.AsyncClient(base_url=self.public, headers={"Host": DEMO_HOST},
                                     timeout=60) as http:
            async def step() -> None:
                got = 0
                async with http.stream("GET", "/stream?chunks=16&size=65536&delay=0") as r:
                    r.raise_for_status()
                    async for chunk in r.aiter_bytes():
                        got += len(chunk)
                if got != 16 * 65536:
                    raise RuntimeError(f"got {got} bytes of {16 * 65536}")
                traffic.add("bytes", got)

            await self.forever(traffic, step, 1.0)

    async def uploads(self) -> None:
        traffic = self.counter("uploads to the demo app through the public listener"
                               " (1 MiB each, SHA-256 checked)")
        body = os.urandom(1 << 20)
        digest = hashlib.sha256(body).hexdigest()
        async with httpx.AsyncClient(base_url=self.public, headers={"Host": DEMO_HOST},
                                     timeout=60) as http:
            async def step() -> None:
                r = await http.post("/upload", content=body)
                r.raise_for_status()
                if r.json()["sha256"] != digest:
                    raise RuntimeError("the upload arrived changed")
                traffic.add("bytes", len(body))

            await self.forever(traffic, step, 1.0)

    async def port_forward(self) -> None:
        """A raw TCP connection through the tunnel's agent-http forward (the control
        plane's loopback port, as ``kubectl port-forward`` gives one): 20 requests on it."""
        traffic = self.counter("port-forward-like TCP connections through the agent-http"
                               " forward (20 requests each)")

        async def step() -> None:
            port = await self.forward_port("agent-http")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for _ in range(20):
                    writer.write(b"GET /health HTTP/1.1\r\nHost: soak\r\n\r\n")
                    await writer.drain()
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                                  if h.lower().startswith(b"content-length:"))
                    await reader.readexactly(length)
                    traffic.add("bytes", len(head) + length)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        await self.forever(traffic, step, 0.5)

    async def forward_port(self, name: str) -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            view = (await http.get(f"{self.cp}/debug/tunnels")).json()
        for cluster in view["clusters"]:
            for forward in cluster["forwards"]:
                if forward["name"] == name:
                    return int(forward["remote_port"])
        raise RuntimeError(f"no {name} forward")

    async def sse(self, stream: str, reconnect: float = 0) -> None:
        what = f"SSE client on /api/realtime/{stream}" + (
            f" reconnecting every {reconnect:g} s" if reconnect else "")
        traffic = self.counter(what)
        url = f"{self.http_api['url']}/api/realtime/{stream}?history=20"
        auth = {"Authorization": f"Bearer {self.http_api['token']}"}
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
            async def step() -> None:
                opened = time.monotonic()
                async with http.stream("GET", url, headers=auth) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            traffic.add("events")
                            with contextlib.suppress(ValueError, TypeError):
                                self.saw(json.loads(line[5:]))
                        if self.halt.is_set() or (
                                reconnect and time.monotonic() - opened > reconnect):
                            return

            await self.forever(traffic, step, 0.1)

    async def ingress_churn(self) -> None:
        from kubernetes import client

        net = client.NetworkingV1Api(self.direct)
        traffic = self.counter("Ingress churn: created, published, answering through the"
                               " tunnel, deleted, unpublished")
        turn = 0

        async def step() -> None:
            nonlocal turn
            turn += 1
            name = f"soak-{turn % 4}"
            host = f"{name}.example.test"
            body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": name, "namespace": "demo"},
                    "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {
                        "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                            "service": {"name": "demo-web", "port": {"name": "http"}}}}]}}]}}
            started = time.monotonic()
            await self.thread(lambda: net.create_namespaced_ingress("demo", body))
            try:
                await self.until(lambda: self.routed(host, True), f"{host} published")
                traffic.add("publish seconds", time.monotonic() - started)
                async with httpx.AsyncClient(timeout=30) as http:
                    answer = await http.get(f"{self.public}/", headers={"Host": host})
                if answer.status_code != 200 or answer.json().get("host") != host:
                    raise RuntimeError(f"{host}: {answer.status_code} {answer.text[:80]}")
            finally:
                await self.thread(lambda: net.delete_namespaced_ingress(name, "demo"))
            await self.until(lambda: self.routed(host, False), f"{host} unpublished")

        await self.forever(traffic, step, 1.0)
        if "publish seconds" in traffic.totals and traffic.ok:
            traffic.totals["publish seconds"] /= traffic.ok  # the mean, for the report
            traffic.totals["mean publish seconds"] = traffic.totals.pop("publish seconds")

    async def routed(self, host: str, present: bool) -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            routes = (await http.get(f"{self.cp}/debug/routes")).json()["routes"]
        return any(r["hostname"] == host for r in routes) == present

    async def until(self, check: Callable[[], Awaitable[bool]], what: str,
                    timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {what} after {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def commands(self) -> None:
        traffic = self.counter("session commands through the control plane (start_session,"
                               " then stop_session)")
        async with httpx.AsyncClient(base_url=self.cp, timeout=90) as http:
            agent = (await http.get("/debug/clusters")).json()[0]["agent_id"]
            turn = 0

            async def command(action: str, payload: dict[str, Any]) -> None:
                r = await http.post(f"/api/v1/agents/{agent}/command", json={
                    "action": action, "payload": payload, "wait": 60})
                record = r.json()
                if r.status_code != 200 or record.get("state") != "complete":
                    raise RuntimeError(f"{action}: {r.status_code} {json.dumps(record)[:120]}")
                traffic.add(action)

            async def step() -> None:
                nonlocal turn
                turn += 1
                session = f"soak-{turn % 3}"
                await command("start_session", {"sessionId": session, "template": "nginx"})
                await command("stop_session", {"sessionId": session})

            await self.forever(traffic, step, 2.0)

    def close(self) -> None:
        self.tunneled.close()
        self.direct.close()
