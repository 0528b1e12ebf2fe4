"""TLS for the API: a serving certificate from files, swapped in when the files change.

Why files and a swap: the certificate comes from a mounted Secret
(``tls.crt``/``tls.key``, as cert-manager writes them), and cert-manager
or certgen renew it in place. Kubernetes updates a Secret volume by
swapping a symlink, so the new pair appears at once; restarting the daemon
for it would drop the in-memory state and the open watches.

How: the listening socket keeps one SSLContext, whose SNI callback runs
at every new handshake (OpenSSL calls it with or without a server name).
The callback compares the files' (mtime, size, inode) with those last
loaded (three ``stat`` calls) and, when they differ, builds a new context
and hands it to that connection; later connections get it too. A pair that
does not load (half written, key not matching) is logged and the previous
one kept, so a bad renewal never takes the API down.

TLS 1.2 is the minimum. With ``--tls-client-ca`` a client certificate is
verified against that CA (optional, or required with
``--tls-require-client-cert``); api/guard.py then accepts a verified
certificate as the caller's identity when no bearer token is given.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from drop_explainer.api.auth import Caller
from drop_explainer.settings import ServingTls

log = logging.getLogger(__name__)


def _signature(paths: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _server_context(tls: ServingTls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        ctx.load_verify_locations(cafile=tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class ReloadingContext:
    """The listening socket's SSLContext; each new connection gets the newest loadable certificate."""

    def __init__(self, tls: ServingTls) -> None:
        self.tls = tls
        self._paths = tuple(p for p in (tls.cert, tls.key, tls.client_ca) if p)
        self._lock = threading.Lock()
        self._loaded = _signature(self._paths)
        # Fails at start on purpose: a daemon told to serve TLS must not come up without it.
        self.context = _server_context(tls)
        self.context.sni_callback = self._on_hello
        self._current = self.context
        self.reloads = 0
        self.reload_failures = 0
        self._last_error = ""

    def check(self) -> ssl.SSLContext:
        """The context for a new connection: reloaded first if the files changed since the last load."""
        try:
            seen = _signature(self._paths)
        except OSError as exc:
            self._failed(exc)
            return self._current
        if seen == self._loaded:
            return self._current
        with self._lock:
            if seen != self._loaded:
                try:
                    fresh = _server_context(self.tls)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self._failed(exc)
                    return self._current
                self._current, self._loaded, self._last_error = fresh, seen, ""
                self.reloads += 1
                log.info("api_tls_reloaded", extra={"cert": self.tls.cert, "reloads": self.reloads})
        return self._current

    def _failed(self, exc: Exception) -> None:
        self.reload_failures += 1
        if str(exc) != self._last_error:  # once per distinct failure, not at every handshake
            self._last_error = str(exc)
            log.warning("api_tls_reload_failed", extra={"cert": self.tls.cert, "error": str(exc),
                                                         "kept": "the previous certificate"})

    def _on_hello(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.check()
        if current is not ctx:
            conn.context = current


def _client_context(tls: ServingTls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.peer_ca or tls.client_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.client_ca:
        # Peers verify clients against the same CA: present our serving pair (it needs clientAuth usage).
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


class ClientContext:
    """How an instance calls its peers over https: their CA, and our own pair when they check clients.

    Rebuilt when the files change (the same Secret is renewed), so fan-out keeps
    working across a renewal of our pair or of the CA.
    """

    def __init__(self, tls: ServingTls) -> None:
        self.tls = tls
        self._paths = tuple(p for p in (tls.peer_ca or tls.client_ca, tls.cert if tls.client_ca else None,
                                        tls.key if tls.client_ca else None) if p)
        self._loaded = _signature(self._paths)
        self._current = _client_context(tls)

    def __call__(self) -> ssl.SSLContext:
        try:
            seen = _signature(self._paths)
            if seen != self._loaded:
                self._current, self._loaded = _client_context(self.tls), seen
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("peer_tls_reload_failed", extra={"error": str(exc), "kept": "the previous context"})
        return self._current


def certificate_caller(peercert: Mapping[str, Any] | None) -> Caller | None:
    """A verified client certificate as a user, as Kubernetes reads one: CN the user, each O a group."""
    if not peercert:
        return None
    names: list[str] = []
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
            elif key == "organizationName":
                orgs.append(str(value))
    if len(names) != 1 or not names[0]:
        return None
    return Caller(names[0], "", (*orgs, "system:authenticated"))
