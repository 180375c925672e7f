"""Claim throughput: the real ticketing gRPC service vs a raw-SQL claim loop.

For each backend (SQLite, PostgreSQL) and the same database, in one run:

1. grpc: the ticketing service runs as its own process; N agent threads each
   loop ClaimTicket -> SubmitWork until the queue is empty.
2. raw_sql: N threads, one connection each, loop the bare claim statement
   (locking subquery -> UPDATE ... RETURNING) and a bare "mark done" UPDATE:
   what a hand-rolled job queue on the same table would do, without leases'
   audit trail, outbox events, DAG release or the network hop.

3. grpc_mtls: the same service on the mesh's real security: the project is
   created by an operator over mutual TLS, and each agent claims and submits
   on the agent port (TLS) with its own signed agent token, checked on every
   call.

Prints one JSON document: per backend, the rates (tickets/s), p50/p99 claim
latency, the grpc/raw_sql rate ratio and the mTLS+token/plaintext ratio.

    python bench/claims.py [--agents 64] [--tickets 2000] [--backends sqlite,postgres] [--workers N]

The service runs with --workers server processes (default: one per core),
as a deployment on this machine would.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import psycopg
import sqlalchemy as sa

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.server import migrate
from swarmcommon.agenttoken import AgentIdentity, TokenSigner, write_signing_key
from swarmcommon.grpcclient import channel
from swarmcommon.localproc import free_port, start_service
from swarmcommon.pki import issue_mesh
from swarmcommon.tls import ClientTls

LOCAL_POSTGRES = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"
BATCH = 500  # tickets per CreateProject call
# Each agent is its own VM with its own connection: without this, grpc shares
# one subchannel between all channels to a target in a process, and the
# kernel's SO_REUSEPORT spreading sees a single connection (one server
# process took every call while the others idled).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]

CLAIM_SQL = """
UPDATE tickets SET state = 'assigned', claim_token = {p}, claim_expires_at = {p},
       claimed_by_agent_id = {p}, claimed_at = {p}, updated_at = {p}
WHERE id = (
    SELECT id FROM tickets WHERE tenant_id = {p} AND state = 'ready'
    ORDER BY priority DESC, created_at, ordinal LIMIT 1 {lock}
)
RETURNING id
"""
DONE_SQL = "UPDATE tickets SET state = 'done', claim_token = NULL, updated_at = {p} WHERE id = {p}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(n: int, seconds: float, claim_ms: list[float]) -> dict[str, float]:
    return {
        "tickets": n,
        "seconds": round(seconds, 3),
        "rate_per_s": round(n / seconds, 1),
        "claim_p50_ms": round(percentile(claim_ms, 0.50), 2),
        "claim_p99_ms": round(percentile(claim_ms, 0.99), 2),
        "claim_mean_ms": round(statistics.fmean(claim_ms), 2) if claim_ms else 0.0,
    }


def run_threads(n: int, body: Callable[[int], None]) -> float:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            body(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} workers failed; first: {errors[0]!r}")
    return elapsed


# -- the service ------------------------------------------------------------------


class Plaintext:
    """The service in insecure dev mode: no TLS, no credentials."""

    settings: dict[str, str] = {"INSECURE_DEV": "true"}
    admin_tls: ClientTls | None = None

    def admin_channel(self, target: str) -> grpc.Channel:
        return channel(target)

    def agent_stub(self, target: str, i: int, tenant: str) -> tuple[grpc.Channel, Any, list[tuple[str, str]]]:
        ch = grpc.insecure_channel(target, options=OWN_CONNECTION)
        return ch, pb_grpc.TicketingServiceStub(ch), []


class MeshSecurity:
    """The service as deployed: mutual TLS for the operator, TLS plus a signed
    agent token per call on the agent port."""

    def __init__(self, workdir: Path) -> None:
        self.pki = workdir / "pki"
        issue_mesh(self.pki)
        write_signing_key(self.pki / "agent-signing")
        self.signer = TokenSigner.from_file(self.pki / "agent-signing" / "key.pem")
        self.agent_port = free_port()
        self.settings = {
            "INSECURE_DEV": "false",
            "TLS_DIR": str(self.pki / "ticketing"),
            "AGENT_LISTEN_ADDRESS": f"127.0.0.1:{self.agent_port}",
            "AGENT_TOKEN_PUBLIC_KEYS": str(self.pki / "agent-signing" / "public.pem"),
        }
        self.admin_tls = ClientTls.in_dir(self.pki / "operator-admin")
        self._ca = (self.pki / "ticketing" / "ca.crt").read_bytes()

    def admin_channel(self, target: str) -> grpc.Channel:
        creds, _ = self.admin_tls.credentials()
        return grpc.secure_channel(target, creds)

    def agent_stub(self, target: str, i: int, tenant: str) -> tuple[grpc.Channel, Any, list[tuple[str, str]]]:
        token, _ = self.signer.mint(AgentIdentity(f"agent-{i}", tenant, "coder"))
        ch = grpc.secure_channel(
            f"127.0.0.1:{self.agent_port}",
            grpc.ssl_channel_credentials(self._ca),
            options=[("grpc.ssl_target_name_override", "ticketing"), *OWN_CONNECTION],
        )
        return ch, pb_grpc.TicketingServiceStub(ch), [("authorization", f"Bearer {token}")]


Security = Plaintext | MeshSecurity


def start_ticketing(
    url: str, agents: int, workers: int, security: Security
) -> tuple[subprocess.Popen[bytes], str]:
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return start_service(
        "swarm_ticketing",
        "SWARM_TICKETING_",
        {
            "DATABASE_URL": url,
            "REAPER_INTERVAL_SECONDS": "0",
            "MIGRATE_ON_START": "false",
            "WORKERS": str(workers),
            "GRPC_MAX_WORKERS": str(max(16, agents * 2 // workers)),
            "DB_POOL_SIZE": str(max(4, agents // 2 // workers)),
            "LOG_LEVEL": "WARNING",
            **security.settings,
        },
        target=f"127.0.0.1:{free_port()}",
        tls=security.admin_tls,
    )


def bench_grpc(url: str, agents: int, tickets: int, workers: int, security: Security) -> dict[str, float]:
    proc, target = start_ticketing(url, agents, workers, security)
    tenant = f"bench-grpc-{uuid.uuid4().hex[:6]}"
    try:
        ch = security.admin_channel(target)
        stub = pb_grpc.TicketingServiceStub(ch)
        for start in range(0, tickets, BATCH):
            specs = [
                pb.TicketSpec(key=str(i), name=f"t{i}", priority=i % 5)
                for i in range(start, min(tickets, start + BATCH))
            ]
            stub.CreateProject(
                pb.CreateProjectRequest(tenant_id=tenant, name=f"bench-{start}", tickets=specs)
            )
        ch.close()
        claim_ms: list[list[float]] = [[] for _ in range(agents)]
        done = [0] * agents

        def agent(i: int) -> None:
            # A bare channel: the load generator stands in for remote agents and
            # should not spend this machine's two cores on client-side tracing.
            ach, s, md = security.agent_stub(target, i, tenant)
            seq = 0
            try:
                while True:
                    seq += 1
                    t0 = time.perf_counter()
                    c = s.ClaimTicket(
                        pb.ClaimTicketRequest(
                            tenant_id=tenant, agent_id=f"agent-{i}", request_id=f"{i}-{seq}"
                        ),
                        metadata=md,
                    )
                    claim_ms[i].append((time.perf_counter() - t0) * 1000)
                    if not c.HasField("ticket"):
                        return
                    s.SubmitWork(
                        pb.SubmitWorkRequest(
                            tenant_id=tenant, ticket_id=c.ticket.id, claim_token=c.lease.claim_token
                        ),
                        metadata=md,
                    )
                    done[i] += 1
            finally:
                ach.close()

        elapsed = run_threads(agents, agent)
        if sum(done) != tickets:
            raise RuntimeError(f"grpc run completed {sum(done)} of {tickets} tickets")
        return summary(tickets, elapsed, [m for per in claim_ms for m in per])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- the raw-SQL baseline -----------------------------------------------------------


def seed_raw(url: str, tenant: str, tickets: int) -> None:
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    project = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO projects (id, tenant_id, name, description, ticket_count, created_at)"
                " VALUES (:id, :t, 'raw', '', :n, :now)"
            ),
            {
                "id": project,
                "t": tenant,
                "n": tickets,
                "now": now.replace(tzinfo=None) if "sqlite" in url else now,
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO tickets (id, tenant_id, project_id, ordinal, name, description, type, priority,"
                " state, stages, stage_index, role, pending_parents, parent_ids, child_count, failure_count,"
                " created_at, updated_at)"
                " VALUES (:id, :t, :p, :o, :name, '', 'feature', :prio, 'ready', 'coder', 0, 'coder',"
                " 0, '', 0, 0, :now, :now)"
            ),
            [
                {
                    "id": str(uuid.uuid4()),
                    "t": tenant,
                    "p": project,
                    "o": i,
                    "name": f"t{i}",
                    "prio": i % 5,
                    "now": now.replace(tzinfo=None) if "sqlite" in url else now,
                }
                for i in range(tickets)
            ],
        )
    engine.dispose()


def bench_raw(url: str, agents: int, tickets: int) -> dict[str, float]:
    tenant = f"bench-raw-{uuid.uuid4().hex[:6]}"
    seed_raw(url, tenant, tickets)
    is_sqlite = url.startswith("sqlite")
    claim_ms: list[list[float]] = [[] for _ in range(agents)]
    done = [0] * agents

    if is_sqlite:
        path = str(sa.engine.make_url(url).database)
        claim_sql = CLAIM_SQL.format(p="?", lock="")
        done_sql = DONE_SQL.format(p="?")

        def connect() -> Any:
            conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn

        def tx(conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(sql, args).fetchone()
                conn.execute("COMMIT")
                return row
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        def stamp(now: datetime) -> Any:
            return now.replace(tzinfo=None).isoformat(sep=" ")

    else:
        libpq = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        claim_sql = CLAIM_SQL.format(p="%s", lock="FOR UPDATE SKIP LOCKED")
        done_sql = DONE_SQL.format(p="%s")

        def connect() -> Any:
            return psycopg.connect(libpq, autocommit=True)

        def tx(conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
            cur = conn.execute(sql, args)
            return cur.fetchone() if cur.description else None

        def stamp(now: datetime) -> Any:
            return now

    def agent(i: int) -> None:
        conn = connect()
        try:
            while True:
                now = datetime.now(UTC)
                t0 = time.perf_counter()
                row = tx(
                    conn,
                    claim_sql,
                    (
                        str(uuid.uuid4()),
                        stamp(now + timedelta(minutes=15)),
                        f"agent-{i}",
                        stamp(now),
                        stamp(now),
                        tenant,
                    ),
                )
                claim_ms[i].append((time.perf_counter() - t0) * 1000)
                if row is None:
                    return
                tx(conn, done_sql, (stamp(now), row[0]))
                done[i] += 1
        finally:
            conn.close()

    elapsed = run_threads(agents, agent)
    if sum(done) != tickets:
        raise RuntimeError(f"raw run completed {sum(done)} of {tickets} tickets")
    return summary(tickets, elapsed, [m for per in claim_ms for m in per])


# -- driver ---------------------------------------------------------------------------


def postgres_schema_url(base: str) -> tuple[str, Callable[[], None]]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    libpq = sa.engine.make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(libpq, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", drop


def fresh_database(backend: str, workdir: Path, name: str) -> tuple[str, Callable[[], None]]:
    """An empty, migrated database: each run starts from the same state."""
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'{name}.db'}"
    else:
        base = (
            os.environ.get("SWARM_BENCH_POSTGRES_URL")
            or os.environ.get("SWARM_TEST_POSTGRES_URL")
            or LOCAL_POSTGRES
        )
        url, cleanup = postgres_schema_url(base)
    migrate(url)
    return url, cleanup


def run_backend(backend: str, agents: int, tickets: int, workers: int, workdir: Path) -> dict[str, Any]:
    url, cleanup = fresh_database(backend, workdir, "bench")
    mtls_url, mtls_cleanup = fresh_database(backend, workdir, "bench-mtls")
    try:
        grpc_result = bench_grpc(url, agents, tickets, workers, Plaintext())
        mtls_result = bench_grpc(mtls_url, agents, tickets, workers, MeshSecurity(workdir / backend))
        raw_result = bench_raw(url, agents, tickets)
    finally:
        cleanup()
        mtls_cleanup()
    return {
        "agents": agents,
        "server_processes": workers,
        "grpc": grpc_result,
        "grpc_mtls": mtls_result,
        "raw_sql": raw_result,
        "ratio_grpc_to_raw": round(grpc_result["rate_per_s"] / raw_result["rate_per_s"], 3),
        "ratio_mtls_to_plaintext": round(mtls_result["rate_per_s"] / grpc_result["rate_per_s"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="ticketing server processes (SO_REUSEPORT)"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"benchmark": "claims", "tickets": args.tickets}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            results[backend] = run_backend(backend, args.agents, args.tickets, args.workers, Path(tmp))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
