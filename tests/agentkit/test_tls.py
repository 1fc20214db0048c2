"""The control plane's TLS context: ``pipeops.tls.ca_file`` adds to the system's CAs
(it used to replace them), ``insecure_skip_verify`` skips verification, and a CA file
that cannot be loaded is a config error naming the key."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from agentkit.config import ConfigError, TLSConfig
from agentkit.tls import control_plane_context
from kubesim.tls import TlsFiles, write_tls


def ca(tmp_path: Path, name: str) -> TlsFiles:
    directory = tmp_path / name
    directory.mkdir()
    return write_tls(directory, [], ca_name=f"{name}-ca")


async def handshake(context: ssl.SSLContext, server: TlsFiles) -> None:
    """A TLS handshake with a loopback server presenting ``server``'s certificate."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.cert, server.key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"), 10)
        writer.close()
    finally:
        listener.close()


async def test_an_extra_ca_is_added_to_the_system_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, private = ca(tmp_path, "system"), ca(tmp_path, "private")
    monkeypatch.setenv("SSL_CERT_FILE", str(system.ca_cert))  # stands in for the system store
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = control_plane_context(TLSConfig(ca_file=str(private.ca_cert)))
    await handshake(context, private)
    await handshake(context, system)  # still trusted: the bundle was added, not swapped in

    unknown = ca(tmp_path, "unknown")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(context, unknown)
    await handshake(control_plane_context(TLSConfig(insecure_skip_verify=True)), unknown)


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        control_plane_context(TLSConfig(ca_file=str(path)))
    assert str(info.value).startswith(f"config error: pipeops.tls.ca_file = '{path}': "
                                      "cannot load a CA bundle from it")


async def test_system_cas_from_the_hashed_directory_load_only_when_a_handshake_needs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system store as OpenSSL's hashed directory (``SSL_CERT_DIR``): nothing is parsed
    up front (the bundle costs ~1.2 MiB per container), and a CA in it is trusted. (A
    ``ca_file`` CA of the same subject name as a system one would shadow it: OpenSSL
    asks the directory only for a name it does not hold; each CA here has its own.)"""
    system, private = ca(tmp_path, "system"), ca(tmp_path, "private")
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "system.pem").write_bytes(system.ca_cert.read_bytes())
    rehash = await asyncio.to_thread(subprocess.run, ["openssl", "rehash", str(directory)],
                                     capture_output=True, text=True, check=False)
    assert rehash.returncode == 0, rehash.stderr
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    context = control_plane_context(TLSConfig(ca_file=str(private.ca_cert)))
    assert context.cert_store_stats()["x509_ca"] == 1  # the ca_file alone, read at once
    await handshake(context, system)  # found in the directory when needed
    await handshake(context, private)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(context, ca(tmp_path, "unknown"))


@pytest.mark.parametrize("bundle_inside", [True, False])
def test_a_bundle_beside_the_hashed_links_is_not_parsed_one_elsewhere_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_inside: bool
) -> None:
    """``SSL_CERT_FILE`` inside the hashed directory (Debian's ca-certificates.crt) holds
    the same CAs as the links: the lazy directory serves; a bundle elsewhere is the
    operator's choice and is read at once."""
    system = ca(tmp_path, "system")
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "system.pem").write_bytes(system.ca_cert.read_bytes())
    rehash = subprocess.run(["openssl", "rehash", str(directory)], capture_output=True,
                            text=True, check=False)
    assert rehash.returncode == 0, rehash.stderr
    bundle = (directory if bundle_inside else tmp_path) / "ca-certificates.crt"
    bundle.write_bytes(system.ca_cert.read_bytes())
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    stats = control_plane_context(TLSConfig()).cert_store_stats()
    assert stats["x509_ca"] == (0 if bundle_inside else 1)
