"""Public or private: the addresses of a LoadBalancer Service's ingress.

Private: RFC 1918 (10/8, 172.16/12, 192.168/16), shared address space (100.64/10, CGNAT
and Tailscale), loopback, link-local (169.254/16, fe80::/10), IPv6 ULA (fc00::/7) and
the unspecified address. Anything else that parses as an IP is public. A hostname (an
AWS ELB name, say) is taken as public: resolving it would make the answer depend on
this pod's DNS, and a cloud load balancer's name is public by design.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "0.0.0.0/32", "::1/128", "::/128", "fc00::/7", "fe80::/10"))


def is_private(address: str) -> bool:
    """Whether an IP address is private (see the module's list); hostnames are public."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in PRIVATE_NETWORKS)


def lb_addresses(service: Mapping[str, Any]) -> list[str]:
    """``status.loadBalancer.ingress[].ip`` / ``.hostname`` of a Service, in order."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out: list[str] = []
    for entry in ingress:
        if isinstance(entry, Mapping):
            value = entry.get("ip") or entry.get("hostname")
            if isinstance(value, str) and value:
                out.append(value)
    return out


def public_address(addresses: Iterable[str]) -> str | None:
    """The first public address, or None when every one is private (or there is none)."""
    return next((a for a in addresses if not is_private(a)), None)
