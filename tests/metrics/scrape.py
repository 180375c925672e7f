"""Reading a /metrics endpoint the way Prometheus does: over HTTP, parsed
with prometheus_client's own text parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# A uuid, or the hex/uuid suffix tests give their tenants and agents.
ID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{8,}|(tenant|agent)-[0-9a-f]{4,}", re.IGNORECASE)


@dataclass
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def names(self) -> set[str]:
        return {s.name for s in self.samples} | set(self.families)

    def label_values(self) -> set[str]:
        return {v for s in self.samples for v in s.labels.values()}


def scrape(url: str) -> Scrape:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    families = list(text_string_to_metric_families(r.text))
    return Scrape({f.name: f.type for f in families}, [s for f in families for s in f.samples])


def metrics_url(port: int | None) -> str:
    assert port, "the service serves no /metrics"
    return f"http://127.0.0.1:{port}/metrics"


def assert_bounded(result: Scrape) -> None:
    """No label value is an id (a series per tenant, ticket or agent)."""
    offending = sorted(v for v in result.label_values() if ID_LIKE.search(v))
    assert not offending, f"label values that look like ids: {offending}"
