"""Target pools: the targets table, and the two writes the reconciler makes
to agents it retires (see swarm_vmhost.pool)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_vmhost.agent_pool import PoolTarget
from swarm_vmhost.domain import LIVE_STATES, AgentRole, AgentState
from swarm_vmhost.tables import agent_pool_targets, agents
from swarmcommon.clock import Clock
from swarmcommon.db import Database

P = agent_pool_targets
A = agents


def _target(row: Any) -> PoolTarget:
    m = row._mapping
    return PoolTarget(
        tenant_id=m["tenant_id"],
        role=AgentRole(m["role"]),
        count=m["target_count"],
        epoch=m["epoch"],
        spawned=m["spawned"],
        detail=m["detail"],
        set_at=m["set_at"],
    )


class PoolStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    def set_targets(self, tenant_id: str, pool: Mapping[AgentRole, int]) -> None:
        """Replace the tenant's targets in one transaction. A role kept keeps
        its epoch and spent request ids; a new one starts a fresh epoch."""

        def tx(conn: Connection) -> None:
            now = self.clock.now()
            conn.execute(sa.delete(P).where(P.c.tenant_id == tenant_id, P.c.role.not_in(list(pool))))
            for role, count in pool.items():
                insert = self._insert(P).values(
                    tenant_id=tenant_id,
                    role=role,
                    target_count=count,
                    epoch=uuid.uuid4().hex[:12],
                    spawned=0,
                    detail="",
                    set_at=now,
                )
                # A concurrent set of the same new role: the later count wins, one epoch stays.
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[P.c.tenant_id, P.c.role],
                        set_={"target_count": count, "set_at": now},
                    )
                )

        self.db.transaction(tx)

    def targets(self, tenant_id: str | None = None) -> list[PoolTarget]:
        """The tenant's targets (None: every tenant's), in tenant and role order."""
        query = sa.select(P).order_by(P.c.tenant_id, P.c.role)
        if tenant_id is not None:
            query = query.where(P.c.tenant_id == tenant_id)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return [_target(r) for r in rows]

    def live_counts(self, tenant_id: str) -> Counter[AgentRole]:
        query = (
            sa.select(A.c.role, sa.func.count())
            .where(A.c.tenant_id == tenant_id, A.c.state.in_(tuple(LIVE_STATES)))
            .group_by(A.c.role)
        )
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return Counter({AgentRole(role): int(n) for role, n in rows})

    def spent(self, target: PoolTarget, spawned: int, detail: str) -> None:
        """Request ids up to `spawned` are spent (never lowered: a slower
        concurrent pass cannot undo a faster one), and why the pass fell short."""

        def tx(conn: Connection) -> None:
            mine = (P.c.tenant_id == target.tenant_id, P.c.role == target.role, P.c.epoch == target.epoch)
            conn.execute(sa.update(P).where(*mine, P.c.spawned < spawned).values(spawned=spawned))
            conn.execute(sa.update(P).where(*mine).values(detail=detail))

        self.db.transaction(tx)

    def retire(self, agent_id: str, reason: str) -> bool:
        """READY and idle -> STOPPING, in one statement; False when the agent
        is no longer idle (it took a ticket) or another pass retired it."""
        changed = self.db.transaction(
            lambda conn: (
                conn.execute(
                    sa.update(A)
                    .where(A.c.id == agent_id, A.c.state == AgentState.READY, A.c.ticket_id.is_(None))
                    .values(state=AgentState.STOPPING, state_reason=reason, updated_at=self.clock.now())
                ).rowcount
            )
        )
        return bool(changed)
