"""Mutual TLS for every gRPC connection in the mesh, reloaded when the files change.

A workload's certificate lives in one directory, laid out as cert-manager
mounts a Secret (tls.crt, tls.key, ca.crt); `swarmcommon.pki` writes the
same layout for the local mesh and tests.

- `server_credentials(files)`: clients must present a certificate from the
  mesh CA. Used for the mesh port of every service.
- `server_credentials(files, client_certs=False)`: TLS without client
  certificates, for the port guests reach: they hold no certificate, only
  their agent token (checked per call by `swarmcommon.authz`).
- `channel_credentials(files)`: a client presenting its own certificate.

Rotation without restart: the server asks for its certificates on every new
handshake and gets the files' current contents when they changed; a
`ServiceChannel` swaps its connection for one with the new files on its next
call after they changed.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmcommon.pki import CA_CERT, TLS_CERT, TLS_KEY

log = logging.getLogger(__name__)

# How often (seconds, at most) the files are looked at for a change.
RELOAD_CHECK_SECONDS = 1.0


class TlsConfigError(ValueError):
    """The certificate files are missing or unreadable."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: str | Path) -> TlsFiles:
        d = Path(directory)
        files = cls(d / CA_CERT, d / TLS_CERT, d / TLS_KEY)
        missing = [str(p) for p in (files.ca, files.cert, files.key) if not p.is_file()]
        if missing:
            raise TlsConfigError(f"TLS files missing: {', '.join(missing)}")
        return files

    def stamp(self) -> tuple[float, ...]:
        """Changes when any of the files does (a replaced file gets a new mtime or inode)."""
        out: list[float] = []
        for p in (self.ca, self.cert, self.key):
            st = os.stat(p)
            out += [st.st_mtime_ns, st.st_ino, st.st_size]
        return tuple(out)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert chain, key) as PEM."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


class _Watch:
    """The files' contents, read again when their stamp changed (checked at
    most every RELOAD_CHECK_SECONDS)."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self._pems = files.read()
        self._checked = time.monotonic()
        self.generation = 0

    def current(self) -> tuple[tuple[bytes, bytes, bytes], int]:
        """(pems, generation): the generation goes up each time they changed."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < RELOAD_CHECK_SECONDS:
                return self._pems, self.generation
            self._checked = now
            try:
                stamp = self.files.stamp()
                if stamp != self._stamp:
                    pems = self.files.read()
                    if _pair_matches(pems):
                        self._pems, self._stamp = pems, stamp
                        self.generation += 1
                        log.info("TLS certificates reloaded", extra={"cert": str(self.files.cert)})
                    else:  # the key written, its certificate not yet: look again next time
                        log.warning(
                            "TLS key does not match its certificate (mid-rotation?), keeping the old pair",
                            extra={"cert": str(self.files.cert)},
                        )
            except OSError as exc:  # mid-rotation: keep the last good files
                log.warning("TLS files unreadable, keeping the previous ones", extra={"error": str(exc)})
            return self._pems, self.generation


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _pair_matches(pems: tuple[bytes, bytes, bytes]) -> bool:
    """Whether the key is the one of the (first) certificate: files replaced
    one by one can be read between the key and its certificate."""
    _, cert, key = pems
    try:
        leaf = x509.load_pem_x509_certificate(cert)
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return False
    return _public_der(leaf.public_key()) == _public_der(private.public_key())


def server_credentials(files: TlsFiles, *, client_certs: bool = True) -> grpc.ServerCredentials:
    watch = _Watch(files)

    def config(pems: tuple[bytes, bytes, bytes]) -> grpc.ServerCertificateConfiguration:
        ca, cert, key = pems
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    served = [0]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        pems, generation = watch.current()
        if generation == served[0]:
            return None  # keep the current configuration
        served[0] = generation
        return config(pems)

    return grpc.dynamic_ssl_server_credentials(
        config(watch.current()[0]), fetch, require_client_authentication=client_certs
    )


class ClientTls:
    """A client's certificate (None: server-authenticated TLS only, as a guest
    uses) and the CA it trusts, reloaded when the files change."""

    def __init__(self, files: TlsFiles, *, present_cert: bool = True, server_name: str | None = None) -> None:
        self._watch = _Watch(files)
        self.present_cert = present_cert
        # The name checked against the server's certificate when the target
        # address is not one of its names (a guest dialling the bridge IP).
        self.server_name = server_name

    @classmethod
    def in_dir(cls, directory: str | Path, **kwargs: object) -> ClientTls:
        return cls(TlsFiles.in_dir(directory), **kwargs)  # type: ignore[arg-type]

    def generation(self) -> int:
        """Goes up when the files changed: a connection made earlier is stale."""
        return self._watch.current()[1]

    def credentials(self) -> tuple[grpc.ChannelCredentials, int]:
        """Credentials for a new connection, and the generation of its files."""
        (ca, cert, key), generation = self._watch.current()
        if self.present_cert:
            return grpc.ssl_channel_credentials(ca, key, cert), generation
        return grpc.ssl_channel_credentials(ca), generation

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def https_server_context(files: TlsFiles) -> ssl.SSLContext:
    """An HTTPS server's TLS context (no client certificates) that follows
    certificate rotation: each handshake moves to a context built from the
    current files once they changed (an HTTP server loads its certificate
    once otherwise)."""
    watch = _Watch(files)

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(files.cert, files.key)
        context.sni_callback = on_handshake
        return context

    current: list[tuple[int, ssl.SSLContext]] = []

    def on_handshake(sock: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        generation = watch.current()[1]
        if generation != current[0][0]:
            try:
                current[0] = (generation, build())
            except (OSError, ssl.SSLError) as exc:  # mid-rotation: keep the last good one
                log.warning("HTTPS certificate not reloaded", extra={"error": str(exc)})
        if sock.context is not current[0][1]:
            sock.context = current[0][1]

    current.append((watch.current()[1], build()))
    return current[0][1]
