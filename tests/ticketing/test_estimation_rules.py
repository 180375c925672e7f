"""The estimation rules (seed §9), pure: complexity factors, the heuristic
table, estimates from history with their fallbacks, the critical path, the ETA."""

from __future__ import annotations

import pytest

from swarm_ticketing import estimation as e
from swarm_ticketing.estimation import Confidence


@pytest.mark.parametrize(
    ("description", "deps", "score"),
    [
        ("short", 0, 4),  # base 5, under 200 characters -1
        ("x" * 500, 0, 5),
        ("x" * 1500, 0, 6),
        ("x" * 2500, 0, 7),
        ("Migrate the billing schema", 0, 6),  # complex keyword +2, short -1
        ("Fix a typo in the footer", 0, 2),  # simple keyword -2, short -1
        ("x" * 2500 + " refactor for performance", 4, 10),  # 5 + 2 + 2 + 1
        ("rename " * 300, 0, 5),  # 2,100 characters +2, a simple keyword -2
        ("short", 4, 5),  # more than three dependencies +1
    ],
)
def test_complexity_follows_the_seeds_factors(description: str, deps: int, score: int) -> None:
    assert e.complexity(description, deps) == score


def test_complexity_is_clamped() -> None:
    assert e.complexity("typo", 0) == 2 and e.complexity("fix style typo", 0) == 2
    assert e.complexity("x" * 3000 + "security migrate", 9) == 10
    assert e.complexity("typo " * 10, 0) >= 1


def test_the_heuristic_table() -> None:
    low = e.heuristic(8)
    assert (low.optimistic, low.expected, low.pessimistic, low.confidence) == (60, 120, 240, Confidence.LOW)
    assert [e.heuristic(s).expected for s in range(1, 11)] == [5, 10, 15, 25, 40, 60, 90, 120, 180, 300]
    assert e.heuristic(4).optimistic == 13, "half up, as the seed's Math.round (12.5 -> 13)"


def test_history_wins_once_a_category_has_ten_samples() -> None:
    ten = [10, 12, 14, 16, 18, 20, 22, 24, 26, 100]
    high = e.estimate(4, ten, [])
    # median 19, p90 = 26 + (100 - 26) * 0.1 = 33.4
    assert (high.optimistic, high.expected, high.pessimistic) == (13, 19, 33)
    assert (high.confidence, high.samples) == (Confidence.HIGH, 10)
    medium = e.estimate(4, ten[:9], ten)
    assert medium.confidence is Confidence.MEDIUM and medium.expected == 19
    assert e.estimate(4, ten[:9], ten[:9]) == e.heuristic(4)


def test_percentile_interpolates_as_postgres_does() -> None:
    assert e.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert e.percentile([5], 0.9) == 5


def test_the_critical_path_is_the_longest_remaining_chain() -> None:
    remaining = {"a": 10.0, "b": 20.0, "c": 5.0, "d": 40.0}
    parents = {"b": ["a"], "c": ["b", "done"], "d": []}
    assert e.critical_path(remaining, parents) == 40.0  # d alone beats a -> b -> c (35)
    remaining["c"] = 15.0
    assert e.critical_path(remaining, parents) == 45.0
    chain = {str(i): 1.0 for i in range(5000)}
    assert e.critical_path(chain, {str(i): [str(i - 1)] for i in range(1, 5000)}) == 5000.0


def test_the_eta_spreads_work_over_agents_but_not_below_the_critical_path() -> None:
    assert e.eta_minutes(100, 30, 0) == 100  # nobody working: one agent's pace
    assert e.eta_minutes(100, 30, 2) == 50
    assert e.eta_minutes(100, 75, 4) == 75
