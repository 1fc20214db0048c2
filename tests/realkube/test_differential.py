"""kubesim follows the real API server: the same requests to both, the answers' shapes
compared.

Each case sends one request (or a short sequence) to kubesim and to the real
kube-apiserver and reduces each answer to its shape: the status code, and for a JSON body
its kind, the keys of its top level and metadata, and for a `Status` its status, reason,
code, message and details keys. Discovery compares the verbs, kind and scope of the
resources the agent, kubectl and helm use. Watches compare the sequence of event types.
Where kubesim differs on purpose, the difference is listed in KNOWN (and in
dev/kubesim/README.md, "Differences from the real API server"); any other difference
fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubesim.testing import Kubesim
from realkube.testing import RealKube

Server = Kubesim | RealKube
Shape = Any

# case -> why the difference stays (dev/kubesim/README.md says the same).
KNOWN: dict[str, str] = {
    "no token: 401": "kubesim has no anonymous user: a request without a token is 401. The "
    "real server (anonymous auth on, its default) makes it system:anonymous, which RBAC "
    "refuses with 403; clusters that turn anonymous auth off answer 401 like kubesim.",
    "watch from a resourceVersion gone from the history: 410": "kubesim refuses such a "
    "watch with an HTTP 410 when it starts; the real server answers 200 and a single ERROR "
    "event with the 410 Status. Clients must handle both (the agent does); kubesim sends "
    "the ERROR-event form when a watch is cut (drop_watches(expired=True)).",
}

DISCOVERED = ("pods", "pods/log", "pods/status", "nodes", "namespaces", "services",
              "configmaps", "secrets", "serviceaccounts", "events", "endpoints",
              "persistentvolumeclaims")
APPS = ("deployments", "deployments/scale", "replicasets", "statefulsets", "daemonsets")


def status_shape(body: Any, cut: str | None = None) -> Shape:
    """The shape of an answer. `cut`: compare a Status message only up to that text (where
    the rest is a JSON or selector parser's own words); "" leaves the message out."""
    if not isinstance(body, dict):
        return type(body).__name__
    if body.get("kind") == "Status":
        message = body.get("message")
        if cut is not None and message:
            message = message.split(cut)[0] if cut else None
        return {"kind": "Status", "status": body.get("status"), "reason": body.get("reason"),
                "code": body.get("code"), "message": message,
                "details": sorted(body.get("details") or {})}
    shape: dict[str, Any] = {"kind": body.get("kind"), "keys": sorted(body)}
    if isinstance(body.get("metadata"), dict):
        shape["metadata"] = sorted(k for k in body["metadata"] if k != "managedFields")
    return shape


class Pair:
    """The same namespace-scoped requests to both servers."""

    def __init__(self, kubesim: Kubesim, real: RealKube) -> None:
        self.servers: dict[str, Server] = {"kubesim": kubesim, "real": real}
        self.namespace = f"diff-{secrets.token_hex(3)}"
        for server in self.servers.values():
            status, body = server.request("POST", "/api/v1/namespaces",
                                          {"metadata": {"name": self.namespace}})
            assert status == 201, body
        self.differences: dict[str, tuple[Shape, Shape]] = {}

    def both(self, method: str, path: str, body: Any = None, **kwargs: Any
             ) -> dict[str, tuple[int, Any]]:
        path = path.replace("NS", self.namespace)
        return {name: server.request(method, path, body, **kwargs)
                for name, server in self.servers.items()}

    def compare(self, case: str, answers: dict[str, Any],
                reduce: Callable[[Any], Shape]) -> None:
        kubesim, real = reduce(answers["kubesim"]), reduce(answers["real"])
        if kubesim != real:
            self.differences[case] = (kubesim, real)

    def same(self, case: str, method: str, path: str, body: Any = None, *,
             cut: str | None = None, **kwargs: Any) -> dict[str, tuple[int, Any]]:
        answers = self.both(method, path, body, **kwargs)
        self.compare(case, answers, lambda a: (a[0], status_shape(a[1], cut)))
        return answers


@pytest.fixture(scope="module")
def pair(demo_kubesim: Kubesim, real_kube: RealKube) -> Iterator[Pair]:
    yield Pair(demo_kubesim, real_kube)


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
            "labels": {"app": "diff", "n": name}}, "data": data}


def _resources(answer: tuple[int, Any], names: tuple[str, ...]) -> Shape:
    status, body = answer
    found = {r["name"]: r for r in body.get("resources", [])} if status == 200 else {}
    return {n: (sorted(found[n].get("verbs", [])), found[n].get("kind"),
                found[n].get("namespaced")) if n in found else None for n in names}


def test_discovery(pair: Pair) -> None:
    pair.compare("discovery /api", pair.both("GET", "/api"),
                 lambda a: (a[0], a[1]["kind"], a[1]["versions"]))
    pair.compare("discovery /api/v1", pair.both("GET", "/api/v1"),
                 lambda a: _resources(a, DISCOVERED))
    pair.compare("discovery /apis/apps/v1", pair.both("GET", "/apis/apps/v1"),
                 lambda a: _resources(a, APPS))
    groups = ("apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io",
              "coordination.k8s.io", "policy")
    pair.compare("discovery /apis", pair.both("GET", "/apis"), lambda a: (a[0], {
        g["name"]: g["preferredVersion"]["version"] for g in a[1]["groups"]
        if g["name"] in groups}))
    pair.compare("version", pair.both("GET", "/version"),
                 lambda a: (a[0], sorted(a[1])))
    assert_no_new_differences(pair, "discovery")


def test_crud_and_its_errors(pair: Pair) -> None:
    base = "/api/v1/namespaces/NS/configmaps"
    pair.same("create", "POST", base, _cm("one", k="v"))
    pair.same("create again: 409 AlreadyExists", "POST", base, _cm("one", k="v"))
    answers = pair.same("get", "GET", f"{base}/one")
    pair.same("get missing: 404", "GET", f"{base}/missing")
    pair.same("get in a missing namespace: 404", "GET",
              "/api/v1/namespaces/no-such-ns/configmaps/x")
    pair.same("unknown resource: 404", "GET", "/api/v1/namespaces/NS/widgets")
    # an update with a stale resourceVersion
    for name, (_, obj) in answers.items():
        stale = {**obj, "data": {"k": "w"}}
        stale["metadata"] = {**obj["metadata"], "resourceVersion": "1"}
        answers[name] = (0, stale)
    pair.compare("update with a stale resourceVersion: 409 Conflict", {
        name: pair.servers[name].request(
            "PUT", f"/api/v1/namespaces/{pair.namespace}/configmaps/one", stale)
        for name, (_, stale) in answers.items()}, lambda a: (a[0], status_shape(a[1])))
    pair.same("create with an invalid name: 422", "POST", base, _cm("Not_Valid"))
    pair.same("create without a name: 422", "POST", base,
              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    pair.same("malformed JSON: 400", "POST", base, raw=b"{not json", cut="json parse error")
    pair.same("wrong kind for the path: 400", "POST", base,
              {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    pair.same("delete", "DELETE", f"{base}/one")
    pair.same("delete missing: 404", "DELETE", f"{base}/one")
    pair.same("no token: 401", "GET", base, token="")
    pair.same("a bad token: 401", "GET", base, token="not-a-token")
    known = assert_no_new_differences(pair, "crud", ("no token: 401",))
    kubesim, real = known["no token: 401"]
    assert (kubesim[0], real[0]) == (401, 403)
    assert real[1]["message"].startswith('configmaps is forbidden: User "system:anonymous"')


def test_a_service_account_is_refused_with_the_real_403(pair: Pair) -> None:
    answers = {}
    for name, server in pair.servers.items():
        if isinstance(server, RealKube):
            token = server.service_account_token(pair.namespace, "nobody")
        else:
            server.request("POST", f"/api/v1/namespaces/{pair.namespace}/serviceaccounts",
                           {"metadata": {"name": "nobody"}})
            token = "nobody-" + secrets.token_hex(6)
            server.add_token(token, service_account=f"{pair.namespace}/nobody")
        answers[name] = server.request(
            "GET", f"/api/v1/namespaces/{pair.namespace}/secrets", token=token)
    pair.compare("403 Forbidden", answers, lambda a: (a[0], status_shape(a[1])))
    assert_no_new_differences(pair, "403")


def test_patch_kinds(pair: Pair) -> None:
    base = "/api/v1/namespaces/NS/configmaps"
    pair.same("create for patch", "POST", base, _cm("p", a="1"))
    for case, kind, body in (
            ("merge patch", "application/merge-patch+json", {"data": {"b": "2"}}),
            ("strategic merge patch", "application/strategic-merge-patch+json",
             {"data": {"c": "3"}}),
            ("json patch", "application/json-patch+json",
             [{"op": "add", "path": "/data/d", "value": "4"}]),
            ("json patch test fails: 422", "application/json-patch+json",
             [{"op": "test", "path": "/data/a", "value": "nope"}]),
            ("unsupported patch type: 415", "application/xml", {"data": {}})):
        answers = pair.same(case, "PATCH", f"{base}/p", body, content_type=kind)
    assert answers["real"][0] == 415
    final = pair.both("GET", f"{base}/p")
    pair.compare("data after the patches", final, lambda a: a[1]["data"])
    apply = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
             "data": {"x": "1"}}
    pair.same("server-side apply creates", "PATCH", f"{base}/applied?fieldManager=diff",
              raw=json.dumps(apply).encode(), content_type="application/apply-patch+yaml")
    pair.same("server-side apply without a field manager: 400", "PATCH", f"{base}/applied",
              raw=json.dumps(apply).encode(), content_type="application/apply-patch+yaml")
    assert_no_new_differences(pair, "patch")


def _names(answer: tuple[int, Any]) -> Shape:
    status, body = answer
    if status != 200:  # a selector parser's words are its own
        return status, status_shape(body, cut="" if "found" in body["message"]
                                    or "unable to parse" in body["message"] else None)
    return status, [i["metadata"]["name"] for i in body["items"]]


def test_selectors_and_pagination(pair: Pair) -> None:
    base = "/api/v1/namespaces/NS/configmaps"
    for name in ("s1", "s2", "s3"):
        pair.both("POST", base, _cm(name))
    for case, query in (("label =", "labelSelector=n%3Ds2"),
                        ("label in", "labelSelector=n%20in%20(s1,s3)"),
                        ("label !=", "labelSelector=app%3Ddiff,n!%3Ds1"),
                        ("label exists", "labelSelector=n"),
                        ("field metadata.name", "fieldSelector=metadata.name%3Ds3"),
                        ("field unsupported: 400", "fieldSelector=data.k%3Dv"),
                        ("label invalid: 400", "labelSelector=%3D%3D%3D")):
        pair.compare(f"selector {case}", pair.both("GET", f"{base}?{query}"), _names)

    def pages(server: Server) -> Shape:
        out, cont = [], ""
        while True:
            query = "limit=1&labelSelector=app%3Ddiff" + (
                f"&continue={urllib.parse.quote(cont)}" if cont else "")
            status, body = server.request("GET", f"/api/v1/namespaces/{pair.namespace}/"
                                                 f"configmaps?{query}")
            assert status == 200, body
            out.append(([i["metadata"]["name"] for i in body["items"]],
                        sorted(body["metadata"])))
            cont = body["metadata"].get("continue", "")
            if not cont:
                return out

    pair.compare("pagination", {n: s for n, s in pair.servers.items()}, pages)
    pair.compare("unselected page", pair.both("GET", f"{base}?limit=1"),
                 lambda a: sorted(a[1]["metadata"]))
    pair.same("a bad continue token: 400", "GET", f"{base}?limit=1&continue=garbage",
              cut="continue key is not valid")
    assert_no_new_differences(pair, "selectors")


def _watch(server: Server, path: str, max_events: int, timeout: int = 5) -> list[Any]:
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", server.port,
                                       context=server.ssl_context(), timeout=timeout + 10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {server.token}",
                                       "Accept": "application/json"})
    resp = conn.getresponse()
    events: list[Any] = []
    try:
        if resp.status != 200:
            return [(resp.status, status_shape(json.loads(resp.read())))]
        while len(events) < max_events:
            line = resp.readline()
            if not line:
                break
            event = json.loads(line)
            obj = event["object"]
            events.append((event["type"], status_shape(obj) if event["type"] == "ERROR"
                           else obj["metadata"].get("name")))
    finally:
        conn.close()
    return events


def test_watch_sequences_bookmarks_and_410(pair: Pair) -> None:
    base = "/api/v1/namespaces/NS/configmaps"
    start = pair.both("GET", f"{base}?limit=1")
    rvs = {n: a[1]["metadata"]["resourceVersion"] for n, a in start.items()}
    for server_name in pair.servers:
        server = pair.servers[server_name]
        path = f"/api/v1/namespaces/{pair.namespace}/configmaps"
        server.request("POST", path, _cm("w1"))
        server.request("PATCH", f"{path}/w1", {"data": {"z": "1"}},
                       content_type="application/merge-patch+json")
        server.request("DELETE", f"{path}/w1")
    pair.compare("watch ADDED MODIFIED DELETED from a resourceVersion", {
        n: _watch(s, f"/api/v1/namespaces/{pair.namespace}/configmaps?watch=1&"
                     f"resourceVersion={rvs[n]}&fieldSelector=metadata.name%3Dw1", 3)
        for n, s in pair.servers.items()}, lambda events: events)
    pair.compare("watch with sendInitialEvents: the initial-events-end bookmark", {
        n: _watch(s, f"/api/v1/namespaces/{pair.namespace}/configmaps?watch=1&"
                     "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&"
                     "allowWatchBookmarks=true&labelSelector=n%3Ds1", 2)
        for n, s in pair.servers.items()}, lambda events: [e[0] for e in events])
    pair.compare("watch bookmark before timeoutSeconds", {
        n: _watch(s, f"/api/v1/namespaces/{pair.namespace}/configmaps?watch=1&"
                     f"allowWatchBookmarks=true&timeoutSeconds=4&labelSelector=n%3Dnone", 1)
        for n, s in pair.servers.items()}, lambda events: [e[0] for e in events])
    # a resourceVersion older than what the server keeps: 410 Expired
    kubesim, real = pair.servers["kubesim"], pair.servers["real"]
    assert isinstance(kubesim, Kubesim) and isinstance(real, RealKube)
    kubesim.expire_history()
    # the real server serves an old revision from its watch cache (all it saw since it
    # started) or from etcd until compacted: compact, and restart it to empty the cache
    real.compact()
    real.restart_apiserver()
    pair.compare("watch from a resourceVersion gone from the history: 410", {
        n: _watch(s, f"/api/v1/namespaces/{pair.namespace}/configmaps?watch=1&"
                     "resourceVersion=2", 1)
        for n, s in pair.servers.items()}, lambda events: events)
    case = "watch from a resourceVersion gone from the history: 410"
    kubesim_events, real_events = assert_no_new_differences(pair, "watch", (case,))[case]
    assert kubesim_events[0][0] == 410 and kubesim_events[0][1]["reason"] == "Expired"
    assert real_events[0][0] == "ERROR" and real_events[0][1]["code"] == 410
    assert real_events[0][1]["reason"] == "Expired"


def assert_no_new_differences(pair: Pair, part: str, known: tuple[str, ...] = ()
                              ) -> dict[str, tuple[Shape, Shape]]:
    """No difference but the listed ones, and each listed one still there (returned)."""
    differences = dict(pair.differences)
    pair.differences.clear()
    new = {case: diff for case, diff in differences.items() if case not in KNOWN}
    gone = [case for case in known if case not in differences]
    assert gone == [], f"{part}: no longer different, drop from KNOWN and the README: {gone}"
    assert new == {}, f"{part}: kubesim differs from the real API server:\n" + "\n".join(
        f"  {case}:\n    kubesim {k!r}\n    real    {r!r}" for case, (k, r) in new.items())
    return {case: differences[case] for case in known}
