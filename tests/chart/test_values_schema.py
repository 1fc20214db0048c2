"""values.schema.json: a typo or a wrong type fails lint, template and install, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chart.chart import CHART_DIR, NAMESPACE, Chart

# values file -> the schema's message, as helm prints it.
BAD_VALUES = {
    "top-level typo": ("replicaCount: 2\n",
                       "at '': additional properties 'replicaCount' not allowed"),
    "nested typo": ("registrar:\n  imagee: {repository: x}\n",
                    "at '/registrar': additional properties 'imagee' not allowed"),
    "typo in a feature": ("features:\n  nativeSidecars: false\n",
                          "at '/features': additional properties 'nativeSidecars' not allowed"),
    "port as a string": ("tunnel:\n  grpcPort: \"fifty\"\n",
                         "at '/tunnel/grpcPort': got string, want integer"),
    "port out of range": ("httpApi:\n  port: 70000\n",
                          "at '/httpApi/port': maximum: got 70,000, want 65,535"),
    "boolean as a string": ("features:\n  nativeSidecar: \"yes\"\n",
                            "at '/features/nativeSidecar': got string, want boolean"),
    "unknown access level": ("features:\n  controlPlaneAccess: cluster-admin\n",
                             "at '/features/controlPlaneAccess': value must be one of "
                             "'admin', 'edit', 'view', 'none'"),
    "bad duration": ("pipeops:\n  heartbeatInterval: soon\n",
                     "at '/pipeops/heartbeatInterval'"),
    "zero duration": ("pipeops:\n  heartbeatInterval: 0s\n",
                      "at '/pipeops/heartbeatInterval': '0s' does not match pattern"),
    "list instead of map": ("agent:\n  labels: [a, b]\n",
                            "at '/agent/labels': got array, want object"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-values")
    files = {}
    for i, (name, (text, _)) in enumerate(BAD_VALUES.items()):
        files[name] = folder / f"bad-{i}.yaml"
        files[name].write_text(text)
    return files


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_template_fails_with_the_schema_message(chart: Chart, bad_files: dict[str, Path],
                                                case: str) -> None:
    proc = chart.run("template", "pa", str(CHART_DIR), "-f", str(bad_files[case]), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert BAD_VALUES[case][1] in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("case", ["nested typo", "port as a string"])
def test_lint_fails_with_the_schema_message(chart: Chart, bad_files: dict[str, Path],
                                            case: str) -> None:
    proc = chart.run("lint", "--strict", str(CHART_DIR), "-f", str(bad_files[case]),
                     check=False)
    assert proc.returncode != 0
    assert f"[ERROR] values.yaml: - {BAD_VALUES[case][1]}" in proc.stdout


def test_install_fails_with_the_schema_message(chart: Chart, bad_files: dict[str, Path]
                                               ) -> None:
    """Before any cluster is contacted: the client-side dry run checks the schema too."""
    proc = chart.run("install", "pa", str(CHART_DIR), "--dry-run=client", "-n", NAMESPACE,
                     "-f", str(bad_files["nested typo"]), check=False)
    assert proc.returncode != 0
    assert BAD_VALUES["nested typo"][1] in proc.stderr


def test_set_flags_are_checked_too(chart: Chart) -> None:
    proc = chart.run("template", "pa", str(CHART_DIR), "--set", "service.typo=1", check=False)
    assert proc.returncode != 0
    assert "at '/service': additional properties 'typo' not allowed" in proc.stderr


def test_every_default_value_is_described_by_the_schema() -> None:
    """values.yaml and the schema list the same keys (additionalProperties: false)."""
    import yaml

    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def walk(value: object, node: dict[str, object], path: str) -> None:
        if "$ref" in node:
            ref = str(node["$ref"]).rsplit("/", 1)[-1]
            node = schema["definitions"][ref]
        if isinstance(value, dict) and "properties" in node:
            props = node["properties"]
            assert isinstance(props, dict)
            assert node.get("additionalProperties") is False, f"{path or '/'} allows any key"
            for key, child in value.items():
                assert key in props, f"{path}/{key} is not in the schema"
                walk(child, props[key], f"{path}/{key}")

    walk(values, schema, "")


def test_cross_field_rules_fail_with_their_message(chart: Chart, tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("features:\n  gateway:\n    enabled: true\n    istio: {enabled: true}\n"
                    "    environment: {mode: single-vm}\n")
    proc = chart.run("template", "pa", str(CHART_DIR), "-f", str(path), check=False)
    assert proc.returncode != 0
    assert ("features.gateway.environment.vmIp is required when "
            "features.gateway.environment.mode is single-vm") in proc.stderr

    # The same clash from --set (an int) and from a values file (a float to helm).
    path.write_text("tunnel:\n  metricsPort: 9101\n")
    for args in (["--set", "tunnel.grpcPort=50051"], ["-f", str(path)]):
        proc = chart.run("template", "pa", str(CHART_DIR), *args, check=False)
        assert proc.returncode != 0
        assert "every container port must differ" in proc.stderr


def test_native_sidecar_needs_kubernetes_1_29(chart: Chart) -> None:
    proc = chart.run("template", "pa", str(CHART_DIR), "--kube-version", "1.28.5", check=False)
    assert proc.returncode != 0
    assert ("features.nativeSidecar needs Kubernetes 1.29 or later (this cluster is v1.28.5): "
            "set features.nativeSidecar=false") in proc.stderr
    chart.run("template", "pa", str(CHART_DIR), "--kube-version", "1.28.5",
              "--set", "features.nativeSidecar=false")
    chart.run("template", "pa", str(CHART_DIR), "--kube-version", "1.29.0")
