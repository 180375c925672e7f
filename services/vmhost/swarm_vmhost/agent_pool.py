"""A tenant's target pool, its rules: what a target is, what a valid pool
is, and what one reconciler pass should do about one target (no SQL, no
protobuf, no guests; `pool.py` acts on it, `stores/pools.py` stores it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from swarm_vmhost.domain import Agent, AgentRole, AgentState
from swarmcommon.errors import InvalidArgument

# Why the reconciler terminates an agent.
SURPLUS_REASON = "surplus to the tenant's agent pool"


@dataclass(frozen=True)
class PoolTarget:
    """How many live agents of `role` the tenant wants, and the reconciler's
    bookkeeping: spawn request ids 1..`spawned` of `epoch` are spent."""

    tenant_id: str
    role: AgentRole
    count: int
    epoch: str
    spawned: int
    detail: str
    set_at: datetime


@dataclass(frozen=True)
class PoolStatus:
    """A target as the tenant sees it: with its live agents now."""

    target: PoolTarget
    live_count: int


@dataclass(frozen=True)
class PoolPlan:
    """What one pass does about one target: spawn with these request ids, or
    retire these idle agents (oldest first); never both."""

    spawn_request_ids: tuple[str, ...] = ()
    retire: tuple[Agent, ...] = ()


def validate_targets(targets: Sequence[tuple[AgentRole | None, int]], max_count: int) -> dict[AgentRole, int]:
    """The pool as role -> count; a missing or repeated role or a count out of
    0..max_count is INVALID_ARGUMENT naming the target."""
    pool: dict[AgentRole, int] = {}
    for i, (role, count) in enumerate(targets):
        if role is None:
            raise InvalidArgument(f"targets[{i}].role", "is required")
        if role in pool:
            raise InvalidArgument(f"targets[{i}].role", f"{role} is listed twice")
        if not 0 <= count <= max_count:
            raise InvalidArgument(f"targets[{i}].count", f"must be 0..{max_count} on this host (got {count})")
        pool[role] = count
    return pool


def spawn_request_id(target: PoolTarget, n: int) -> str:
    """The n-th spawn of a target: the same n always names the same agent, so
    two passes that both see it missing spawn it once."""
    return f"pool:{target.role}:{target.epoch}:{n}"


def is_idle(agent: Agent) -> bool:
    return agent.state == AgentState.READY and agent.ticket_id is None


def plan(target: PoolTarget, live: Sequence[Agent]) -> PoolPlan:
    """`live`: the tenant's live agents of the target's role, read AFTER the
    target (so every spawn of ids up to `spawned` is among them or gone).

    Below the target, the missing number of spawns, named by the next
    request ids: a concurrent pass that read the same target asks for the
    same ids and gets the same agents. Above it, the oldest idle agents,
    at most the surplus; busy or starting ones are left to finish."""
    missing = target.count - len(live)
    if missing > 0:
        first = target.spawned + 1
        return PoolPlan(
            spawn_request_ids=tuple(spawn_request_id(target, n) for n in range(first, first + missing))
        )
    idle = sorted((a for a in live if is_idle(a)), key=lambda a: (a.created_at, a.id))
    return PoolPlan(retire=tuple(idle[:-missing]))
