"""The mass-delete guard: refuse a pass that would remove too many routes at once.

The worst failures of syncers like ours delete what they should have kept: a cache read
before it was complete, an API answering an empty list, a class filter typed wrong. A
pass (a full sync or a batch of changes) that would remove more than ``max_share`` of the
held routes, and more than ``min_deletes`` of them, is refused (a metric and an Event
say why) until the operator allows it (``gateway.allow_mass_delete``, or a ``Resync``
asking for it once) or the cluster's view changes. Small clusters stay usable: deleting
your only Ingress is not a mass delete.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MassDeleteGuard:
    max_share: float = 0.5
    min_deletes: int = 3
    allow: bool = False

    def refuses(self, held: int, deletes: int, *, allow_once: bool = False) -> str | None:
        """Why this pass is refused, or None when it may go ahead."""
        if self.allow or allow_once or deletes <= self.min_deletes:
            return None
        if deletes > self.max_share * held:
            return (f"refusing to remove {deletes} of {held} routes at once (more than "
                    f"{self.max_share:.0%}); set gateway.allow_mass_delete or call "
                    "Gateway/Resync with allow_mass_delete to let it through")
        return None
