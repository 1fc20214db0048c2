"""Shared fixtures. Helpers live in tests/helpers.py."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator
from pathlib import Path

import hypothesis
import pytest

from tests.clusters import cluster, demo_kubesim, real_kube  # noqa: F401 (fixtures)
from tests.helpers import ROOT

# tests.secretscan: no token the tests use in any log or output (pytester: its own test)
pytest_plugins = ["tests.secretscan", "pytester"]

# The hypothesis suites draw the same cases on every run, so `make test` is deterministic
# (loaded before any test module builds its settings on it); PIPEOPS_FUZZ_RANDOM=1 draws
# new cases for a deliberate hunt (a failure found is then added as a named case).
hypothesis.settings.register_profile(
    "pipeops", derandomize=not os.environ.get("PIPEOPS_FUZZ_RANDOM"))
hypothesis.settings.load_profile("pipeops")


def live_tasks() -> set[asyncio.Task[object]]:
    """The event loop's unfinished tasks, except the one asking."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """No task started during the test outlives it (every task has an owner that ends it).

    Checked after the test's other fixtures are torn down; cancelled tasks get a moment
    to finish (up to 2 s: on a loaded machine grpc's own call tasks end a few loop turns
    after their channel closes)."""
    before = live_tasks()
    yield
    leaked = live_tasks() - before
    for _ in range(200):
        if not leaked:
            break
        await asyncio.sleep(0.01)
        leaked = live_tasks() - before
    assert not leaked, f"tasks outlived the test: {sorted(t.get_name() for t in leaked)}"


@pytest.fixture(autouse=True)
def _leak_check(request: pytest.FixtureRequest) -> None:
    """Every asyncio test gets ``_no_leaked_tasks``; a plain test gets no event loop."""
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        request.getfixturevalue("_no_leaked_tasks")


# Go's module and build caches stay where `make setup` filled them (under the real HOME):
# a test that runs `go` would otherwise download whole modules into its temporary HOME.
_GO_CACHES = {"GOMODCACHE": os.environ.get("GOMODCACHE") or os.path.join(
                  os.environ.get("GOPATH") or os.path.expanduser("~/go"), "pkg", "mod"),
              "GOCACHE": os.environ.get("GOCACHE") or os.path.join(
                  os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                  "go-build")}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                   ) -> None:
    """No test reads the developer's ~/.pipeops-agent.yaml."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name, path in _GO_CACHES.items():
        monkeypatch.setenv(name, path)
    monkeypatch.setenv("PATH", f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
