"""channels.tls_failure: what a failed call's details say about TLS, on the words grpcio and h2 really use.

The details are those seen on loopback (tests/integration/hubble) from
grpcio 1.x against a Go-style TLS 1.3 server refusing a client without a
certificate, a grpcio server doing the same, and a TLS 1.2 server.
"""

from __future__ import annotations

import pytest

from drop_explainer.sources import channels

NO_CERT = channels.TlsSettings(ca_file="ca.crt", server_name="relay")
WITH_CERT = channels.TlsSettings(ca_file="ca.crt", cert_file="c.crt", key_file="c.key")
CONNECT = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:4244: "


@pytest.mark.parametrize(("tls", "details", "hint"), [
    pytest.param(NO_CERT, CONNECT + "Unwrap failed (TSI_DATA_CORRUPTED)",
                 "the server requires a client certificate: none is configured (tls.cert_file, tls.key_file)",
                 id="go-tls13-alert-no-cert"),
    pytest.param(WITH_CERT, CONNECT + "Unwrap failed (TSI_DATA_CORRUPTED)",
                 "the server refused the TLS session after the handshake: "
                 "does it trust the CA of our client certificate?", id="go-tls13-alert-refused-cert"),
    pytest.param(NO_CERT, CONNECT + "Socket closed",
                 "the server closed the connection during TLS set-up: probably the server requires a client "
                 "certificate (none is configured)", id="grpcio-server-closes"),
    pytest.param(NO_CERT, CONNECT[:-2] + " UNKNOWN: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
                 "error:10000410:SSL routines:OPENSSL_internal:SSLV3_ALERT_HANDSHAKE_FAILURE: OK",
                 "probably the server requires a client certificate (none is configured)", id="tls12-alert"),
    pytest.param(NO_CERT, "TLS handshake with 127.0.0.1:4244 failed: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] "
                 "tlsv13 alert certificate required: the server requires a client certificate",
                 "the server requires a client certificate", id="h2-names-the-alert"),
    pytest.param(NO_CERT, CONNECT + "Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
                 "CERTIFICATE_VERIFY_FAILED", None, id="wrong-ca-no-hint"),
])
def test_tls_failures_are_recognised_with_what_they_probably_mean(
    tls: channels.TlsSettings, details: str, hint: str | None
) -> None:
    """Each refusal is a TLS failure; the hint says what it means, "probably" where the words are not conclusive."""
    failure = channels.tls_failure(tls, details, unavailable=True)
    assert failure is not None
    assert failure.hint == hint
    assert str(failure).startswith(details)
    assert str(failure).count(channels.NO_CLIENT_CERTIFICATE) <= 1


@pytest.mark.parametrize(("tls", "details", "unavailable"), [
    pytest.param(None, CONNECT + "Unwrap failed (TSI_DATA_CORRUPTED)", True, id="plaintext"),
    pytest.param(NO_CERT, CONNECT + "Connection refused", True, id="nothing-listening"),
    pytest.param(NO_CERT, "first cannot be specified with follow", False, id="server-status"),
    pytest.param(WITH_CERT, CONNECT + "Socket closed", True, id="closed-with-a-certificate"),
])
def test_other_failures_are_not_called_tls(tls: channels.TlsSettings | None, details: str, unavailable: bool) -> None:
    """Nothing points at TLS: no TLS configured, a refused connect, a server's own status, a plain close."""
    assert channels.tls_failure(tls, details, unavailable=unavailable) is None
