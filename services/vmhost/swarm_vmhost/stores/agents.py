"""Agents: their rows, their lifecycle transitions and their events (written
to the outbox in the same transaction), and TerminateAgent's request ids."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_vmhost.domain import (
    LIVE_STATES,
    Agent,
    AgentQuery,
    AgentState,
    DriverName,
    EventType,
    GuestHandle,
    Heartbeat,
    SpawnRequest,
    TerminateRequest,
    final_reason,
    ticket_since,
)
from swarm_vmhost.stores.addresses import AddressPool
from swarm_vmhost.stores.events import WRITER, agent_event
from swarm_vmhost.stores.rows import agent_from_row as _agent
from swarm_vmhost.tables import agents, terminate_requests
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, NotFound, Unavailable
from swarmcommon.pagination import Page

A = agents
T = terminate_requests
LIVE = tuple(LIVE_STATES)


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id} not found", resource_type="agent", resource_name=agent_id)


def _gone(agent: Agent) -> FailedPrecondition:
    return FailedPrecondition(
        f"agent {agent.id} is {agent.state} ({agent.state_reason}); its leases were released: stop",
        reason="AGENT_GONE",
    )


class AgentStore:
    def __init__(self, db: Database, clock: Clock, addresses: AddressPool) -> None:
        self.db = db
        self.clock = clock
        self.addresses = addresses
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    def _one(self, conn: Connection, agent_id: str) -> Agent:
        return _agent(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())

    # -- reads ------------------------------------------------------------------------------------

    def get(self, tenant_id: str, agent_id: str) -> Agent:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(A).where(A.c.tenant_id == tenant_id, A.c.id == agent_id)
            ).first(),
            write=False,
        )
        if row is None:
            raise _not_found(agent_id)
        return _agent(row)

    def get_any(self, agent_id: str) -> Agent:
        return self.db.transaction(lambda conn: self._one(conn, agent_id), write=False)

    def find(self, agent_id: str) -> Agent | None:
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(A).where(A.c.id == agent_id)).first(), write=False
        )
        return _agent(row) if row is not None else None

    def revoked_since(self, since: datetime) -> list[Agent]:
        """Agents that left the live states at or after `since` (their tokens
        are revoked), oldest first. An agent's row changes only on its way
        out once it is no longer live, so `updated_at` is when it left (or later)."""
        rows = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(A)
                .where(A.c.state.not_in(LIVE), A.c.updated_at >= since)
                .order_by(A.c.updated_at, A.c.id)
            ).all(),
            write=False,
        )
        return [_agent(r) for r in rows]

    def by_request(self, tenant_id: str, request_id: str) -> Agent | None:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(A).where(A.c.tenant_id == tenant_id, A.c.request_id == request_id)
            ).first(),
            write=False,
        )
        return _agent(row) if row else None

    def live(self) -> list[Agent]:
        rows = self.db.transaction(
            lambda conn: conn.execute(sa.select(A).where(A.c.state.in_(LIVE))).all(), write=False
        )
        return [_agent(r) for r in rows]

    def _select(self, *where: Any, limit: int | None = None) -> list[Agent]:
        query = sa.select(A).where(*where).order_by(A.c.updated_at, A.c.id).limit(limit)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return [_agent(r) for r in rows]

    def unfinished(self, changed_before: datetime | None) -> list[Agent]:
        """Agents on their way out (STOPPING, FAILED) whose row last changed
        before `changed_before` (None: any): a terminate that did not finish."""
        where: list[Any] = [A.c.state.in_((AgentState.STOPPING, AgentState.FAILED))]
        if changed_before is not None:
            where.append(A.c.updated_at < changed_before)
        return self._select(*where)

    def unstarted(self, created_before: datetime | None) -> list[Agent]:
        """STARTING agents without a guest recorded, created before
        `created_before` (None: any): a spawn that did not finish."""
        where: list[Any] = [A.c.state == AgentState.STARTING, A.c.handle.is_(None)]
        if created_before is not None:
            where.append(A.c.created_at < created_before)
        return self._select(*where)

    def unsettled(self, limit: int) -> list[Agent]:
        """Terminated agents that may still hold a max_vms reservation, oldest change first."""
        return self._select(
            A.c.state == AgentState.TERMINATED, A.c.reservation_settled_at.is_(None), limit=limit
        )

    def list_agents(self, query: AgentQuery) -> Page[Agent]:
        q = sa.select(A).where(A.c.tenant_id == query.tenant_id)
        q = q.where(A.c.state == query.state) if query.state else q.where(A.c.state != AgentState.TERMINATED)
        if query.role:
            q = q.where(A.c.role == query.role)
        if query.template:
            q = q.where(A.c.template == query.template)
        filters = ["agents", query.tenant_id, query.state, query.role, query.template]
        order = [A.c.created_at, A.c.id]
        return keyset.listing(self.db, q, order, filters, query.page_size, query.page_token, _agent)

    # -- spawning ---------------------------------------------------------------------------------

    def create(
        self, agent_id: str, request: SpawnRequest, driver: DriverName, replaces: str | None
    ) -> tuple[Agent, bool]:
        """The agent row, STARTING, with an address from the pool; or, when an
        agent already has this request id, that agent and False."""
        for _ in range(len(self.addresses) + 1):
            try:
                created = self.db.transaction(
                    lambda conn: self._insert_agent(conn, agent_id, request, driver, replaces)
                )
                return created, True
            except IntegrityError:
                prior = self.by_request(request.tenant_id, request.request_id) if request.request_id else None
                if prior is not None:
                    return prior, False  # a concurrent retry of the same spawn won
                # else someone took the address we picked: take the next one
        raise Unavailable("could not allocate an address; retry")

    def _insert_agent(
        self, conn: Connection, agent_id: str, request: SpawnRequest, driver: DriverName, replaces: str | None
    ) -> Agent:
        now = self.clock.now()
        address = self.addresses.take(conn, agent_id, now)
        conn.execute(
            sa.insert(A).values(
                id=agent_id,
                tenant_id=request.tenant_id,
                template=request.template,
                role=request.role,
                driver=driver,
                state=AgentState.STARTING,
                address=address,
                replaces_agent_id=replaces,
                request_id=request.request_id,
                created_at=now,
                updated_at=now,
            )
        )
        return self._one(conn, agent_id)

    def discard(self, agent_id: str, keep_address: bool = False) -> None:
        """Forget an agent that never started (quota refused it): no row, and
        no address unless `keep_address` (its guest, readied ahead, keeps it)."""

        def tx(conn: Connection) -> None:
            if not keep_address:
                self.addresses.give_back(conn, agent_id)
            conn.execute(sa.delete(A).where(A.c.id == agent_id, A.c.state == AgentState.STARTING))

        self.db.transaction(tx)

    def reserved(self, agent_id: str, reservation_id: str | None) -> Agent:
        def tx(conn: Connection) -> Agent:
            conn.execute(sa.update(A).where(A.c.id == agent_id).values(reservation_id=reservation_id))
            return self._one(conn, agent_id)

        return self.db.transaction(tx)

    def started(self, agent_id: str, handle: GuestHandle) -> Agent:
        def tx(conn: Connection) -> Agent:
            now = self.clock.now()
            raw = json.dumps(dataclasses.asdict(handle))
            conn.execute(sa.update(A).where(A.c.id == agent_id).values(handle=raw, updated_at=now))
            agent = self._one(conn, agent_id)
            event = agent_event(
                EventType.STARTED,
                agent,
                replaces_agent_id=agent.replaces_agent_id,
                unenforced_limits=list(agent.unenforced_limits),
            )
            WRITER.add(conn, [event], now)
            return agent

        return self.db.transaction(tx)

    def start_failed(self, agent_id: str, reason: str, reservation_settled: bool) -> Agent:
        """TERMINATED at once, its address back in the pool and its request id
        freed: the failed attempt is not an answer a retry should replay.
        `reservation_settled`: it holds no max_vms reservation any more."""

        def tx(conn: Connection) -> Agent:
            now = self.clock.now()
            settled = now if reservation_settled else None
            agent = self._end(conn, agent_id, reason, now, request_id=None, reservation_settled_at=settled)
            WRITER.add(conn, [agent_event(EventType.FAILED, agent, reason=reason)], now)
            return agent

        return self.db.transaction(tx)

    # -- heartbeats -------------------------------------------------------------------------------

    def heartbeat(self, beat: Heartbeat) -> Agent:
        """Record what a live guest says it is doing; FAILED_PRECONDITION once it is gone."""

        def tx(conn: Connection) -> Agent:
            row = conn.execute(
                sa.select(A).where(A.c.tenant_id == beat.tenant_id, A.c.id == beat.agent_id)
            ).first()
            if row is None:
                raise _not_found(beat.agent_id)
            agent = _agent(row)
            if not agent.is_live:
                raise _gone(agent)
            now = self.clock.now()
            since = ticket_since(agent.ticket_id, agent.ticket_since, beat.ticket_id, now)
            changed = conn.execute(
                # Still live: a concurrent fail or terminate wins over a heartbeat.
                sa.update(A)
                .where(A.c.id == agent.id, A.c.state.in_(LIVE))
                .values(
                    state=beat.state,
                    ticket_id=beat.ticket_id,
                    ticket_since=since,
                    last_heartbeat_at=now,
                    updated_at=now,
                )
            ).rowcount
            if not changed:
                raise _gone(self._one(conn, agent.id))
            return self._one(conn, agent.id)

        return self.db.transaction(tx)

    # -- ending -----------------------------------------------------------------------------------

    def fail(self, agent_id: str, reason: str) -> Agent | None:
        """LIVE -> FAILED once; None when it was no longer live (someone else acts)."""

        def tx(conn: Connection) -> Agent | None:
            now = self.clock.now()
            changed = conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id, A.c.state.in_(LIVE))
                .values(state=AgentState.FAILED, state_reason=reason, updated_at=now)
            ).rowcount
            if not changed:
                return None
            agent = self._one(conn, agent_id)
            event = agent_event(EventType.FAILED, agent, reason=reason, ticket_id=agent.ticket_id)
            WRITER.add(conn, [event], now)
            return agent

        return self.db.transaction(tx)

    def stopping(self, agent_id: str, reason: str) -> None:
        """LIVE -> STOPPING before the guest is stopped, so the monitor does not
        take its exit for a crash (a failed agent stays FAILED)."""
        self.db.transaction(
            lambda conn: conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id, A.c.state.in_(LIVE))
                .values(state=AgentState.STOPPING, state_reason=reason, updated_at=self.clock.now())
            )
        )

    def terminated(
        self,
        agent_id: str,
        reason: str,
        request: TerminateRequest | None = None,
        *,
        reservation_settled: bool = False,
    ) -> Agent:
        """TERMINATED, its address back in the pool; idempotent. The request
        that asked for it is remembered with it, so its retries replay.
        Unless `reservation_settled`, the reconciler makes sure its max_vms
        reservation is given back."""

        def tx(conn: Connection) -> Agent:
            now = self.clock.now()
            if request is not None and request.request_id:
                self._remember(conn, request, now)
            agent = self._one(conn, agent_id)
            if agent.state == AgentState.TERMINATED:
                return agent
            done = self._end(
                conn,
                agent_id,
                final_reason(agent.state, agent.state_reason, reason),
                now,
                reservation_settled_at=now if reservation_settled else None,
            )
            if agent.state != AgentState.FAILED:  # a failure was announced when it happened
                WRITER.add(conn, [agent_event(EventType.COMPLETED, done, reason=reason)], now)
            return done

        return self.db.transaction(tx)

    def reservation_settled(self, agent_id: str) -> None:
        """The agent holds no max_vms reservation any more."""
        self.db.transaction(
            lambda conn: conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id, A.c.reservation_settled_at.is_(None))
                .values(reservation_settled_at=self.clock.now())
            )
        )

    def _end(self, conn: Connection, agent_id: str, reason: str, now: datetime, **extra: Any) -> Agent:
        """TERMINATED with `reason`; its address goes back to the pool."""
        self.addresses.give_back(conn, agent_id)
        conn.execute(
            sa.update(A)
            .where(A.c.id == agent_id)
            .values(
                state=AgentState.TERMINATED,
                state_reason=reason,
                address=None,
                ticket_id=None,
                ticket_since=None,
                updated_at=now,
                terminated_at=now,
                **extra,
            )
        )
        return self._one(conn, agent_id)

    def _remember(self, conn: Connection, request: TerminateRequest, now: datetime) -> None:
        # A concurrent retry may have remembered it first; either row is the same request.
        conn.execute(
            self._insert(T)
            .values(
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                agent_id=request.agent_id,
                reason=request.reason,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[T.c.tenant_id, T.c.request_id])
        )

    def terminate_request(self, tenant_id: str, request_id: str) -> TerminateRequest | None:
        """The first TerminateAgent call with this request id, if it completed."""
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(T).where(T.c.tenant_id == tenant_id, T.c.request_id == request_id)
            ).first(),
            write=False,
        )
        if row is None:
            return None
        return TerminateRequest(row.tenant_id, row.agent_id, row.reason, row.request_id)
