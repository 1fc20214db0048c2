"""The four images, checked without a Docker engine.

docker-bake.hcl parses and every target names a Dockerfile and a context that exist;
hadolint passes on every Dockerfile; each image's entry point is a console script its
member declares; the final stages carry no build tools and run as the non-root user the
chart expects; .dockerignore lets in what the Dockerfiles copy and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, tool
from tests.images.dockerfile import (
    SERVICES,
    Stage,
    exec_form,
    load_bake,
    parse_dockerfile,
    resolve_target,
)

BASE_DOCKERFILE = ROOT / "docker" / "base.Dockerfile"
DOCKERFILES = [BASE_DOCKERFILE] + [ROOT / "services" / s / "Dockerfile" for s in SERVICES]
CHART_VALUES = ROOT / "charts" / "pipeops-agent" / "values.yaml"
CHART_KEYS = {"registrar": "registrar", "tunnel": "tunnel", "gateway": "gateway",
              "http-api": "httpApi"}


@pytest.fixture(scope="module")
def bake() -> dict[str, dict[str, dict[str, Any]]]:
    return load_bake()


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(CHART_VALUES.read_text())
    return values


def pyproject(service: str) -> dict[str, Any]:
    with (ROOT / "services" / service / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


# ---- docker-bake.hcl -------------------------------------------------------------------


def test_bake_default_group_builds_the_four_images(bake: dict[str, Any]) -> None:
    assert bake["group"]["default"]["targets"] == list(SERVICES)
    for name in ("REGISTRY", "TAG", "PLATFORMS"):
        assert bake["variable"][name]["default"], f"variable {name} needs a default"
    platforms = bake["variable"]["PLATFORMS"]["default"].split(",")
    assert {"linux/amd64", "linux/arm64"} <= set(platforms)


def test_every_target_resolves(bake: dict[str, Any]) -> None:
    targets = bake["target"]
    referenced = set(bake["group"]["default"]["targets"])
    for name in targets:
        resolved = resolve_target(targets, name)
        for ctx in resolved.get("contexts", {}).values():
            if ctx.startswith("target:"):
                referenced.add(ctx.removeprefix("target:"))
    for name in targets:
        # Every target is built (directly or as a named context) or is an abstract "_" one.
        assert name.startswith("_") or name in referenced, f"target {name} is never built"
    for name in referenced:
        resolved = resolve_target(targets, name)
        context = ROOT / resolved["context"]
        assert context.is_dir(), f"{name}: context {context} does not exist"
        dockerfile = context / resolved["dockerfile"]
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
        stages = parse_dockerfile(dockerfile)
        if "target" in resolved:
            assert resolved["target"] in {s.name for s in stages}, (name, resolved["target"])


@pytest.mark.parametrize("service", SERVICES)
def test_service_target(bake: dict[str, Any], chart_values: dict[str, Any],
                        service: str) -> None:
    targets = bake["target"]
    resolved = resolve_target(targets, service)
    assert resolved["dockerfile"] == f"services/{service}/Dockerfile"
    assert resolved["context"] == "."
    assert resolved["platforms"] == '${split(",", PLATFORMS)}'
    # The image name is the one the chart pulls: <image.registry>/<repository>:<tag>.
    repository = chart_values[CHART_KEYS[service]]["image"]["repository"]
    assert resolved["tags"] == [f"${{REGISTRY}}/{repository}:${{TAG}}"]
    assert bake["variable"]["REGISTRY"]["default"] == chart_values["image"]["registry"]

    # Every FROM that is not an earlier stage is a named context the target provides, and
    # that context is a stage of the base Dockerfile.
    stages = parse_dockerfile(ROOT / resolved["dockerfile"])
    earlier: set[str] = set()
    for stage in stages:
        if stage.base not in earlier:
            ctx = resolved["contexts"][stage.base]
            base = resolve_target(targets, ctx.removeprefix("target:"))
            assert base["dockerfile"] == "docker/base.Dockerfile"
            assert base["target"] == stage.base
        if stage.name:
            earlier.add(stage.name)
    # The shared args reach the Dockerfile that declares them.
    declared = {a.split("=")[0] for s in stages for a in s.all("ARG")}
    assert {"VERSION", "REVISION", "BUILD_DATE"} <= declared <= set(resolved["args"])


def test_versions_agree(bake: dict[str, Any]) -> None:
    """One version everywhere: the chart's appVersion (its default image tag), the bake
    file's VERSION label, and each service's package version."""
    chart = yaml.safe_load((ROOT / "charts" / "pipeops-agent" / "Chart.yaml").read_text())
    version = chart["appVersion"]
    assert bake["variable"]["VERSION"]["default"] == version
    for service in SERVICES:
        assert pyproject(service)["project"]["version"] == version, service


# ---- hadolint ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(path: Path) -> None:
    proc = subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n"
                   "CMD python -m http.server\n")
    proc = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3025"):
        assert rule in proc.stdout, proc.stdout


# ---- entry points, final stages ------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_entry_point_is_the_members_console_script(service: str) -> None:
    stages = parse_dockerfile(ROOT / "services" / service / "Dockerfile")
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    argv = exec_form(entrypoint)
    assert len(argv) == 1 and argv[0].startswith("/app/.venv/bin/"), argv
    script = argv[0].removeprefix("/app/.venv/bin/")

    project = pyproject(service)["project"]
    assert script in project["scripts"], f"{script} is not in {service}'s [project.scripts]"
    assert script == f"pipeops-{service}"
    # The build stage installs exactly that member, from the lock file, without dev deps.
    (build,) = [s for s in stages if s.name == "build"]
    (run,) = build.all("RUN")
    assert f"--package {project['name']}" in run
    assert "--frozen" in run and "--no-dev" in run and "--no-editable" in run
    # ... and the script is a real one: it is installed and loads.
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name=script)
    assert ep.value == project["scripts"][script]
    assert callable(ep.load())


def _labels(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for args in stage.all("LABEL"):
        for k, v in re.findall(r'([\w.-]+)="([^"]*)"', args):
            out[k] = v
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_final_stage(service: str) -> None:
    stages = parse_dockerfile(ROOT / "services" / service / "Dockerfile")
    final = stages[-1]
    assert final.base == "runtime", "the final image starts from the tool-less runtime stage"
    assert final.all("USER")[-1] == "10001:10001"
    assert final.all("STOPSIGNAL") == ["SIGTERM"]
    labels = _labels(final)
    assert labels["org.opencontainers.image.title"] == f"pipeops-{service}"
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.created"] == "${BUILD_DATE}"
    copies = final.all("COPY")
    assert copies == ["--from=build --chown=0:0 /app/.venv /app/.venv"], \
        "only the virtualenv, owned by root so the app cannot rewrite itself"
    assert not final.all("RUN"), "nothing is built or installed in the final stage"
    # what changes with every build (version, commit, date) comes after the COPY, so a new
    # commit does not invalidate the cached layer of the virtualenv
    order = [ins for ins, _ in final.instructions]
    for ins, args in final.instructions:
        if ins == "ARG" or (ins in ("LABEL", "ENV") and "${" in args):
            assert order.index(ins) > order.index("COPY"), (service, ins, args)


def test_the_http_api_image_reports_the_commit_and_build_date_it_was_built_from(
        bake: dict[str, Any]) -> None:
    """bake's REVISION and BUILD_DATE (`make images` fills them from git and the clock)
    reach the environment the http-api reads for /version, under the names it reads."""
    import shlex

    final = parse_dockerfile(ROOT / "services" / "http-api" / "Dockerfile")[-1]
    env = dict(word.split("=", 1) for line in final.all("ENV") for word in shlex.split(line))
    deps = (ROOT / "services" / "http-api" / "src" / "pipeops_http_api" / "deps.py").read_text()
    for name, arg in (("PIPEOPS_COMMIT", "REVISION"), ("PIPEOPS_BUILD_DATE", "BUILD_DATE")):
        assert env[name] == f"${{{arg}}}", env
        assert f'os.environ.get("{name}"' in deps, name
        assert bake["variable"][arg]["default"] == "unknown"
    make = (ROOT / "Makefile").read_text()
    assert "REVISION=$(or $(REVISION),$(shell git rev-parse HEAD" in make
    assert "BUILD_DATE=$(or $(BUILD_DATE),$(shell date -u" in make


def test_make_run_and_the_tests_run_the_services_as_the_images_do() -> None:
    """The runtime ENV that changes how a service runs (its malloc arenas, its bytecode) is
    the one make run and the tests' ServiceProcess give the services; and each service
    image compiles the bytecode that PYTHONOPTIMIZE makes Python look for."""
    import importlib.util
    import shlex
    import sys

    from tests.helpers import IMAGE_ENV

    stages = {s.name: s for s in parse_dockerfile(BASE_DOCKERFILE)}
    env = dict(word.split("=", 1) for line in stages["runtime"].all("ENV")
               for word in shlex.split(line))
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("make_run", ROOT / "scripts" / "run.py")
        assert spec is not None and spec.loader is not None
        run = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(run)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import ast

    bench = ast.parse((ROOT / "bench" / "memory.py").read_text())
    (bench_env,) = [ast.literal_eval(node.value) for node in bench.body
                    if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "IMAGE_ENV"]
    assert bench_env == IMAGE_ENV, "bench/memory.py's import floors as well"
    assert IMAGE_ENV == run.IMAGE_ENV == {k: env[k] for k in IMAGE_ENV}, env
    assert env["PYTHONOPTIMIZE"] == "2"
    for service in SERVICES:
        (build, *_) = parse_dockerfile(ROOT / "services" / service / "Dockerfile")
        assert any("python -OO -m compileall" in run_ for run_ in build.all("RUN")), service


def test_base_runtime_stage_has_no_build_tools(chart_values: dict[str, Any]) -> None:
    stages = {s.name: s for s in parse_dockerfile(BASE_DOCKERFILE)}
    runtime, builder = stages["runtime"], stages["builder"]
    assert runtime.base == builder.base == "${PYTHON_IMAGE}", \
        "one Python image for both, so the venv's interpreter path holds"
    assert not runtime.all("COPY"), "nothing (no uv) is copied into the runtime stage"
    (run,) = runtime.all("RUN")
    assert "pip uninstall" in run and "setuptools" in run and "wheel" in run
    assert "apt-get" not in run
    assert runtime.all("USER") == ["10001:10001"]
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    assert "/app/.venv/bin" in " ".join(runtime.all("ENV"))
    assert "org.opencontainers.image.source" in _labels(runtime)
    assert builder.all("COPY")[0] == "--from=uv /uv /usr/local/bin/uv"


def test_image_user_matches_the_chart() -> None:
    """The chart's runAsUser is the image's user, so files the image owns line up."""
    template = (ROOT / "charts" / "pipeops-agent" / "templates" / "_pod.tpl").read_text()
    deployment = (ROOT / "charts" / "pipeops-agent" / "templates" /
                  "deployment.yaml").read_text()
    for text in (template, deployment):
        assert re.findall(r"runAsUser: (\d+)", text) == ["10001"]
    base = BASE_DOCKERFILE.read_text()
    assert re.search(r"^ARG UID=10001$", base, re.M)


def test_base_images_are_pinned() -> None:
    text = BASE_DOCKERFILE.read_text()
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    uv = re.search(r"^ARG UV_IMAGE=(\S+)$", text, re.M)
    assert python and re.fullmatch(r"python:3\.11-slim-\w+", python.group(1))
    assert uv and re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv.group(1))
    lock = (ROOT / "uv.lock").read_text()
    assert lock.startswith("version = 1\n"), "the pinned uv reads this lock format"


# ---- .dockerignore -------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((include, re.compile(rf"^{regex}(/.*)?$")))
    return rules


def sent_to_builder(path: str) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes."""
    keep = True
    for include, regex in _dockerignore_rules():
        if regex.match(path):
            keep = include
    return keep


def test_dockerignore_sends_the_workspace_only() -> None:
    for path in ("pyproject.toml", "uv.lock", "libs/agentkit/pyproject.toml",
                 "libs/agentkit/src/agentkit/config.py", "services/tunnel/pyproject.toml",
                 "dev/kubesim/pyproject.toml", "proto/pipeops/agent/v1/events.proto"):
        assert sent_to_builder(path), path
    for path in (".venv/bin/python", ".tools/bin/helm", "tests/helpers.py", ".git/HEAD",
                 "charts/pipeops-agent/values.yaml", ".run/endpoints.json",
                 "services/tunnel/src/pipeops_tunnel/__pycache__/x.cpython-311.pyc",
                 "libs/agentkit/.mypy_cache/x.json"):
        assert not sent_to_builder(path), path


def test_every_copied_path_exists_and_is_sent() -> None:
    for stage in parse_dockerfile(BASE_DOCKERFILE):
        for args in stage.all("COPY"):
            words = args.split()
            if any(w.startswith("--from") for w in words):
                continue
            for source in [w for w in words if not w.startswith("--")][:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert sent_to_builder(source.rstrip("/") or "."), f"{source} is ignored"
