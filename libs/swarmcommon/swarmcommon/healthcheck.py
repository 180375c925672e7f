"""Health probe for a service that only speaks mutual TLS.

    python -m swarmcommon.healthcheck --tls-dir /var/run/swarm/tls 127.0.0.1:50051

The kubelet's native `grpc:` probe dials plaintext and presents no
certificate, so it cannot reach a mesh port. Kubernetes runs this instead
(an exec probe inside the container): it dials the local port with the
pod's own certificate and asks grpc.health.v1.Health/Check.

Exit status 0 when the server answers SERVING, 1 otherwise (NOT_SERVING,
unreachable, TLS refused, missing files), with one line saying why.

The server presents the same certificate the probe holds, so by default the
name checked against it is the first DNS name in that certificate (the
target is usually 127.0.0.1, which is not one of its names); `--server-name`
overrides it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from cryptography import x509

from swarmcommon.clients.channel import ServiceChannel
from swarmcommon.tls import ClientTls, TlsConfigError, TlsFiles

SERVING = "SERVING"
DEFAULT_TIMEOUT = 3.0

# What a status that is not SERVING usually means, for the probe's message.
_HINTS = {
    "UNAVAILABLE": "not listening yet, or the TLS handshake failed (a certificate not from the mesh CA?)",
    "DEADLINE_EXCEEDED": "no answer in time",
    "NOT_SERVING": "the server is starting or draining",
    "NOT_FOUND": "the server does not know that health service name",
}


class ProbeError(Exception):
    """The probe cannot even ask (bad arguments, unreadable certificate)."""


def own_dns_name(files: TlsFiles) -> str:
    """The first DNS name of the certificate in `files` (the name the local
    server, which presents that certificate, answers to)."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProbeError(f"cannot read certificate {files.cert}: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    names = san.get_values_for_type(x509.DNSName)
    if not names:
        raise ProbeError(f"certificate {files.cert} has no DNS name; pass --server-name")
    return str(names[0])


def check(
    target: str,
    tls_dir: str | Path,
    *,
    server_name: str | None = None,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The health status `target` reports for `service` ("" = the whole
    server), or the gRPC status code that kept it from answering."""
    try:
        files = TlsFiles.in_dir(tls_dir)
    except TlsConfigError as exc:
        raise ProbeError(str(exc)) from exc
    name = server_name or own_dns_name(files)
    channel = ServiceChannel(target, tls=ClientTls(files, server_name=name), default_timeout=timeout)
    try:
        return channel.health(service, timeout=timeout)
    finally:
        channel.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m swarmcommon.healthcheck",
        description="Exit 0 if the gRPC server at TARGET reports SERVING over mutual TLS, else 1.",
    )
    parser.add_argument("target", help="host:port of the mesh port, e.g. 127.0.0.1:50051")
    parser.add_argument(
        "--tls-dir", required=True, help="directory with tls.crt, tls.key and ca.crt (the pod's own)"
    )
    parser.add_argument(
        "--server-name", default=None, help="name to verify the server's certificate against "
        "(default: the first DNS name of the certificate in --tls-dir)"
    )  # fmt: skip
    parser.add_argument("--service", default="", help='health service name (default "": the whole server)')
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default 3)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    what = f"{args.target}" + (f" service {args.service!r}" if args.service else "")
    if args.timeout <= 0:
        print(f"unhealthy: --timeout must be positive, got {args.timeout}", file=err)
        return 1
    try:
        status = check(
            args.target,
            args.tls_dir,
            server_name=args.server_name,
            service=args.service,
            timeout=args.timeout,
        )
    except ProbeError as exc:
        print(f"unhealthy: {what}: cannot probe: {exc}", file=err)
        return 1
    if status == SERVING:
        print(f"healthy: {what} is SERVING", file=out)
        return 0
    hint = _HINTS.get(status)
    print(f"unhealthy: {what} is {status}" + (f" ({hint})" if hint else ""), file=err)
    return 1


if __name__ == "__main__":
    sys.exit(main())
