"""Keyset paging shared by every listing: complete, stable pages in both
directions, and forged positions refused by the column's own type."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from swarmcommon import keyset
from swarmcommon.db import Database, create_engine
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import PageToken
from tests.support.harness import BACKENDS

pytestmark = BACKENDS

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("id", sa.String(8), primary_key=True),
)


@pytest.fixture
def database(db: str) -> Iterator[Database]:
    database = Database(create_engine(db, pool_size=2))
    metadata.create_all(database.engine)
    database.transaction(
        lambda conn: conn.execute(sa.insert(items), [{"rank": i % 4, "id": f"i{i:03d}"} for i in range(25)])
    )
    yield database
    database.engine.dispose()


def _walk(database: Database, descending: bool) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        page = keyset.listing(
            database,
            sa.select(items),
            [items.c.rank, items.c.id],
            ["items"],
            7,
            token,
            lambda r: str(r.id),
            descending=descending,
        )
        seen.extend(page.items)
        token = page.next_page_token
        if not token:
            return seen


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_pages_cover_every_row_once_in_order(database: Database, descending: bool) -> None:
    expected = sorted((i % 4, f"i{i:03d}") for i in range(25))
    if descending:
        expected.reverse()
    assert _walk(database, descending) == [i for _, i in expected]


def _forged(position: list[object]) -> str:
    body = json.dumps({"f": PageToken(["items"])._fingerprint, "k": position})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


@pytest.mark.parametrize("rank", [2**31, -(2**31) - 1, 2**62], ids=["over", "under", "far-over"])
def test_a_position_too_large_for_its_column_is_invalid_argument(database: Database, rank: int) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        keyset.listing(
            database, sa.select(items), [items.c.rank, items.c.id], ["items"], 5, _forged([rank, "x"]), str
        )


def test_the_column_types_shape_the_position(database: Database) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        keyset.listing(
            database, sa.select(items), [items.c.rank, items.c.id], ["items"], 5, _forged(["1", "x"]), str
        )
