"""The wrapper modules are what scripts/realkube_gomod.py makes of the go.mod files the Go
module proxy serves: one `replace` for every staging module k8s.io/kubernetes points at
./staging, at the matching v0.X.Y, and the pinned versions the README states."""

from __future__ import annotations

import re
import subprocess

from scripts import realkube_gomod
from tests.helpers import ROOT

GO = ROOT / "dev" / "realkube" / "go"


def _replaces(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(k8s\.io/[\w.-]+) => k8s\.io/[\w.-]+ (v[\w.-]+)\s*$", text,
                           re.M))


def test_every_staging_module_is_replaced_at_the_matching_version() -> None:
    upstream = realkube_gomod._proxy_gomod("k8s.io/kubernetes", realkube_gomod.KUBE)
    staging = dict(realkube_gomod.staging_replaces(upstream, realkube_gomod.KUBE))
    assert len(staging) >= 30 and staging["k8s.io/api"] == "v0.34.4"
    kube = (GO / "kube" / "go.mod").read_text()
    assert _replaces(kube) == staging
    assert f"k8s.io/kubernetes {realkube_gomod.KUBE}" in kube
    # the generated text is the committed text, up to what `go mod tidy` adds
    generated = realkube_gomod.kube_gomod(realkube_gomod.KUBE)
    assert _replaces(generated) == staging
    for line in generated.splitlines():
        if line.startswith(("module ", "go ", "godebug ", "\tk8s.io/kubernetes/cmd/")):
            assert line in kube.splitlines(), line


def test_etcd_and_kwok_are_pinned_as_the_script_says() -> None:
    for name, module, version in (("etcd", "go.etcd.io/etcd/server/v3", realkube_gomod.ETCD),
                                  ("kwok", "sigs.k8s.io/kwok", realkube_gomod.KWOK)):
        found = subprocess.run(["go", "list", "-m", "-f", "{{.Version}}", module],
                               cwd=GO / name, capture_output=True, text=True, timeout=60,
                               check=True, env=realkube_gomod._go_env()).stdout.strip()
        assert found == version, name
    assert realkube_gomod.ETCD.startswith("v3.6.")
