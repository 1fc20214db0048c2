"""Policy checks on the rendered chart, as tests.

Security context of every container, the two identities and what each may do, where the
install token may and may not appear, the Deployment's shape, start order and probes.
Each check runs against every values set (defaults, every feature on in both gateway
modes) unless it is about one switch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.chart.chart import (
    AGENT_CONTAINERS,
    CHART_DIR,
    NAMESPACE,
    TOKEN,
    VALUE_SETS,
    Chart,
    Rendered,
    agent_rules,
    subjects_match,
)

# ---- security context ----------------------------------------------------------------


def test_every_container_is_locked_down(rendered: Rendered) -> None:
    containers = list(rendered.all_containers())
    assert sorted(c["name"] for c in containers) == sorted(AGENT_CONTAINERS)
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("runAsUser", 1) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged", False) is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where


def test_pod_security_context(rendered: Rendered) -> None:
    sc = rendered.pod_spec["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0 and sc["runAsGroup"] != 0
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    spec = rendered.pod_spec
    for risky in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(risky), risky
    for volume in spec["volumes"]:
        assert "hostPath" not in volume, volume["name"]


def test_writable_paths_are_volumes_only(rendered: Rendered) -> None:
    """A read-only root needs every writable path (state, /tmp) to be a volume."""
    for c in rendered.all_containers():
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/tmp"]["name"] == "scratch"
        assert mounts["/tmp"]["subPath"] == c["name"], "each container gets its own /tmp"
        assert mounts["/etc/pipeops"]["readOnly"] is True


# ---- service account tokens -------------------------------------------------------------

# The containers that call the Kubernetes API; the http-api talks only to its siblings.
NEEDS_KUBE_API = {"registrar", "tunnel", "gateway"}


def _mounted(c: dict[str, Any], volume: str) -> bool:
    return any(m["name"] == volume for m in c.get("volumeMounts", []))


def test_service_account_token_only_where_needed(rendered: Rendered) -> None:
    spec = rendered.pod_spec
    assert spec["automountServiceAccountToken"] is False
    for sa in rendered.of_kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]

    volumes = {v["name"]: v for v in spec["volumes"]}
    projected = volumes["kube-api-access"]["projected"]["sources"]
    assert any("serviceAccountToken" in s for s in projected)
    with_token = {c["name"] for c in rendered.all_containers() if _mounted(c, "kube-api-access")}
    assert with_token == NEEDS_KUBE_API
    for c in rendered.all_containers():
        if c["name"] in with_token:
            (mount,) = [m for m in c["volumeMounts"] if m["name"] == "kube-api-access"]
            assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
            assert mount["readOnly"] is True

    # The control plane's token reaches the registrar alone (it sends it at registration).
    with_cp_token = {c["name"] for c in rendered.all_containers()
                     if _mounted(c, "control-plane-token")}
    assert with_cp_token == {"registrar"}


# ---- RBAC: the agent's own identity -----------------------------------------------------


def test_agent_cluster_role_has_no_wildcard_and_no_secrets(rendered: Rendered) -> None:
    pairs = agent_rules(rendered, "ClusterRole")
    assert pairs, "the agent needs its cluster-wide read access"
    for role, _ in pairs:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
            assert not rule.get("nonResourceURLs"), rule
            assert "secrets" not in rule["resources"], rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_agent_cluster_role_reads_what_the_containers_use(render: Callable[[str], Rendered]
                                                         ) -> None:
    def grants(rendered: Rendered) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for role, _ in agent_rules(rendered, "ClusterRole"):
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        out.setdefault((group, res), set()).update(rule["verbs"])
        return out

    read = {"get", "list", "watch"}
    write = read | {"create", "update", "patch", "delete"}
    core = {("", "services"): read, ("", "nodes"): read, ("", "pods"): read,
            ("networking.k8s.io", "ingresses"): read,
            ("networking.k8s.io", "ingressclasses"): read}
    assert grants(render("defaults")) == core
    gateway_kinds = [("gateway.networking.k8s.io", r) for r in ("gateways", "tcproutes",
                                                                 "udproutes")]
    gateway_kinds += [("networking.istio.io", r) for r in ("gateways", "virtualservices")]
    # Route sync (features.ingressSync) reads HTTPRoutes and their Gateways and makes
    # Events on the objects it skips.
    route_sync = {("", "events"): {"create"},
                  ("gateway.networking.k8s.io", "httproutes"): read,
                  ("gateway.networking.k8s.io", "gateways"): read}
    # The gateway container creates the objects itself: it may write them.
    assert grants(render("all-features")) == core | route_sync | {k: write
                                                                  for k in gateway_kinds}
    # Helm owns them: the agent only reads.
    assert grants(render("all-features-chart-gateway")) == core | route_sync | {
        k: read for k in gateway_kinds}


def test_agent_writes_secrets_only_in_its_own_namespace(rendered: Rendered) -> None:
    pairs = agent_rules(rendered, "Role")
    namespaces_with_secrets = set()
    for role, binding in pairs:
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            if "secrets" in rule["resources"]:
                namespaces_with_secrets.add(role["metadata"]["namespace"])
    assert namespaces_with_secrets == {NAMESPACE}
    # Session commands act in the session namespace.
    session_ns = {r["metadata"]["namespace"] for r, _ in pairs} - {NAMESPACE}
    assert "pipeops-sessions" in session_ns


def _grants_in(rendered: Rendered, namespace: str) -> list[tuple[str, str, str]]:
    """(resource, resourceName or "*", verb) that Roles bound to the agent grant there."""
    out = []
    for role, _ in agent_rules(rendered, "Role"):
        if role["metadata"]["namespace"] != namespace:
            continue
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""], rule
            for res in rule["resources"]:
                for name in rule.get("resourceNames") or ["*"]:
                    out.extend((res, name, verb) for verb in rule["verbs"])
    return sorted(out)


def test_agent_touches_only_its_two_state_objects_in_its_namespace(
        rendered: Rendered) -> None:
    """The namespace also holds the install-token and control-plane token Secrets: the
    agent's token may get and update its own two objects by name, and create (which
    resourceNames cannot restrict) for their first write. Nothing else: no list, watch,
    patch or delete, no other Secret."""
    name = yaml.safe_load(rendered.config_text)["agent"]["name"]
    assert _grants_in(rendered, NAMESPACE) == sorted([
        ("secrets", f"{name}-state", "get"), ("secrets", f"{name}-state", "update"),
        ("configmaps", f"{name}-identity", "get"), ("configmaps", f"{name}-identity", "update"),
        ("secrets", "*", "create"), ("configmaps", "*", "create"),
    ])


def test_state_object_names_follow_agent_name(chart: Chart) -> None:
    rendered = chart.template("--set", f"pipeops.token={TOKEN}", "--set", "agent.name=edge-7")
    assert yaml.safe_load(rendered.config_text)["agent"]["name"] == "edge-7"
    grants = _grants_in(rendered, NAMESPACE)
    assert ("secrets", "edge-7-state", "get") in grants
    assert ("configmaps", "edge-7-identity", "update") in grants
    assert not [g for g in grants if g[1].startswith("pipeops-agent")]
    # A name that cannot name a Kubernetes object is refused at render time.
    proc = chart.run("template", "pa", str(CHART_DIR), "--set", "agent.name=Edge_7",
                     check=False)
    assert proc.returncode != 0 and "/agent/name" in proc.stderr


def test_agent_is_never_bound_to_a_builtin_role(rendered: Rendered) -> None:
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        if subjects_match(binding, rendered.service_account, NAMESPACE):
            assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit", "view"}


# ---- RBAC: the control plane's identity --------------------------------------------------


@pytest.mark.parametrize("access", ["admin", "edit", "view", "none"])
def test_control_plane_access_selects_the_cluster_role(chart: Chart, access: str) -> None:
    rendered = chart.template("--set", f"features.controlPlaneAccess={access}")
    cp_sa = "pa-pipeops-agent-control-plane"
    assert rendered.one("ServiceAccount", cp_sa)
    assert rendered.service_account != cp_sa, "the pod never runs as the control plane"
    bindings = [b for b in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind(
        "RoleBinding") if subjects_match(b, cp_sa, NAMESPACE)]
    if access == "none":
        assert bindings == []
        return
    (binding,) = bindings
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": access}
    assert [s["name"] for s in binding["subjects"]] == [cp_sa]
    # Its token comes from a service-account-token Secret, mounted into the registrar.
    token_secret = rendered.one("Secret", f"{cp_sa}-token")
    assert token_secret["type"] == "kubernetes.io/service-account-token"
    assert token_secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == cp_sa


# ---- the install token -------------------------------------------------------------------


def _token_env(rendered: Rendered) -> dict[str, Any]:
    envs = [(c["name"], e) for c in rendered.all_containers() for e in c.get("env", [])
            if e["name"] == "PIPEOPS_TOKEN"]
    assert [name for name, _ in envs] == ["registrar"], "only the registrar gets the token"
    env: dict[str, Any] = envs[0][1]
    return env


def test_install_token_lives_in_a_secret_only(render: Callable[[str], Rendered]) -> None:
    rendered = render("defaults")
    secret = rendered.one("Secret", "pa-pipeops-agent-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    assert _token_env(rendered) == {"name": "PIPEOPS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "pa-pipeops-agent-token", "key": "token"}}}
    # Nowhere else, in clear or encoded: not the ConfigMap, not an annotation, not an env.
    encoded = base64.b64encode(TOKEN.encode()).decode()
    for obj in rendered.objects:
        if obj is secret:
            continue
        text = json.dumps(obj)
        assert TOKEN not in text and encoded not in text, f"{obj['kind']} leaks the token"


def test_existing_secret_is_referenced_not_created(render: Callable[[str], Rendered]) -> None:
    rendered = render("all-features-chart-gateway")
    assert _token_env(rendered)["valueFrom"] == {"secretKeyRef": {
        "name": "my-agent-token", "key": "install-token"}}
    opaque = [s["metadata"]["name"] for s in rendered.of_kind("Secret")
              if s.get("type") == "Opaque"]
    # only the dashboard token's Secret (tests/chart/test_dashboard_token.py)
    assert opaque == ["pa-pipeops-agent-dashboard"], \
        "with existingSecret the chart creates no install-token Secret"


def test_config_map_holds_no_secret(rendered: Rendered) -> None:
    for cm in rendered.of_kind("ConfigMap"):
        text = json.dumps(cm).lower()
        assert TOKEN.lower() not in text
        assert "token:" not in cm["data"]["config.yaml"].replace("_token_path:", "")


def test_token_and_existing_secret_together_is_an_error(chart: Chart) -> None:
    proc = chart.run("template", "pa", "charts/pipeops-agent", "--set", "pipeops.token=t",
                     "--set", "pipeops.existingSecret=s", check=False)
    assert proc.returncode != 0
    assert "set pipeops.token or pipeops.existingSecret, not both" in proc.stderr


# ---- the Deployment -----------------------------------------------------------------------


def test_one_replica_recreated_never_rolled(rendered: Rendered) -> None:
    (deployment,) = [o for o in rendered.objects if o["kind"] in (
        "Deployment", "StatefulSet", "DaemonSet", "Pod", "Job")]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    selector = spec["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "pipeops-agent",
                        "app.kubernetes.io/instance": "pa"}
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in selector.items())


def test_shared_state_is_an_in_memory_empty_dir_mounted_everywhere(rendered: Rendered) -> None:
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    state = volumes["state"]
    assert state["emptyDir"]["medium"] == "Memory"
    assert state["emptyDir"]["sizeLimit"]
    for c in rendered.all_containers():
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "state"]
        assert mount["mountPath"] == "/var/run/pipeops"
        assert not mount.get("readOnly")


def test_native_sidecar_registrar_by_default(render: Callable[[str], Rendered]) -> None:
    rendered = render("defaults")
    spec = rendered.pod_spec
    (registrar,) = spec["initContainers"]
    assert registrar["name"] == "registrar"
    assert registrar["restartPolicy"] == "Always"
    # The kubelet holds the others back until the registrar's health-only listener says
    # SERVING.
    probe_port = rendered.port("registrar", "probe-registrar")
    assert registrar["startupProbe"]["grpc"] == {"port": probe_port}
    assert [c["name"] for c in spec["containers"]] == ["tunnel", "gateway", "http-api"]
    assert all("restartPolicy" not in c for c in spec["containers"])


def test_plain_containers_when_native_sidecars_are_off(render: Callable[[str], Rendered]
                                                      ) -> None:
    rendered = render("all-features-chart-gateway")
    spec = rendered.pod_spec
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == list(AGENT_CONTAINERS)
    assert all("restartPolicy" not in c for c in spec["containers"])
    # Nothing blocks their start: they wait for the identity on the shared volume, which
    # the config points them at.
    for c in spec["containers"]:
        assert _mounted(c, "state")
    assert "state_dir: /var/run/pipeops" in rendered.config_text


def test_kubelet_grpc_probes_hit_the_health_only_ports(rendered: Rendered) -> None:
    """The gRPC servers stay on localhost; the kubelet dials a health-only listener."""
    config = yaml.safe_load(rendered.config_text)
    assert config["grpc"]["host"] == "127.0.0.1"
    assert config["grpc"]["probe_host"] == "0.0.0.0"
    for name in ("registrar", "tunnel", "gateway"):
        c = rendered.container(name)
        port = rendered.port(name, f"probe-{name}")
        assert port == config["grpc"][f"{name}_probe"]
        assert port != rendered.port(name, f"grpc-{name}")
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": port}, (name, probe)
        assert "httpGet" not in json.dumps(c)
    # The http-api is probed over HTTP: no probe listener, no probe port.
    assert "http_api_probe" not in config["grpc"]
    assert not [p for p in rendered.container("http-api")["ports"]
                if p["name"].startswith("probe")]


def test_http_probes_for_the_http_api(rendered: Rendered) -> None:
    c = rendered.container("http-api")
    port = rendered.port("http-api", "http")
    assert port == 8080
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"


def test_grpc_ports_are_never_published(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        for port in service["spec"]["ports"]:
            assert not str(port.get("targetPort", "")).startswith(("grpc", "probe")), port
            assert port["port"] not in (50051, 50052, 50053, 50054, 50061, 50062, 50063), port


def test_network_policy_egress_is_dns_api_server_and_control_plane(
        render: Callable[[str], Rendered], chart: Chart) -> None:
    policy = render("all-features").one("NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"])
                    for rule in spec["egress"]]
    # DNS, the API server, the control plane, the node's kubelet (the kubelet forward),
    # then networkPolicy.extraEgress (the tunnel's extra forward to grafana:3000).
    assert egress_ports == [[(53, "TCP"), (53, "UDP")], [(443, "TCP"), (6443, "TCP")],
                            [(443, "TCP")], [(10250, "TCP")], [(3000, "TCP")]]
    cidrs = [[t["ipBlock"]["cidr"] for t in rule.get("to", []) if "ipBlock" in t]
             for rule in spec["egress"]]
    assert cidrs[1:3] == [["10.96.0.1/32", "172.18.0.2/32"], ["203.0.113.0/24"]]
    assert spec["egress"][4]["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert spec["egress"][0]["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}}}]  # networkPolicy.dnsTo
    # Without extraEgress: exactly the four rules; without the kubelet forward, three.
    default_dns = render("all-features-chart-gateway").one("NetworkPolicy")["spec"]["egress"]
    assert len(default_dns) == 4
    assert "to" not in default_dns[0]  # DNS anywhere: node-local caches, openshift-dns
    no_kubelet = chart.template(*VALUE_SETS["all-features-chart-gateway"],
                                "--set", "tunnel.forwardKubelet=false")
    assert len(no_kubelet.one("NetworkPolicy")["spec"]["egress"]) == 3
    (ingress,) = spec["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {"http", "metrics-reg", "metrics-tun",
                                                      "metrics-gw"}
