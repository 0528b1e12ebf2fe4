"""Helpers for the Calico integration tests: TLS material, test-speed settings, a flow collector."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drop_explainer.flows import model
from drop_explainer.sources import calico

SERVER_NAME = "goldmane.calico-system.svc"
GOLDMANE_NAMES = ("goldmane", "goldmane.calico-system", SERVER_NAME, f"{SERVER_NAME}.cluster.local")


@dataclass(frozen=True)
class Identity:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files: the operator-like CA, Goldmane's certificate, a client certificate, an unrelated CA."""

    ca: Identity
    server: Identity
    client: Identity
    other_ca: Identity
    directory: Path

    def file(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
              *, ca: bool = False, dns: tuple[str, ...] = ()) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_tls_material(directory: Path) -> TlsMaterial:
    """Goldmane's certificate names the Service only (no IP), as the operator issues it."""
    ca_key, server_key, client_key, other_key = make_key(), make_key(), make_key(), make_key()
    ca = ("Test Calico operator CA", ca_key)
    return TlsMaterial(
        ca=Identity(make_cert(ca[0], ca_key, None, ca=True), pem_key(ca_key)),
        server=Identity(make_cert("goldmane", server_key, ca, dns=GOLDMANE_NAMES), pem_key(server_key)),
        client=Identity(make_cert("drop-explainer", client_key, ca), pem_key(client_key)),
        other_ca=Identity(make_cert("Unrelated CA", other_key, None, ca=True), pem_key(other_key)),
        directory=directory,
    )


def goldmane_settings(target: str, **overrides: object) -> calico.GoldmaneSettings:
    """Settings with test-sized backoff; everything else as in production."""
    values: dict[str, object] = {"target": target, "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    values.update(overrides)
    return calico.GoldmaneSettings(**values)  # type: ignore[arg-type]


def felix_settings(socket_path: Path, **overrides: object) -> calico.FelixSettings:
    values: dict[str, object] = {"socket_path": str(socket_path), "node_name": "node-1", "check_interval_s": 0.02,
                                 "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    values.update(overrides)
    return calico.FelixSettings(**values)  # type: ignore[arg-type]


class FlowSource(Protocol):
    stats: calico.CalicoStats

    def stream_flows(self) -> AsyncGenerator[model.Flow, None]: ...


class Collector:
    """Consumes a source in a background task so tests can push and then look."""

    def __init__(self, source: FlowSource) -> None:
        self.source = source
        self.flows: list[model.Flow] = []
        self._stream = source.stream_flows()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for flow in self._stream:
            self.flows.append(flow)

    async def until(self, predicate: Callable[[], bool], timeout: float = 4.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])
        await self._stream.aclose()
