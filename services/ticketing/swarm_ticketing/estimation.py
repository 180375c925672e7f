"""Time estimates and a project's ETA (seed §9): pure rules, no SQL.

- **Complexity** 1–10 from the ticket's text and its dependencies: base 5;
  description over 2,000 characters +2, over 1,000 +1, under 200 −1; a
  complex keyword (refactor, migrate, integrate, security, performance) +2;
  a simple one (typo, rename, update text, fix style) −2; more than three
  dependencies +1; clamped to 1..10.
- **Estimate**: from the tenant's own history once a category has at least
  `MIN_SAMPLES` done tickets — first (complexity, type), confidence `high`;
  then (type), confidence `medium` — as optimistic 0.7 × median, expected
  the median, pessimistic the 90th percentile; else the seed's heuristic
  table, ×0.5 / ×1 / ×2, confidence `low`. Never across tenants.
- **Actual minutes**: the time the ticket's leases were held (each stage
  attempt from its claim to its end), not the time it waited to be claimed.
- **ETA**: the remaining expected work spread over the agents actually
  working the project, but never shorter than the remaining critical path
  of the dependency graph (a chain cannot be worked in parallel).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BASE_MINUTES = {1: 5, 2: 10, 3: 15, 4: 25, 5: 40, 6: 60, 7: 90, 8: 120, 9: 180, 10: 300}
COMPLEX_KEYWORDS = ("refactor", "migrate", "integrate", "security", "performance")
SIMPLE_KEYWORDS = ("typo", "rename", "update text", "fix style")
MIN_SAMPLES = 10


class Confidence(enum.StrEnum):
    HIGH = "high"  # the tenant's (complexity, type) history
    MEDIUM = "medium"  # the tenant's (type) history
    LOW = "low"  # the heuristic table


@dataclass(frozen=True)
class Estimate:
    complexity: int
    optimistic: int
    expected: int
    pessimistic: int
    confidence: Confidence
    samples: int = 0

    def covers(self, minutes: float) -> bool:
        return self.optimistic <= minutes <= self.pessimistic


def complexity(description: str, dependency_count: int) -> int:
    text = description.lower()
    score = 5
    if len(description) > 2000:
        score += 2
    elif len(description) > 1000:
        score += 1
    elif len(description) < 200:
        score -= 1
    if any(k in text for k in COMPLEX_KEYWORDS):
        score += 2
    if any(k in text for k in SIMPLE_KEYWORDS):
        score -= 2
    if dependency_count > 3:
        score += 1
    return max(1, min(10, score))


def _round(minutes: float) -> int:
    """Half up, as the seed's Math.round (Python's round() halves to even)."""
    return math.floor(minutes + 0.5)


def heuristic(score: int) -> Estimate:
    base = BASE_MINUTES[score]
    return Estimate(score, _round(base * 0.5), base, base * 2, Confidence.LOW)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's PERCENTILE_CONT)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def from_history(score: int, samples: Sequence[float], confidence: Confidence) -> Estimate:
    ordered = sorted(samples)
    median = percentile(ordered, 0.5)
    return Estimate(
        score,
        max(1, _round(median * 0.7)),
        max(1, _round(median)),
        max(1, _round(percentile(ordered, 0.9))),
        confidence,
        len(ordered),
    )


def estimate(score: int, by_category: Sequence[float], by_type: Sequence[float]) -> Estimate:
    """The estimate for a ticket of complexity `score`, given the tenant's
    actual minutes for its (complexity, type) and for its type."""
    if len(by_category) >= MIN_SAMPLES:
        return from_history(score, by_category, Confidence.HIGH)
    if len(by_type) >= MIN_SAMPLES:
        return from_history(score, by_type, Confidence.MEDIUM)
    return heuristic(score)


def critical_path(remaining: Mapping[str, float], parents: Mapping[str, Sequence[str]]) -> float:
    """The longest chain of remaining minutes through the dependency graph
    (`parents`: ticket -> the tickets it waits for; finished ones are absent
    from `remaining` and count zero)."""
    longest: dict[str, float] = {}
    for start in remaining:
        stack = [(start, False)]
        while stack:  # iterative depth-first: 5,000-ticket chains
            node, expanded = stack.pop()
            if node in longest:
                continue
            waits = [p for p in parents.get(node, ()) if p in remaining]
            if expanded:
                longest[node] = remaining[node] + max((longest[p] for p in waits), default=0.0)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in waits if p not in longest)
    return max(longest.values(), default=0.0)


def eta_minutes(remaining_total: float, path: float, working_agents: int) -> float:
    return max(path, remaining_total / max(1, working_agents))
