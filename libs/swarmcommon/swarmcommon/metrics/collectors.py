"""Series read at scrape time rather than counted as events happen."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from swarmcommon.db import Database


class RowCounts:
    """A gauge computed at scrape time: a table's rows by the value of one
    column (one GROUP BY per scrape). Every value of `values` is reported,
    0 when no row has it; a value outside them is left out (labels stay a
    fixed set whatever the table holds)."""

    def __init__(
        self, name: str, documentation: str, label: str, db: Database, column: Any, values: Iterable[str]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.values = [str(v) for v in values]
        self._count: Callable[[], list[Any]] = lambda: db.transaction(
            lambda conn: list(conn.execute(sa.select(column, sa.func.count()).group_by(column)).all()),
            write=False,
        )

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self) -> Iterator[Metric]:
        counts = dict.fromkeys(self.values, 0)
        for value, count in self._count():
            if str(value) in counts:
                counts[str(value)] = int(count)
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in counts.items():
            family.add_metric([value], count)
        yield family
