"""Alembic, driven from code: each service keeps its own migrations folder
and version table, and runs them on SQLite and PostgreSQL alike.

A service's `migrations/env.py` is two lines:

    from swarmcommon.migrations import run_env
    from swarm_ticketing.tables import metadata
    run_env(metadata)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config

from swarmcommon.db import create_engine, is_sqlite


def alembic_config(url: str, script_location: str | Path, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["url"] = url
    cfg.attributes["version_table"] = version_table
    return cfg


def upgrade(url: str, script_location: str | Path, version_table: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url, script_location, version_table), revision)


def downgrade(url: str, script_location: str | Path, version_table: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url, script_location, version_table), revision)


def run_env(metadata: sa.MetaData) -> None:
    """Body of every service's Alembic env.py (online mode only)."""
    cfg = context.config
    url = cfg.attributes["url"]
    engine = create_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(swarm_write=True)
            context.configure(
                connection=conn,
                target_metadata=metadata,
                version_table=cfg.attributes["version_table"],
                render_as_batch=is_sqlite(url),
                transactional_ddl=True,
            )
            with context.begin_transaction():
                if conn.dialect.name == "postgresql":
                    # Replicas starting together migrate one at a time; the
                    # lock is released when this transaction ends.
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                        {"name": cfg.attributes["version_table"]},
                    )
                context.run_migrations()
    finally:
        engine.dispose()
