"""The secret scan can fail: a token planted in a log, in captured output or in the wrong
place of a file meant to hold tokens is found and reported by kind and place, never by
value; the files meant to hold tokens are excused only where the token belongs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.secretscan import ROOT, Scanner, holder, scan_everything

TOKEN = "pit_planted_0123456789abcdef"
CLUSTER = "cluster-token-planted-0123456789"


def kubeconfig(token: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "users": [
        {"name": "u", "user": {"token": token}}], "clusters": [], "contexts": []})


@pytest.fixture
def planted() -> Iterator[Path]:
    """A folder outside pytest's basetemp: the session's own scan must not learn these
    tokens from it (it would then find them in this test's captured output)."""
    with tempfile.TemporaryDirectory(prefix="secretscan-") as folder:
        yield Path(folder)


def test_a_planted_token_is_found_by_place_and_kind_never_by_value(planted: Path) -> None:
    tmp_path = planted
    scanner = Scanner()
    scanner.remember(TOKEN, "install token")
    scanner.remember("short", "ignored: too short to be a secret")
    (tmp_path / "registrar.log").write_text(f'{{"msg": "registering", "t": "{TOKEN}"}}\n')
    (tmp_path / "kubeconfig").write_text(kubeconfig(TOKEN))  # its place: excused
    (tmp_path / "tunnel.kubeconfig").write_text(kubeconfig(TOKEN) + f"# {TOKEN}\n")
    (tmp_path / "dashboard-token").write_text(TOKEN + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"pipeops": {"token": TOKEN}}))
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump({"agent": {"cluster_name": TOKEN}}))
    state = tmp_path / "state"
    state.mkdir()
    (state / "identity.json").write_text(json.dumps({"cluster_token": CLUSTER}))
    (state / "identity.json.corrupt-1").write_text('{"cluster_token": "' + CLUSTER)
    (state / "pod.log").write_bytes(b"\x00binary\xff " + CLUSTER.encode() + b" short")
    scanner.keep("x.py::test [Captured stdout call]", f"printed {TOKEN}")

    scan_everything(scanner, [tmp_path])

    found = {(f.where.rsplit("/", 1)[-1], f.kind, f.count) for f in scanner.findings}
    assert found == {
        ("registrar.log", "install token", 1),
        ("tunnel.kubeconfig", "install token", 1),  # the comment, not the user's token
        ("wrong.yaml", "install token", 1),
        ("pod.log", "cluster token", 1),  # known only from identity.json
        ("x.py::test [Captured stdout call]", "install token", 1),
    }
    assert all(TOKEN not in str(f) and CLUSTER not in str(f) for f in scanner.findings)


def test_the_rules_for_token_holders_are_narrow(tmp_path: Path) -> None:
    assert holder(tmp_path / "registrar.log", TOKEN.encode()) is None
    assert holder(tmp_path / "tokens.log", TOKEN.encode()) is None
    assert holder(tmp_path / "notes.txt", TOKEN.encode()) is None
    rule = holder(tmp_path / "endpoints.json", json.dumps(
        {"dashboard_token": TOKEN, "url": "http://x"}).encode())
    assert rule is not None and not rule.everything and rule.allowed() == {TOKEN: 1}
    rule = holder(tmp_path / "sa-token", b"tok\n")
    assert rule is not None and rule.everything


def test_a_run_that_prints_a_token_fails(pytester: pytest.Pytester, planted: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    head, tail = TOKEN[:8], TOKEN[8:]  # the file under basetemp never holds it whole
    pytester.makepyfile(test_inner=f"""
        from tests import secretscan

        TOKEN = "{head}" + "{tail}"

        def test_clean():
            secretscan.remember(TOKEN, "install token")
            print("nothing to see")

        def test_leaks(tmp_path):
            (tmp_path / "service.log").write_text("token=" + TOKEN)
            print("the token is", TOKEN)
        """)
    result = pytester.runpytest_subprocess("-p", "tests.secretscan", "-p", "no:cacheprovider",
                                           f"--basetemp={planted / 'inner'}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*tokens in logs or captured output*",
                                 "*service.log: install token (1 occurrence)*",
                                 "*test_leaks [[]Captured stdout call[]]: install token*"])
    result.assert_outcomes(passed=2)
    assert TOKEN not in result.stdout.str()  # pytest -rA would show it; the report does not
