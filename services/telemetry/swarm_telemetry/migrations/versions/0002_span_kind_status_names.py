"""Span kind and status are stored as their domain names (SpanKind /
SpanStatus values), NULL for OpenTelemetry's unspecified kind / unset status,
instead of OTLP's numbers: the database holds what the code and JSON show.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# OTLP number -> name, as of this revision (later renames do not rewrite history).
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUSES = {1: "ok", 2: "error"}


def _to_names(column: str, names: dict[int, str]) -> str:
    whens = " ".join(f"WHEN {number} THEN '{name}'" for number, name in names.items())
    return f"CASE {column} {whens} ELSE NULL END"


def _to_numbers(column: str, names: dict[int, str]) -> str:
    whens = " ".join(f"WHEN '{name}' THEN {number}" for number, name in names.items())
    return f"CASE {column} {whens} ELSE 0 END"


def _swap(
    new_type: sa.types.TypeEngine[object], nullable: bool, conversion: Callable[[str, dict[int, str]], str]
) -> None:
    """Replace `kind` and `status` by columns of `new_type`, each row
    converted by the SQL expression `conversion` builds."""
    with op.batch_alter_table("spans") as batch:
        batch.add_column(sa.Column("kind_new", new_type, nullable=True))
        batch.add_column(sa.Column("status_new", new_type, nullable=True))
    kind, status = conversion("kind", KINDS), conversion("status", STATUSES)
    op.execute(f"UPDATE spans SET kind_new = {kind}, status_new = {status}")
    with op.batch_alter_table("spans") as batch:
        batch.drop_column("kind")
        batch.drop_column("status")
    with op.batch_alter_table("spans") as batch:
        batch.alter_column("kind_new", new_column_name="kind", existing_type=new_type, nullable=nullable)
        batch.alter_column("status_new", new_column_name="status", existing_type=new_type, nullable=nullable)


def upgrade() -> None:
    _swap(sa.String(length=16), True, _to_names)


def downgrade() -> None:
    _swap(sa.SmallInteger(), False, _to_numbers)
