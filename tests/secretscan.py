"""No token the tests use reaches a log line or captured output: a pytest plugin.

Issue 14: "after the whole suite, scan every log file and captured output the tests
produced for every token they used". This plugin (registered from ``tests/conftest.py``)

* gathers the tokens as the harnesses make them: the dev control plane's install tokens,
  kubesim's and the real control plane's admin tokens and the ServiceAccount tokens they
  hand out (their harness classes are wrapped for the session: the dev packages know
  nothing of this plugin), every ``--token``, ``--set pipeops.token=/api.token=``,
  ``PIPEOPS_TOKEN`` and ``PIPEOPS_DASHBOARD_TOKEN`` given to a service process
  (``tests.helpers.ServiceProcess`` reports itself), and every token found in a file meant
  to hold one (the cluster tokens the control plane minted, in ``identity.json``; a
  generated ``dashboard-token``; a kubeconfig's user token);
* scans, at the end of the session, every file under pytest's basetemp and
  ``test-artifacts/``, the captured stdout/stderr/log of every test report, the output of
  every service process and dev control plane the tests started, and, just before a
  harness removes its temporary directory, that directory (kubesim's and the real
  control plane's logs);
* fails the run (exit 1) if any token is found, naming the place and the kind of token,
  never the token.

A file meant to hold tokens is excused by an explicit, narrow rule (``holder``), by name
and purpose, and only for the occurrences in the place meant for them: a kubeconfig's
``users[].user.token``, the agent config's ``pipeops.token``/``api.token``, a JSON state
file's values of keys named ``*token*``, a token file (``*-token``, ``tokens.csv``...),
etcd's own data files. Anything else in such a file is scanned like any other file.

Tokens shorter than ``MIN_LENGTH`` are not tracked ("t", "wrong"): they are test inputs
that occur by chance, not secrets.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

MIN_LENGTH = 16
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TOKEN_ENV = {"PIPEOPS_TOKEN": "install token", "PIPEOPS_DASHBOARD_TOKEN": "dashboard token"}
TOKEN_SETS = {"pipeops.token": "install token", "api.token": "dashboard token"}
MAX_FILE = 512 * 1024 * 1024  # no test writes more; a larger file is read in part


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    count: int

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} ({self.count} occurrence{'s' * (self.count > 1)})"


@dataclass
class Scanner:
    """The tokens known so far and what was found; the texts kept for the final scan."""

    tokens: dict[str, str] = field(default_factory=dict)  # token -> kind
    findings: list[Finding] = field(default_factory=list)
    texts: list[tuple[str, bytes]] = field(default_factory=list)  # (where, zlib text)
    processes: list[tuple[str, Any]] = field(default_factory=list)  # live, not yet kept
    seconds: float = 0.0  # the final scan's
    _pattern: re.Pattern[bytes] | None = None

    def remember(self, token: Any, kind: str) -> None:
        if isinstance(token, str):
            token = token.strip()
            if len(token) >= MIN_LENGTH and token not in self.tokens:
                self.tokens[token] = kind
                self._pattern = None

    def pattern(self) -> re.Pattern[bytes] | None:
        if self._pattern is None and self.tokens:
            # longest first: a token that contains another is reported as itself
            alternatives = sorted(self.tokens, key=len, reverse=True)
            self._pattern = re.compile(b"|".join(re.escape(t.encode()) for t in alternatives))
        return self._pattern

    def count(self, data: bytes) -> collections.Counter[str]:
        pattern = self.pattern()
        if pattern is None:
            return collections.Counter()
        return collections.Counter(m.group().decode() for m in pattern.finditer(data))

    def scan(self, where: str, data: bytes,
             allowed: collections.Counter[str] | None = None) -> None:
        """Record a finding for each token in ``data`` beyond the ``allowed`` count."""
        by_kind: collections.Counter[str] = collections.Counter()
        for token, seen in self.count(data).items():
            extra = seen - (allowed or {}).get(token, 0)
            if extra > 0:
                by_kind[self.tokens[token]] += extra
        for kind, count in sorted(by_kind.items()):
            self.findings.append(Finding(where, kind, count))

    # ---- files -------------------------------------------------------------------------

    def harvest_tree(self, root: Path) -> None:
        for path in _files(root):
            rule = holder(path, _read(path))
            if rule is not None:
                for token, kind in rule.tokens:
                    self.remember(token, kind)

    def scan_tree(self, root: Path, label: str = "") -> None:
        for path in _files(root):
            data = _read(path)
            rule = holder(path, data)
            if rule is not None and rule.everything:
                continue
            where = f"{label}{path}"
            self.scan(where, data, rule.allowed() if rule is not None else None)

    def harvest_and_scan(self, root: Path, label: str = "") -> None:
        self.harvest_tree(root)
        self.scan_tree(root, label)

    # ---- text kept for the end ------------------------------------------------------

    def keep(self, where: str, text: str) -> None:
        if text:
            self.texts.append((where, zlib.compress(text.encode("utf-8", "replace"), 1)))

    def watch(self, where: str, source: Any) -> None:
        """A live process harness (``lines``/``stderr_lines``): kept when it has ended."""
        self.processes.append((where, source))

    def settle(self, final: bool = False) -> None:
        """Keep (compressed) the output of every watched process that has ended."""
        live = []
        for where, source in self.processes:
            proc = getattr(source, "proc", None)
            pumps = [*getattr(source, "_pumps", []), getattr(source, "_pump_thread", None)]
            ended = (proc is None or proc.poll() is not None) and \
                not any(pump is not None and pump.is_alive() for pump in pumps)
            if ended or final:
                lines = list(getattr(source, "lines", [])) + \
                    list(getattr(source, "stderr_lines", []))
                self.keep(where, "\n".join(lines))
            else:
                live.append((where, source))
        self.processes = live

    def scan_kept(self) -> None:
        for where, packed in self.texts:
            self.scan(where, zlib.decompress(packed))


SCANNER = Scanner()


def remember(token: Any, kind: str) -> None:
    """Tell the plugin about a token a harness made (it must never reach a log line)."""
    SCANNER.remember(token, kind)


def watch_process(argv: list[str], env: dict[str, str], source: Any) -> None:
    """A service process started by the tests: its tokens (argv, env) are remembered and
    its output (``source.lines``/``source.stderr_lines``) is scanned once it ended."""
    for name, kind in TOKEN_ENV.items():
        remember(env.get(name), kind)
    for i, arg in enumerate(argv):
        if arg == "--token" and i + 1 < len(argv):
            remember(argv[i + 1], "install token")
        if arg.startswith("--token="):
            remember(arg.partition("=")[2], "install token")
        key, sep, value = arg.partition("=")
        if sep and key in TOKEN_SETS and i > 0 and argv[i - 1] == "--set":
            remember(value, TOKEN_SETS[key])
    SCANNER.watch(f"output of {Path(argv[0]).name} ({' '.join(argv[1:3])[:60]})", source)


# ---- files meant to hold tokens ---------------------------------------------------------

@dataclass
class Holder:
    """A file meant to hold tokens: the tokens in their place, and their kind."""

    tokens: list[tuple[str, str]]
    everything: bool = False  # a token file or etcd's data: all of it is the token's place

    def allowed(self) -> collections.Counter[str]:
        return collections.Counter(token.strip() for token, _kind in self.tokens)


_TOKEN_FILE = re.compile(r"(^|[-_.])(tokens?|token-file)(\.csv|\.txt)?$")
# the closing quote is optional: a truncated identity file moved aside still holds it there
_JSON_TOKEN = re.compile(r'"(\w*token\w*)"\s*:\s*"((?:[^"\\]|\\.)*)"?')
KIND_BY_NAME = {"dashboard-token": "dashboard token", "sa-token": "ServiceAccount token",
                "cp-token": "ServiceAccount token", "tokens.csv": "kube admin token"}


def holder(path: Path, data: bytes) -> Holder | None:
    """The narrow rule that makes ``path`` a file meant to hold tokens, or None."""
    name = path.name
    if _TOKEN_FILE.search(name):  # dashboard-token, sa-token, tokens.csv, tokens
        kind = KIND_BY_NAME.get(name, "token (token file)")
        text = data.decode("utf-8", "replace")
        found = [(word, kind) for line in text.splitlines()
                 for word in re.split(r"[\s,]+", line.split("#", 1)[0]) if word]
        return Holder(found, everything=True)
    parts = path.parts
    if "member" in parts and ("snap" in parts or "wal" in parts):  # etcd's data: Secrets
        return Holder([], everything=True)
    if "kubeconfig" in name or name in ("config.yaml", "config.yml") or \
            name.endswith((".yaml", ".yml")):
        return _yaml_holder(name, data)
    if name.endswith(".json") or name.startswith("identity.json"):
        return _json_holder(name, data)
    return None


def _yaml_holder(name: str, data: bytes) -> Holder | None:
    try:
        document = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    found: list[tuple[str, str]] = []
    if document.get("kind") == "Config" and isinstance(document.get("users"), list):
        for user in document["users"]:  # a kubeconfig: users[].user.token
            token = (user.get("user") or {}).get("token") if isinstance(user, dict) else None
            if isinstance(token, str):
                found.append((token, "kube token (in a kubeconfig)"))
    for dotted, kind in TOKEN_SETS.items():  # the agent's config file
        section, key = dotted.split(".")
        token = (document.get(section) or {}).get(key) \
            if isinstance(document.get(section), dict) else None
        if isinstance(token, str):
            found.append((token, kind))
    return Holder(found) if found else None


def _json_holder(name: str, data: bytes) -> Holder | None:
    """identity.json (cluster_token; also a corrupted copy moved aside), endpoints.json,
    the dev control plane's state: tokens only as the values of keys named *token*."""
    text = data.decode("utf-8", "replace")
    found = []
    for key, value in _JSON_TOKEN.findall(text):
        try:
            token = json.loads(f'"{value}"')
        except ValueError:
            continue
        kind = "cluster token" if key == "cluster_token" else f"token ({key} in {name})"
        found.append((token, kind))
    return Holder(found) if found else None


def _files(root: Path) -> Iterator[Path]:
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(MAX_FILE)
    except OSError:
        return b""


# ---- the harnesses: wrapped for the session ---------------------------------------------

def _wrap(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]],
          undo: list[Callable[[], None]]) -> None:
    original = owner.__dict__[name]
    wrapped = functools.wraps(original)(make(original))
    setattr(owner, name, wrapped)
    undo.append(lambda: setattr(owner, name, original))


def _scan_dir_before_cleanup(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``stop`` of a harness that removes a TemporaryDirectory (``_tmp``) at the end: the
    processes are stopped first (their logs complete), the directory scanned, then
    removed."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
            tmp, self._tmp = self._tmp, None
            try:
                return original(self, *args, **kwargs)
            finally:
                if tmp is not None:
                    SCANNER.harvest_and_scan(Path(tmp.name), f"{label} ")
                    tmp.cleanup()
        return stop
    return make


def _after(action: Callable[..., None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            action(self, result, *args, **kwargs)
            return result
        return call
    return make


def tap_harnesses() -> list[Callable[[], None]]:
    """Wrap the dev harnesses' token-making and cleanup; returns how to undo it."""
    undo: list[Callable[[], None]] = []
    from kubesim.testing import Kubesim
    from pipeops_controlplane.testing import ControlPlane
    from realkube.testing import RealKube

    _wrap(Kubesim, "start", _after(
        lambda ks, _r: remember(ks.token, "kube admin token (kubesim)")), undo)
    _wrap(Kubesim, "add_token", _after(
        lambda _ks, _r, *a, **k: remember(a[0] if a else k.get("token"),
                                          "ServiceAccount token (kubesim)")), undo)
    _wrap(Kubesim, "stop", _scan_dir_before_cleanup("kubesim's directory"), undo)
    _wrap(RealKube, "start", _after(
        lambda rk, _r: remember(rk.token, "kube admin token (real control plane)")), undo)
    _wrap(RealKube, "service_account_token", _after(
        lambda _rk, token, *_a, **_k: remember(token, "ServiceAccount token (real control "
                                               "plane)")), undo)
    _wrap(RealKube, "stop", _scan_dir_before_cleanup("the real control plane's directory"),
          undo)

    def control_plane_started(cp: Any, _result: Any) -> None:
        for token in cp.tokens:
            remember(token, "install token")
        SCANNER.watch("output of the dev control plane", cp)

    _wrap(ControlPlane, "start", _after(control_plane_started), undo)
    return undo


# ---- pytest hooks -----------------------------------------------------------------------

_UNDO: list[Callable[[], None]] = []


def pytest_configure(config: pytest.Config) -> None:
    if not _UNDO:
        _UNDO.extend(tap_harnesses())


def pytest_unconfigure(config: pytest.Config) -> None:
    while _UNDO:
        _UNDO.pop()()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, content in report.sections:
        SCANNER.keep(f"{report.nodeid} [{name}]", content)
    if report.when == "teardown":
        SCANNER.settle()


def scan_everything(scanner: Scanner, roots: Iterable[Path]) -> None:
    """The final scan: harvest the token holders first (a cluster token minted during the
    run is known only from its identity file), then every root and every kept text."""
    scanner.settle(final=True)
    roots = [root for root in roots if root.exists()]
    for root in roots:
        scanner.harvest_tree(root)
    for root in roots:
        scanner.scan_tree(root)
    scanner.scan_kept()


@pytest.hookimpl(tryfirst=True)  # before pytest removes the temporary directories
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    started = time.monotonic()
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    scan_everything(SCANNER, [p for p in (basetemp, ARTIFACTS) if p is not None])
    SCANNER.seconds = time.monotonic() - started
    if SCANNER.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCANNER.findings:
        terminalreporter.section("tokens in logs or captured output", red=True)
        for finding in SCANNER.findings:
            terminalreporter.line(str(finding))
        terminalreporter.line(f"{len(SCANNER.findings)} place(s) hold a token the tests "
                              "used (the values are not shown)")
    else:
        kinds = collections.Counter(SCANNER.tokens.values())
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        terminalreporter.line(
            f"secret scan: {len(SCANNER.tokens)} tokens{f' ({detail})' if detail else ''}, "
            f"none in any log or captured output ({SCANNER.seconds:.1f}s)")
