"""The tenant's recent calls to a model, from the usage ledger: what the
next call's output estimate is made of."""

from __future__ import annotations

import sqlalchemy as sa

from swarm_telemetry.tables import usage_records
from swarmcommon.db import Database

U = usage_records


class OutputHistory:
    def __init__(self, db: Database, calls: int) -> None:
        self.db = db
        self.calls = calls

    def recent_output_tokens(self, tenant_id: str, model: str) -> list[int]:
        """Output tokens of the tenant's last `calls` recorded calls to `model`."""
        query = (
            sa.select(U.c.output_tokens)
            .where(U.c.tenant_id == tenant_id, U.c.model == model)
            .order_by(U.c.usage_at.desc())
            .limit(self.calls)
        )
        rows = self.db.transaction(lambda conn: conn.execute(query).scalars().all(), write=False)
        return [int(r) for r in rows]
