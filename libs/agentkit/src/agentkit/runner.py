"""The life of one container's process, the same for all four.

``run_service`` parses the command line, loads the config (exit 2 on a bad value),
sets up JSON logging and the event bus, serves gRPC (contract + health + reflection +
Events + Service) and Prometheus metrics on localhost, then runs the service's main
coroutine until it returns or SIGTERM/SIGINT arrives. On a signal the main task is
cancelled and given ``shutdown_grace`` seconds to finish its ``finally`` blocks (a last
heartbeat, closing streams), then the gRPC server stops and the process exits 0.

Root tasks are guarded (as kopf guards its daemons): the main coroutine and every task
a service starts with ``ServiceContext.spawn`` (the tunnel's identity watcher...). One
that raises takes the service down: one error line naming it, the main task cancelled
and drained as on SIGTERM, exit 1, so the kubelet restarts the container instead of
leaving it running without the part that died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn, TypeVar

import uvloop

from agentkit import logs
from agentkit.config import Config, ConfigError, load, parse_set
from agentkit.events import BusLogHandler, EventBus
from agentkit.grpcclient import Siblings
from agentkit.grpcserver import GrpcServer, ServicerBinding
from agentkit.memtrim import trim_forever
from agentkit.metrics import MetricsServer
from agentkit.runtime import RuntimeProbe
from agentkit.status import IDLE, ServiceStatus
from agentkit.tasks import errors_of

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a service's main coroutine gets: its config and its shared plumbing."""

    name: str
    config: Config
    args: argparse.Namespace
    bus: EventBus
    status: ServiceStatus
    siblings: Siblings
    grpc_port: int = 0
    bindings: list[ServicerBinding] = field(default_factory=list)
    root_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    died: list[asyncio.Task[Any]] = field(default_factory=list)  # root tasks that raised
    _death: asyncio.Event = field(default_factory=asyncio.Event)
    runtime: RuntimeProbe = field(default_factory=RuntimeProbe)

    def serve(self, binding: ServicerBinding) -> None:
        """Add a contract service; call before the main coroutine starts (in ``setup``)."""
        self.bindings.append(binding)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start a root task: one meant to run as long as the service. If it raises, the
        service stops with exit 1 (see the module). The caller still owns it: it cancels
        it on its way out; the runner cancels what is left after the main task ended.
        Returning is allowed (its job is done); being cancelled is not a failure."""
        task = asyncio.create_task(coro, name=name)
        self.root_tasks.add(task)
        task.add_done_callback(self._root_done)
        return task

    def _root_done(self, task: asyncio.Task[Any]) -> None:
        self.root_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.died.append(task)
            self._death.set()

    async def wait_death(self) -> None:
        await self._death.wait()


Setup = Callable[[ServiceContext], Callable[[], Coroutine[Any, Any, None]]]

# flag dest -> dotted config key, for the flags every service has
COMMON_FLAGS: dict[str, tuple[str, str]] = {
    "api_url": ("--api-url", "pipeops.api_url"),
    "cluster_name": ("--cluster-name", "agent.cluster_name"),
    "agent_id": ("--agent-id", "agent.id"),
    "state_dir": ("--state-dir", "agent.state_dir"),
    "log_level": ("--log-level", "logging.level"),
    "log_format": ("--log-format", "logging.format"),
    "kubeconfig": ("--kubeconfig", "kubernetes.kubeconfig"),
}


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "0.0.0+unknown"


class OneLineParser(argparse.ArgumentParser):
    """A command-line mistake is one line on stderr and exit 2 (not the whole usage).

    Unrecognized arguments are named only when they are options: a value there may be a
    token (``--token pit_...``, a flag we do not have), so values are counted, not shown.
    An option's value that is itself an option (``--config --token=pit_... x``: argparse
    takes an argument with a space for a value) is refused by the option's name alone, so
    what follows its ``=`` is never echoed by a later error about the value.
    """

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        for action in self._actions:
            given = getattr(parsed, action.dest, None) if action.option_strings else None
            for value in given if isinstance(given, list) else [given]:
                if isinstance(value, str) and _LOOKS_LIKE_OPTION.match(value):
                    self.error(f"argument {action.option_strings[-1]}: expected a value, "
                               f"got the option {value.partition('=')[0][:40]}")
        if extras:
            options = [arg for arg in extras if arg.startswith("-")]
            hidden = len(extras) - len(options)
            self.error("unrecognized arguments: " + " ".join(option.partition("=")[0]
                                                            for option in options)
                       + (f" (and {hidden} value{'s' * (hidden > 1)} not shown)"
                          if hidden else ""))
        return parsed

    def error(self, message: str) -> NoReturn:
        line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        self.exit(2, f"{self.prog}: error: {line[:300]} (see --help)\n")


_LOOKS_LIKE_OPTION = re.compile(r"--?[A-Za-z]")


def _grace(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not 0 <= seconds <= MAX_SHUTDOWN_GRACE:
        raise argparse.ArgumentTypeError(
            f"expected 0 to {MAX_SHUTDOWN_GRACE:g} seconds, got {text[:40]!r}")
    return seconds


MAX_SHUTDOWN_GRACE = 600.0


def build_parser(name: str, description: str, grpc_key: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"pipeops-{name}", description=description)
    parser.add_argument("--config", metavar="FILE",
                        help="YAML config file (default: ~/.pipeops-agent.yaml if present)")
    for dest, (flag, key) in COMMON_FLAGS.items():
        parser.add_argument(flag, dest=dest, metavar="VALUE", help=f"sets {key}")
    parser.add_argument("--grpc-port", dest="grpc_port", metavar="PORT",
                        help=f"sets {grpc_key} (0: pick a free port)")
    parser.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config key, e.g. --set tunnel.enabled=false")
    parser.add_argument("--shutdown-grace", type=_grace, default=3.0, metavar="SECONDS",
                        help="how long the main task may take to finish after SIGTERM")
    return parser


def load_config(args: argparse.Namespace, flags: dict[str, tuple[str, str]]) -> Config:
    overrides: dict[str, Any] = parse_set(args.set)
    names = {key: f"--set {key}" for key in overrides}
    for dest, (flag, key) in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[key] = value
            names[key] = flag
    return load(args.config, overrides=overrides, flag_names=names)


class ServiceFailed(Exception):
    """Raised by a service's main coroutine to stop the process with ``exit_code``.

    For failures that retrying cannot fix (a refused install token): the service logs
    the reason itself, then raises this; the runner shuts down cleanly (gRPC server,
    metrics, siblings) and the process exits with the code. A ``SystemExit`` raised in
    a task would escape the event loop past that shutdown.
    """

    def __init__(self, exit_code: int = 1, reason: str = "") -> None:
        super().__init__(reason or f"exit {exit_code}")
        self.exit_code = exit_code


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop's event loop, for every process of ours that serves
    traffic (the services and the dev control plane). Measured on the tunnel (bench/
    tunnel.py): about a fifth less CPU per relayed message than the stdlib loop before
    the fast path read into its own buffer; since then no difference above the noise
    (bench/tunnel_notes.md). It stays until a measurement says the stdlib loop is better
    (it costs ~1 MiB of imports)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_service(
    name: str,
    description: str,
    setup: Setup,
    *,
    dist: str,
    metrics_key: str | None = None,
    extra_flags: dict[str, tuple[str, str]] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run a container's process; returns the exit code."""
    grpc_key = f"grpc.{name.replace('-', '_')}"
    parser = build_parser(name, description, grpc_key)
    flags = dict(COMMON_FLAGS)
    for dest, (flag, key) in (extra_flags or {}).items():
        parser.add_argument(flag, dest=dest, metavar="VALUE", help=f"sets {key}")
        flags[dest] = (flag, key)
    flags["grpc_port"] = ("--grpc-port", grpc_key)
    args = parser.parse_args(argv)
    try:
        config = load_config(args, flags)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ConfigError.exit_code

    logs.configure(name, config.logging.level, config.logging.format)
    for secret in config.secrets():
        logs.register_secret(secret)
    bus = EventBus(name)
    logging.getLogger().addHandler(BusLogHandler(bus))
    status = ServiceStatus(name, package_version(dist), bus)
    ctx = ServiceContext(
        name=name,
        config=config,
        args=args,
        bus=bus,
        status=status,
        siblings=Siblings(config, status),
    )
    try:
        return run_loop(_serve(ctx, setup, metrics_key, args.shutdown_grace))
    except KeyboardInterrupt:
        return 0


async def _serve(
    ctx: ServiceContext, setup: Setup, metrics_key: str | None, grace: float
) -> int:
    loop = asyncio.get_running_loop()
    ctx.bus.bind(loop)
    main = setup(ctx)
    metrics = None
    host = ctx.config.grpc.host
    port = getattr(ctx.config.grpc, ctx.name.replace("-", "_"))
    # The kubelet's probes get a health-only listener (grpc.probe_host); the http-api has
    # no probe port: it is probed over HTTP.
    probe_port = getattr(ctx.config.grpc, f"{ctx.name.replace('-', '_')}_probe", None)
    probe_host = ctx.config.grpc.probe_host if probe_port is not None else ""
    try:  # a port in use (or a host not of this machine) is one line and exit 2
        if metrics_key:
            metrics = MetricsServer(ctx.config.metrics.host,
                                    getattr(ctx.config.metrics, metrics_key))
            metrics.start()
            ctx.status.metrics_url = metrics.url
        server = GrpcServer(ctx.status, ctx.bus, ctx.bindings, host, port,
                            probe_host=probe_host, probe_port=probe_port or 0,
                            runtime=ctx.runtime)
    except OSError as unbound:
        if metrics is not None:
            metrics.stop()
        log.error("%s", unbound)
        log.info("stopped", extra={"exit_code": ConfigError.exit_code})
        return ConfigError.exit_code
    ctx.spawn(ctx.runtime.run(), name="runtime-probe")  # cancelled with the leftovers
    ctx.spawn(trim_forever(), name="malloc-trim")  # freed heap back to the OS (memtrim)
    ctx.grpc_port = server.port
    await server.start()
    log.info("started", extra={"grpc": f"{host}:{server.port}", "version": ctx.status.version,
                               **({"metrics": metrics.url} if metrics else {}),
                               **({"grpc_probe": f"{probe_host}:{server.probe_port}"}
                                  if probe_host else {})})

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    main_task = asyncio.create_task(main(), name=f"{ctx.name}-main")
    stop_task = asyncio.create_task(stop.wait(), name="wait-for-signal")
    death_task = asyncio.create_task(ctx.wait_death(), name="wait-for-a-root-task-death")
    code = 0
    try:
        await asyncio.wait({main_task, stop_task, death_task},
                           return_when=asyncio.FIRST_COMPLETED)
        if ctx.died and not main_task.done():
            dead = ctx.died[0]
            exc = dead.exception()
            log.error("root task %s died: %s; stopping", dead.get_name(),
                      f"{type(exc).__name__}: {exc}", exc_info=exc)
            code = 1
        elif stop.is_set():
            log.info("stopping on signal")
        main_task.cancel()
        done, _ = await asyncio.wait({main_task}, timeout=grace)
        if not done:
            log.warning("main task did not finish within the grace period")
        elif code:  # a root task died: said above; the main task's end is its consequence
            errors_of([main_task])  # read, so asyncio never reports it as unretrieved
        elif not main_task.cancelled() and (exc := main_task.exception()) is not None:
            if isinstance(exc, ServiceFailed):
                code = exc.exit_code
            elif isinstance(exc, ConfigError):  # found only at use (a CA file): one line
                log.error("%s", exc)
                code = ConfigError.exit_code
            else:
                log.error("main task failed", exc_info=exc)
                code = 1
    finally:
        stop_task.cancel()
        death_task.cancel()
        leftover = set(ctx.root_tasks)  # root tasks their owner did not cancel
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover, timeout=grace)
        await asyncio.gather(stop_task, death_task, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop(grace=0.5)
        await ctx.siblings.close()
        if metrics:
            metrics.stop()
    log.info("stopped", extra={"exit_code": code})
    return code


async def idle(ctx: ServiceContext, detail: str) -> None:
    """The main coroutine of a service whose job is not built yet: say so, then wait."""
    ctx.status.set(IDLE, detail)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
