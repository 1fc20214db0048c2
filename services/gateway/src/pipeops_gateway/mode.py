"""Direct or tunnel: the routing mode, decided from the ingress controller's Service.

* ``auto`` (the default): a ``LoadBalancer`` controller Service with a public address
  (:mod:`.address`) means ``direct`` with that address as the public endpoint; private
  addresses only, another Service type, or no controller Service means ``tunnel``. A
  LoadBalancer with no address yet is waited for, at most ``wait`` (2 minutes, as the
  seed's agent does); then ``tunnel``.
* ``direct`` / ``tunnel`` in config (``gateway.routing_mode``) decide at once; ``direct``
  takes ``gateway.public_endpoint`` or else the load balancer's address.
* No flapping: once decided, another answer must hold for ``hold`` seconds before the
  mode changes, and an address that merely disappears for a while changes nothing.

Pure: the caller gives observations and the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeops_gateway.address import lb_addresses, public_address

Mode = Literal["direct", "tunnel"]
Setting = Literal["auto", "direct", "tunnel"]
ADDRESS_WAIT = 120.0
HOLD = 60.0


@dataclass(frozen=True)
class Decision:
    mode: Mode | None  # None: still waiting for the load balancer's address
    public_endpoint: str
    reason: str

    @property
    def is_private(self) -> bool:
        return self.mode != "direct"


def candidate(controller: Mapping[str, Any] | None) -> Decision:
    """What the Service says right now (mode None: a LoadBalancer with no address)."""
    if controller is None:
        return Decision("tunnel", "", "no ingress controller Service found")
    meta = controller.get("metadata") or {}
    label = f"{meta.get('namespace')}/{meta.get('name')}"
    if (controller.get("spec") or {}).get("type") != "LoadBalancer":
        return Decision("tunnel", "", f"{label} is not a LoadBalancer")
    addresses = lb_addresses(controller)
    if not addresses:
        return Decision(None, "", f"{label} has no load balancer address yet")
    public = public_address(addresses)
    if public is None:
        return Decision("tunnel", "", f"{label} has only private addresses "
                                      f"({', '.join(addresses[:3])})")
    return Decision("direct", public, f"{label} has the public address {public}")


class ModeDecider:
    def __init__(self, setting: Setting = "auto", endpoint: str = "", *,
                 wait: float = ADDRESS_WAIT, hold: float = HOLD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.setting = setting
        self.endpoint = endpoint
        self.wait = wait
        self.hold = hold
        self._clock = clock
        self._started = clock()
        self._current: Decision | None = None
        self._pending: tuple[Decision, float] | None = None  # a different answer, since

    @property
    def current(self) -> Decision | None:
        return self._current

    def observe(self, controller: Mapping[str, Any] | None) -> Decision:
        """The decision now, given the controller Service as it is now."""
        now = self._clock()
        seen = candidate(controller)
        if self.setting == "tunnel":
            self._current = Decision("tunnel", "", "gateway.routing_mode is tunnel")
            return self._current
        if self.setting == "direct":
            endpoint = self.endpoint or (lb_addresses(controller)[0]
                                         if controller and lb_addresses(controller) else "")
            self._current = Decision("direct", endpoint, "gateway.routing_mode is direct")
            return self._current
        if self.endpoint and seen.mode == "direct":
            seen = Decision("direct", self.endpoint, seen.reason + " (endpoint from config)")
        if self._current is None:
            if seen.mode is None:
                if now - self._started < self.wait:
                    return seen
                seen = Decision("tunnel", "", f"{seen.reason} after {self.wait:g}s: tunnel")
            self._current = seen
            return seen
        if seen.mode is None or (seen.mode, seen.public_endpoint) == \
                (self._current.mode, self._current.public_endpoint):
            self._pending = None
            return self._current
        if self._pending is None or (self._pending[0].mode, self._pending[0].public_endpoint) \
                != (seen.mode, seen.public_endpoint):
            self._pending = (seen, now)
        if now - self._pending[1] >= self.hold:
            self._current, self._pending = seen, None
        return self._current

    def deadline(self) -> float | None:
        """Seconds until observing again could change the answer (None: nothing pending)."""
        now = self._clock()
        if self._current is None:
            return max(0.0, self._started + self.wait - now)
        if self._pending is not None:
            return max(0.0, self._pending[1] + self.hold - now)
        return None
