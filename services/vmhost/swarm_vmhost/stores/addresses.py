"""IPAM: the guests' addresses on the bridge, a row per address in use.

The address is the table's primary key: two concurrent spawns can never hold
one address, and the loser of a race takes the next free one. These
functions run inside the caller's transaction, so an address is taken and
given back together with the agent row that holds it.

A guest readied ahead of demand (the gvisor driver's, see
drivers/gvisor_ahead.py) holds its address before its agent exists: under
the id the agent will take, so the spawn that takes the guest finds the
address already its own. Held addresses nobody took are given back when
the guest is dropped, or after a crash by `release_unowned`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_vmhost.tables import addresses, agents
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import Unavailable


class AddressPool:
    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = list(pool)

    def __len__(self) -> int:
        return len(self.pool)

    def take(self, conn: Connection, agent_id: str, now: datetime) -> str:
        """The first free address, now held by `agent_id` (or the one it holds
        already); IntegrityError when a concurrent spawn took it first (the
        caller retries)."""
        held = conn.execute(sa.select(addresses.c.address).where(addresses.c.agent_id == agent_id)).scalar()
        if held is not None:
            return str(held)
        used = {r.address for r in conn.execute(sa.select(addresses.c.address))}
        free = next((a for a in self.pool if a not in used), None)
        if free is None:
            raise Unavailable(f"the address pool is exhausted ({len(self.pool)} guests on this host)")
        conn.execute(sa.insert(addresses).values(address=free, agent_id=agent_id, created_at=now))
        return free

    def give_back(self, conn: Connection, agent_id: str) -> None:
        conn.execute(sa.delete(addresses).where(addresses.c.agent_id == agent_id))


class HeldAddresses:
    """Addresses held, in their own transactions, for agents that do not
    exist yet: guests readied ahead of demand."""

    def __init__(self, db: Database, clock: Clock, pool: AddressPool) -> None:
        self.db = db
        self.clock = clock
        self.pool = pool

    def hold(self, agent_id: str) -> str:
        for _ in range(len(self.pool) + 1):
            try:
                return self.db.transaction(lambda conn: self.pool.take(conn, agent_id, self.clock.now()))
            except IntegrityError:
                continue  # a concurrent spawn took the one we picked
        raise Unavailable("could not allocate an address; retry")

    def release(self, agent_ids: Sequence[str]) -> None:
        """Give back what these ids hold, unless an agent took it meanwhile."""
        owned = sa.select(agents.c.id).where(agents.c.id.in_(agent_ids))
        held = addresses.c.agent_id
        self.db.transaction(
            lambda conn: conn.execute(sa.delete(addresses).where(held.in_(agent_ids), held.not_in(owned)))
        )

    def release_unowned(self) -> list[str]:
        """On start: what was held for guests no agent took before a crash."""
        held = addresses.c.agent_id
        orphans = sa.select(held).where(~sa.exists().where(agents.c.id == held))
        ids = self.db.transaction(lambda conn: [str(r.agent_id) for r in conn.execute(orphans)])
        if ids:
            self.release(ids)
        return ids
