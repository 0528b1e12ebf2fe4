"""What the gRPC sources share: reading TLS files and opening a grpc.aio channel.

Hubble and Goldmane are dialled the same way (one connection per stream, our own
backoff, certificates re-read on every connect so rotation needs no restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from drop_explainer.sources import errors


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS towards a flow server (Hubble, relay, Goldmane); PEM files, re-read on every connect."""

    ca_file: str | None = None
    """CA bundle that signed the server certificate; None = the system roots."""
    cert_file: str | None = None
    """Client certificate for mTLS (hubble-relay and Goldmane require one)."""
    key_file: str | None = None
    server_name: str | None = None
    """Name to verify instead of the target host, e.g. ``goldmane.calico-system.svc``."""


def read_pem(setting: str, path: str) -> bytes:
    """The file's bytes; a missing or unreadable file is a ConfigError naming the setting."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise errors.MissingFileError(setting, path) from None
    except OSError as exc:
        raise errors.MissingFileError(setting, path, exc.strerror or str(exc)) from exc


def check_tls(tls: TlsSettings) -> None:
    if (tls.cert_file is None) != (tls.key_file is None):
        raise errors.ConfigError("tls: cert_file and key_file go together (mTLS needs both)")
    for setting, path in (("tls.ca_file", tls.ca_file), ("tls.cert_file", tls.cert_file),
                          ("tls.key_file", tls.key_file)):
        if path is not None:
            read_pem(setting, path)


def grpc_channel(target: str, tls: TlsSettings | None, *, max_receive_bytes: int,
                 keepalive_s: float) -> grpc.aio.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        # One connection per stream, and our own backoff decides when to retry.
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
        options.append(("grpc.default_authority", tls.server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_pem("tls.ca_file", tls.ca_file) if tls.ca_file else None,
        private_key=read_pem("tls.key_file", tls.key_file) if tls.key_file else None,
        certificate_chain=read_pem("tls.cert_file", tls.cert_file) if tls.cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)
