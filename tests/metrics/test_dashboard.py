"""deploy/grafana/swarm-dashboard.json queries the series Swarm exports:
every PromQL expression names metrics swarmcommon.metrics defines (with the
suffixes Prometheus gives them), groups and filters only by their labels,
and every series Swarm defines is on some panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from swarmcommon import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "swarm-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
NAME = re.compile(r"\b(swarm_[a-z0-9_]+)\b")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


def defined() -> dict[str, tuple[str, frozenset[str]]]:
    """Every sample name Swarm exports -> (its family, its label names)."""
    names: dict[str, tuple[str, frozenset[str]]] = {
        metrics.AGENTS_BY_STATE: (metrics.AGENTS_BY_STATE, frozenset({"state"}))
    }
    for registry in metrics.REGISTRIES.values():
        for collector in list(registry._collector_to_names):  # noqa: SLF001 - the registry lists no public way
            labels = frozenset(getattr(collector, "_labelnames", ()))
            for family in collector.describe():  # type: ignore[attr-defined]
                for suffix in SUFFIXES[family.type]:
                    names[family.name + suffix] = (
                        family.name,
                        labels | ({"le"} if suffix == "_bucket" else set()),
                    )
    return names


def exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return found


def test_the_dashboard_is_grafana_json_with_queries() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"]
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12 and all(p["targets"] and p["gridPos"] for p in graphs)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource"}


@pytest.mark.parametrize(("title", "expr"), exprs(), ids=[f"{t}/{e[:40]}" for t, e in exprs()])
def test_every_expression_names_defined_series_and_labels(title: str, expr: str) -> None:
    names = defined()
    used = NAME.findall(expr)
    assert used, f"{title}: {expr} names no Swarm series"
    unknown = [n for n in used if n not in names]
    assert not unknown, f"{title}: {unknown} are not defined in swarmcommon.metrics"
    labels = frozenset().union(*(names[n][1] for n in used))
    grouped = {x.strip() for g in GROUPING.findall(expr) for x in g.split(",") if x.strip()}
    filtered = set(MATCHER.findall(expr))
    assert grouped | filtered <= labels, (
        f"{title}: labels {sorted((grouped | filtered) - labels)} do not exist"
    )


def test_every_series_is_on_the_dashboard() -> None:
    shown = {defined()[n][0] for _, e in exprs() for n in NAME.findall(e)}
    families = {family for family, _ in defined().values()}
    assert families - shown == set(), "series no panel shows"
