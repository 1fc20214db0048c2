"""The TLS context every service uses to reach the control plane (REST and wss://).

``pipeops.tls.ca_file`` *adds* a CA bundle to the system's trusted CAs (a private CA in
front of the control plane must not make publicly signed endpoints fail);
``insecure_skip_verify`` turns verification off, never in production. A bundle that
cannot be loaded is a configuration error, named as such, not a traceback.

The system's CAs are read from OpenSSL's hashed certificate directory when it has one
(``/etc/ssl/certs``, or ``SSL_CERT_DIR``): OpenSSL then loads only the CA a handshake
needs, when it needs it, where ``ssl.create_default_context()`` parses the whole bundle
(~140 certificates, 1.2 MiB resident in every container) at once. An ``SSL_CERT_FILE``
set in the environment is loaded as before, unless it lies in that directory (Debian's and
Alpine's ``/etc/ssl/certs/ca-certificates.crt``: ``update-ca-certificates`` writes the
bundle and the hashed links from the same certificates); no such directory, the bundle.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from agentkit.config import ConfigError, TLSConfig


def _hashed(directory: str) -> bool:
    """``directory`` holds OpenSSL's ``HASH.N`` links (what a by-directory lookup reads)."""
    try:
        return any(name.endswith(".0") for name in os.listdir(directory))
    except OSError:
        return False


def trust_system(context: ssl.SSLContext) -> None:
    """Add the system's CAs to ``context``: looked up on demand in the hashed directory,
    or the bundle loaded at once (an explicit ``SSL_CERT_FILE``, or no directory)."""
    paths = ssl.get_default_verify_paths()
    directory = Path(paths.capath) if paths.capath else None
    bundle = os.environ.get(paths.openssl_cafile_env)
    if directory is not None and directory.is_dir() and _hashed(str(directory)) and (
            not bundle or Path(bundle).resolve().parent == directory.resolve()):
        context.load_verify_locations(capath=str(directory))
    else:
        context.load_default_certs()


def client_context() -> ssl.SSLContext:
    """``ssl.create_default_context()`` (verification on, hostnames checked), trusting the
    system's CAs through :func:`trust_system`. Blocking: call it off the event loop."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trust_system(context)
    return context


def check_ca_file(tls: TLSConfig) -> None:
    """The start check of ``pipeops.tls.ca_file`` for a process that builds its control
    plane context only on first use (the http-api): the file can be read and holds a PEM
    certificate, or a ConfigError (one line, exit 2) as :func:`control_plane_context`
    would raise. No TLS context is built (the first one initialises OpenSSL, 0.9 MiB).
    Blocking: call it off the event loop."""
    if not tls.ca_file or tls.insecure_skip_verify:
        return
    try:
        with open(tls.ca_file, "rb") as bundle:
            text = bundle.read(16 * 1024 * 1024)
    except OSError as exc:
        reason = exc.strerror or exc
    else:
        if b"-----BEGIN CERTIFICATE-----" in text:
            return
        reason = "no PEM certificate in it"
    raise ConfigError(f"config error: pipeops.tls.ca_file = {tls.ca_file!r}: "
                      f"cannot load a CA bundle from it ({reason})")


def control_plane_context(tls: TLSConfig) -> ssl.SSLContext:
    """Blocking (reads the CA files): call it off the event loop."""
    context = client_context()
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
