"""TLS material for the gRPC integration tests: a CA, server and client certificates, made per run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files for one CA, a server certificate, a client certificate and an unrelated CA."""

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
              *, ca: bool = False, dns: tuple[str, ...] = (), client: bool = False) -> bytes:
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
    if client:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("drop-explainer.test")]), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass
class CertificateRequiredServer:
    """A TLS 1.3 server on loopback that requires a client certificate and refuses a client without one.

    It refuses as Go's crypto/tls does (Hubble and hubble-relay are Go): the
    server checks the client's certificate only after the client has
    finished its handshake, then sends the ``certificate_required`` alert
    (RFC 8446 section 4.4.2.4) and closes. It keeps reading until the client
    goes, so the alert is not lost to a TCP reset; grpcio (BoringSSL) then
    sees the alert as an undecryptable record, ``Unwrap failed
    (TSI_DATA_CORRUPTED)``. grpcio's own server closes the socket instead,
    which is why this server exists. ``refusals`` counts the alerts sent.
    """

    server: Identity
    client_ca: bytes
    refusals: int = 0
    _server: asyncio.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)
    _context: ssl.SSLContext = field(init=False)

    @property
    def target(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Self:
        self._context = self._make_context()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._connections:
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections)
        await self._server.wait_closed()

    def _make_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        context.load_verify_locations(cadata=self.client_ca.decode())
        with tempfile.TemporaryDirectory(prefix="tls-refuse-") as tmp:  # load_cert_chain reads only files
            cert, key = Path(tmp) / "server.crt", Path(tmp) / "server.key"
            cert.write_bytes(self.server.cert)
            key.write_bytes(self.server.key)
            context.load_cert_chain(cert, key)
        return context

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._refuse(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self._context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                tls.read(1)  # TLS 1.3: the client's certificate (or its absence) is judged here
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self.refusals += 1
                break
            await self._send(writer, outgoing)
            data = await reader.read(65536)
            if not data:
                return
            incoming.write(data)
        await self._send(writer, outgoing)  # the alert
        while await reader.read(65536):
            pass

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, outgoing: ssl.MemoryBIO) -> None:
        if outgoing.pending:
            writer.write(outgoing.read())
            await writer.drain()
