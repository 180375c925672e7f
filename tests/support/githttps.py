"""A git server over HTTPS that wants a password, on 127.0.0.1: git's smart
HTTP protocol served by `git http-backend` (CGI) behind http.server, with a
certificate from a test CA. Every request without the right basic-auth
credentials gets 401; `attempts` records what each request presented."""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from tests.support.pki import make_mesh_pki, signed_by


@dataclass
class GitHttps:
    root: Path  # bare repositories, served as /<name>
    ca_file: Path  # what git must trust (GIT_SSL_CAINFO)
    port: int
    attempts: list[str] = field(default_factory=list)  # the user each request presented, "" for none

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"


def _handler(server_state: GitHttps, username: str, password: str) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            return  # quiet

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._serve()

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._serve()

        def _serve(self) -> None:
            presented = self.headers.get("Authorization", "")
            decoded = base64.b64decode(presented.removeprefix("Basic ")).decode() if presented else ""
            who = decoded.partition(":")[0]
            server_state.attempts.append(who)
            if presented != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server_state.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": who,  # enables receive-pack (push)
                "REMOTE_ADDR": "127.0.0.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            backend = ["git", "http-backend"]
            done = subprocess.run(backend, input=body, env=env, capture_output=True, check=False)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
            status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
            self.send_response(status)
            for key, value in headers:
                if key.lower() != "status":
                    self.send_header(key, value.strip())
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class _TlsServer(ThreadingHTTPServer):
    """TLS per connection, in the connection's own thread: a listening socket
    wrapped in TLS shakes hands inside accept(), so one client that connects
    and never speaks (a git killed mid-connect) would stall the accept loop,
    and with it shutdown(), for good."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # no handshake: nothing to serve
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


@contextmanager
def git_https(directory: Path, username: str, password: str) -> Iterator[GitHttps]:
    """The server, serving the bare repositories under `directory`/repos."""
    pki = make_mesh_pki(directory / "pki")
    issued = signed_by(pki.ca, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (directory / "tls").mkdir(parents=True, exist_ok=True)
    cert, key, ca = (directory / "tls" / n for n in ("server.crt", "server.key", "ca.crt"))
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    ca.write_bytes(pki.ca_pem)
    root = directory / "repos"
    root.mkdir(parents=True, exist_ok=True)
    state = GitHttps(root, ca, 0)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _TlsServer(("127.0.0.1", 0), _handler(state, username, password), context)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
