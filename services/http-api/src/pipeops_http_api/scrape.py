"""``GET /metrics``: the whole pod in one scrape.

Each sibling serves its Prometheus metrics on a localhost port (``Service.Describe``
says where: ``metrics_url``, remembered until a scrape of it fails). A scrape asks every
sibling at once (bounded by ``SCRAPE_TIMEOUT``), adds a ``container`` label to every
sample and merges families of the same name, so a series that two containers both export
(the ``process_*`` ones) stays two distinct series and no family is declared twice. This
process's own registry joins with ``container="http-api"``. ``pipeops_container_up``
says which containers answered: a sibling that is down is simply missing and marked 0.

The merge works on the text exposition format line by line (a family's ``# HELP`` and
``# TYPE``, then its samples), without parsing label values: the label is put first
inside the braces. That keeps a scrape of the four containers well under Prometheus'
patience even on a busy pod (bench/results/http-api.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import httpx
from prometheus_client import REGISTRY, generate_latest

from agentkit.grpcclient import Siblings
from pipeops.agent.v1 import service_pb2
from pipeops_http_api.outbound import LazyClient
from pipeops_http_api.sibling import SIBLINGS

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 1.0  # seconds a sibling gets to answer; Prometheus' own timeout is 10 s
SELF = "http-api"
UP = "pipeops_container_up"


@dataclass
class Family:
    help: str = ""  # the whole "# HELP ..." line
    type: str = ""  # the whole "# TYPE ..." line
    kind: str = ""
    samples: list[str] = field(default_factory=list)


def _labelled(line: str, container: str) -> str:
    """``name{a="b"} 1`` -> ``name{container="c",a="b"} 1``; ``name 1`` likewise."""
    label = f'container="{container}"'
    brace, space = line.find("{"), line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = line[brace + 1:]
        return f"{line[:brace + 1]}{label}{'' if rest.startswith('}') else ','}{rest}"
    return f"{line[:space]}{{{label}}}{line[space:]}"


def merge(parts: dict[str, str]) -> dict[str, Family]:
    """Families by name, in first-seen order; a later family whose type differs from the
    first one's is left out (it would make the exposition invalid)."""
    families: dict[str, Family] = {}
    for container, text in parts.items():
        current: Family | None = None
        skip = False
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line[7:].split(" ", 1)[0]
                family = families.get(name)
                if family is None:
                    family = families[name] = Family()
                if line.startswith("# HELP "):
                    family.help = family.help or line
                else:
                    kind = line.rsplit(" ", 1)[-1]
                    skip = bool(family.kind) and family.kind != kind
                    if not family.kind:
                        family.type, family.kind = line, kind
                current = family
            elif line.startswith("#"):
                continue
            elif current is not None and not skip:
                current.samples.append(_labelled(line, container))
    return families


def render(families: dict[str, Family], up: dict[str, bool]) -> bytes:
    out: list[str] = []
    for family in families.values():
        if family.samples or family.type:
            out.extend(line for line in (family.help, family.type) if line)
            out.extend(family.samples)
    out.append(f"# HELP {UP} 1 when the container's metrics were collected in this scrape")
    out.append(f"# TYPE {UP} gauge")
    out.extend(f'{UP}{{container="{name}"}} {1.0 if ok else 0.0}' for name, ok in up.items())
    return ("\n".join(out) + "\n").encode()


class PodScraper:
    def __init__(self, siblings: Siblings, http: LazyClient) -> None:
        self.siblings = siblings
        self.http = http
        self._urls: dict[str, str] = {}  # sibling -> its metrics_url, once Describe said it

    async def _url(self, name: str) -> str:
        if name not in self._urls:
            info = await self.siblings.ask(name, "Service/Describe",
                                           service_pb2.DescribeRequest(), timeout=SCRAPE_TIMEOUT)
            if not info.ok or not info.reply.metrics_url:
                return ""
            self._urls[name] = info.reply.metrics_url
        return self._urls[name]

    async def _sibling(self, name: str) -> str | None:
        url = await self._url(name)
        if not url:
            return None
        try:
            reply = await (await self.http()).get(url, timeout=SCRAPE_TIMEOUT)
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            self._urls.pop(name, None)  # ask Describe again: it may have restarted elsewhere
            log.debug("cannot scrape a sibling", extra={"sibling": name, "error": str(exc)})
            return None
        return reply.text

    async def scrape(self) -> bytes:
        answers = await asyncio.gather(*(self._sibling(name) for name in SIBLINGS))
        parts = {SELF: generate_latest(REGISTRY).decode()}
        up = {SELF: True}
        for name, text in zip(SIBLINGS, answers, strict=True):
            up[name] = text is not None
            if text is not None:
                parts[name] = text
        return render(merge(parts), up)
