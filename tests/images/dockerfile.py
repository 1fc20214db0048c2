"""A small Dockerfile reader and the bake file's targets, resolved like `bake --print`.

No Docker engine exists on these machines, so the images are checked statically: this
module turns a Dockerfile into stages of (instruction, arguments) and docker-bake.hcl
(parsed by python-hcl2) into targets with their `inherits` applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

from tests.helpers import ROOT

BAKE_FILE = ROOT / "docker-bake.hcl"
SERVICES = ("registrar", "tunnel", "gateway", "http-api")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages in order; line continuations joined, comments and parser directives dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: a line continuation runs off the end"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        args = args.strip()
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif instruction == "ARG" and not stages:
            continue  # ARGs before the first FROM only parameterise FROM lines
        else:
            assert stages, f"{path}: {instruction} before the first FROM"
            stages[-1].instructions.append((instruction, args))
    return stages


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD in exec (JSON) form; shell form is an error (signals would not reach
    the process)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


# ---- docker-bake.hcl -----------------------------------------------------------------


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes (`"\\"dev\\""`) and block labels quoted."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def load_bake(path: Path = BAKE_FILE) -> dict[str, dict[str, dict[str, Any]]]:
    """{"variable": {...}, "group": {...}, "target": {...}}, each name -> attributes."""
    with path.open() as fh:
        raw = hcl2.load(fh)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for block in ("variable", "group", "target"):
        out[block] = {}
        for entry in raw.get(block, []):
            for label, body in entry.items():
                name = _unquote(label)
                assert name not in out[block], f"{block} {name} defined twice"
                out[block][name] = _unquote(body)
    return out


def resolve_target(targets: dict[str, dict[str, Any]], name: str,
                   seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A target with its `inherits` applied (parents first, the target's own keys win)."""
    assert name not in seen, f"inheritance cycle: {' -> '.join((*seen, name))}"
    assert name in targets, f"target {name} is not defined"
    body = targets[name]
    merged: dict[str, Any] = {}
    for parent in body.get("inherits", []):
        for k, v in resolve_target(targets, parent, (*seen, name)).items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    for k, v in body.items():
        if k == "inherits":
            continue
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    return merged
