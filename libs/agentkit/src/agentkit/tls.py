"""The TLS context every service uses to reach the control plane (REST and wss://).

``pipeops.tls.ca_file`` *adds* a CA bundle to the system's trusted CAs (a private CA in
front of the control plane must not make publicly signed endpoints fail);
``insecure_skip_verify`` turns verification off, never in production. A bundle that
cannot be loaded is a configuration error, named as such, not a traceback.
"""

from __future__ import annotations

import ssl

from agentkit.config import ConfigError, TLSConfig


def control_plane_context(tls: TLSConfig) -> ssl.SSLContext:
    """Blocking (reads the CA files): call it off the event loop."""
    context = ssl.create_default_context()
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(f"config error: pipeops.tls.ca_file = {tls.ca_file!r}: "
                              f"cannot load a CA bundle from it ({reason})") from None
    return context
