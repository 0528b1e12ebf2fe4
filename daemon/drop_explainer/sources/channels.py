"""What the gRPC sources share: reading TLS files and opening a grpc.aio channel.

Hubble and Goldmane are dialled the same way (one connection per stream, our own
backoff, certificates re-read on every connect so rotation needs no restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import grpc.aio

from drop_explainer.sources import errors

NO_CLIENT_CERTIFICATE: Final = "the server requires a client certificate"
"""The hint for an mTLS server refusing a client that presented no certificate."""

# Words grpcio (BoringSSL) and our h2 client (OpenSSL) put in the details of a
# failed TLS set-up.
_TLS_MARKERS: Final = ("ssl", "tls", "handshake", "certificate", "x509", "tsi_")
# A TLS 1.3 server checks the client certificate only after the client has
# finished its handshake, so its refusal (Go's crypto/tls: the
# certificate_required alert) reaches grpcio as an undecryptable record:
# "Unwrap failed (TSI_DATA_CORRUPTED)".
_REFUSED_AFTER_HANDSHAKE: Final = ("tsi_data_corrupted", "unwrap failed", "certificate_required")
# grpcio's own TLS 1.3 server closes the socket instead of sending the alert;
# so may a plaintext server, hence only "probably".
_CLOSED: Final = "socket closed"

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


@dataclass(frozen=True, slots=True)
class TlsFailure:
    """A failed call read as a TLS failure: what the transport said, and what it probably means."""

    details: str
    hint: str | None = None

    def __str__(self) -> str:
        if self.hint is None or self.hint in self.details:
            return self.details
        return f"{self.details} ({self.hint})"


def tls_failure(tls: TlsSettings | None, details: str, *, unavailable: bool,
                tls_error: bool = False) -> TlsFailure | None:
    """The TLS reading of a failed call's details, or None when nothing points at TLS.

    ``unavailable``: the call ended UNAVAILABLE (a TLS set-up failure never
    ends otherwise); ``tls_error``: the transport itself said TLS (h2's
    TlsError). Without TLS configured nothing is a TLS failure.
    """
    if tls is None or not unavailable:
        return None
    lowered = details.lower()
    no_cert = tls.cert_file is None
    if NO_CLIENT_CERTIFICATE in lowered:  # the transport read the alert itself (h2, over OpenSSL)
        return TlsFailure(details, NO_CLIENT_CERTIFICATE)
    if any(marker in lowered for marker in _REFUSED_AFTER_HANDSHAKE):
        if no_cert:
            return TlsFailure(details, f"{NO_CLIENT_CERTIFICATE}: none is configured (tls.cert_file, tls.key_file)")
        return TlsFailure(details, "the server refused the TLS session after the handshake: "
                                   "does it trust the CA of our client certificate?")
    if _CLOSED in lowered and no_cert:
        return TlsFailure(details, f"the server closed the connection during TLS set-up: probably "
                                   f"{NO_CLIENT_CERTIFICATE} (none is configured)")
    if tls_error or any(marker in lowered for marker in _TLS_MARKERS):
        if no_cert and "alert_handshake_failure" in lowered:
            # TLS 1.2 servers refuse a missing certificate with a bare handshake_failure.
            return TlsFailure(details, f"probably {NO_CLIENT_CERTIFICATE} (none is configured)")
        return TlsFailure(details)
    return None


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
