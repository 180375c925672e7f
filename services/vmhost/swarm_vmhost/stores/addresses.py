"""IPAM: the guests' addresses on the bridge, a row per address in use.

The address is the table's primary key: two concurrent spawns can never hold
one address, and the loser of a race takes the next free one. These
functions run inside the caller's transaction, so an address is taken and
given back together with the agent row that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_vmhost.tables import addresses
from swarmcommon.errors import Unavailable


class AddressPool:
    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = list(pool)

    def __len__(self) -> int:
        return len(self.pool)

    def take(self, conn: Connection, agent_id: str, now: datetime) -> str:
        """The first free address, now held by `agent_id`; IntegrityError when a
        concurrent spawn took it first (the caller retries)."""
        used = {r.address for r in conn.execute(sa.select(addresses.c.address))}
        free = next((a for a in self.pool if a not in used), None)
        if free is None:
            raise Unavailable(f"the address pool is exhausted ({len(self.pool)} guests on this host)")
        conn.execute(sa.insert(addresses).values(address=free, agent_id=agent_id, created_at=now))
        return free

    def give_back(self, conn: Connection, agent_id: str) -> None:
        conn.execute(sa.delete(addresses).where(addresses.c.agent_id == agent_id))
