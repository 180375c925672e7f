"""Agent templates and their gradual rollout (seed §7): pure rules.

A template is a named, typed agent (coder, reviewer, …) with immutable
numbered versions (prompt, model, parameters, tools). A deployment rolls one
version out to every tenant or to one tenant, to a share of tickets, with
the previous stable version serving the rest.

- **Sticky buckets.** A ticket's bucket in a deployment is a hash of the
  pair (deployment, ticket), a number in [0, 100). The ticket gets the new
  version while its bucket is below the rollout percentage: every retry and
  every stage attempt of a ticket gets the same version, and raising the
  percentage from 5 to 25 moves only the tickets whose bucket lies in
  [5, 25) — none moves back.
- **Canary analysis.** Only outcomes the version caused count (stage
  failures and review rejections; not a lease lost with its VM). At the
  first outcome that makes attempts ≥ 10 with a failure rate above 30 % the
  deployment rolls back (every ticket gets the stable version again).
- **Promotion ladder.** Per deployment, default 5 → 25 → 50 → 100. Only the
  first step is automatic (≥ 20 successes and < 5 % failures while on it);
  the later ones are an operator's (the seed's workflow; its code's jump to
  50 % disagrees with it, and a person looking before half the fleet runs a
  prompt is the safer reading).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from swarmcommon.errors import InvalidArgument

DEFAULT_LADDER = (5, 25, 50, 100)
ROLLBACK_MIN_ATTEMPTS = 10
ROLLBACK_FAILURE_RATE = 0.30
PROMOTE_MIN_SUCCESSES = 20
PROMOTE_MAX_FAILURE_RATE = 0.05
BUCKETS = 10_000  # buckets are hundredths of a percent


class DeploymentStatus(enum.StrEnum):
    CANARY = "canary"  # on the ladder's first step
    ROLLING = "rolling"  # promoted past it, below 100 %
    FULL = "full"  # every ticket
    ROLLBACK = "rollback"  # rolled back: every ticket gets the stable version
    DISABLED = "disabled"  # paused: skipped, as if it did not exist


LIVE = (DeploymentStatus.CANARY, DeploymentStatus.ROLLING)


class OutcomeCause(enum.StrEnum):
    """Why a stage ended; only some are the template's doing."""

    SUBMITTED = "submitted"  # the stage's work was accepted
    STAGE_FAILED = "stage_failed"  # the agent reported a failure
    REVIEW_REJECTED = "review_rejected"  # a later stage sent the work back
    LEASE_LOST = "lease_lost"  # the VM died or hung: not the prompt's fault
    RELEASED = "released"  # given back (budget, shutdown): not an outcome

    @property
    def counts(self) -> bool:
        return self in (OutcomeCause.SUBMITTED, OutcomeCause.STAGE_FAILED, OutcomeCause.REVIEW_REJECTED)

    @property
    def success(self) -> bool:
        return self is OutcomeCause.SUBMITTED


def bucket(deployment_id: str, ticket_id: str) -> float:
    """The ticket's sticky place in [0, 100) for this deployment."""
    digest = hashlib.sha256(f"{deployment_id}\x00{ticket_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % BUCKETS) / (BUCKETS / 100)


def takes_new_version(
    status: DeploymentStatus, rollout_percent: int, deployment_id: str, ticket_id: str
) -> bool:
    if status is DeploymentStatus.FULL:
        return True
    if status in LIVE:
        return bucket(deployment_id, ticket_id) < rollout_percent
    return False


def parse_ladder(steps: Sequence[int] | None) -> tuple[int, ...]:
    """A rollout ladder: strictly rising percentages in 1..100 ending at 100."""
    ladder = tuple(steps) if steps else DEFAULT_LADDER
    if any(not 1 <= s <= 100 for s in ladder):
        raise InvalidArgument("ladder", "rollout ladder steps must be percentages from 1 to 100")
    if any(b <= a for a, b in zip(ladder, ladder[1:], strict=False)):
        raise InvalidArgument("ladder", "rollout ladder steps must rise")
    if ladder[-1] != 100:
        raise InvalidArgument("ladder", "a rollout ladder ends at 100")
    return ladder


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise InvalidArgument("rollout_percent", f"must be 0..100 (got {percent})")
    return percent


@dataclass(frozen=True)
class Verdict:
    """What an outcome makes of a deployment: nothing, a rollback or a promotion."""

    status: DeploymentStatus
    rollout_percent: int
    reason: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.reason)


def judge(
    status: DeploymentStatus, rollout_percent: int, ladder: Sequence[int], successes: int, failures: int
) -> Verdict:
    """The deployment after its counters became (successes, failures)."""
    attempts = successes + failures
    rate = failures / attempts if attempts else 0.0
    if status in LIVE and attempts >= ROLLBACK_MIN_ATTEMPTS and rate > ROLLBACK_FAILURE_RATE:
        return Verdict(
            DeploymentStatus.ROLLBACK, rollout_percent, f"Auto-rollback: {rate * 100:.1f}% failure rate"
        )
    if (
        status is DeploymentStatus.CANARY
        and len(ladder) > 1
        and rollout_percent == ladder[0]
        and successes >= PROMOTE_MIN_SUCCESSES
        and rate < PROMOTE_MAX_FAILURE_RATE
    ):
        return Verdict(
            status_at(ladder[1], ladder),
            ladder[1],
            f"Auto-promotion: {successes} successes, {rate * 100:.1f}% failure rate",
        )
    return Verdict(status, rollout_percent)


def status_at(percent: int, ladder: Sequence[int]) -> DeploymentStatus:
    if percent >= 100:
        return DeploymentStatus.FULL
    return DeploymentStatus.CANARY if percent <= ladder[0] else DeploymentStatus.ROLLING


def next_step(percent: int, ladder: Sequence[int]) -> int:
    """The ladder's next step above `percent` (a manual promotion)."""
    for step in ladder:
        if step > percent:
            return step
    raise InvalidArgument("rollout_percent", f"already at {percent}%: nothing to promote to")


PLATFORM = ""  # owner_tenant_id / tenant_id of what belongs to no tenant
MAX_PROMPT = 64 * 1024
MAX_SETTINGS_JSON = 16 * 1024


@dataclass(frozen=True)
class Template:
    id: str
    slug: str
    agent_type: str
    owner_tenant_id: str
    name: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class TemplateVersion:
    id: str
    template_id: str
    slug: str
    agent_type: str
    version: int
    prompt: str
    model: str
    parameters: dict[str, Any]
    tools: dict[str, Any]
    author: str
    created_at: datetime


@dataclass(frozen=True)
class Deployment:
    id: str
    tenant_id: str
    agent_type: str
    version_id: str
    stable_version_id: str | None
    rollout_percent: int
    status: DeploymentStatus
    ladder: tuple[int, ...]
    success_count: int
    failure_count: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    promoted_at: datetime | None

    @property
    def attempts(self) -> int:
        return self.success_count + self.failure_count

    @property
    def failure_rate(self) -> float:
        return self.failure_count / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class Resolved:
    """The version an agent must use for one ticket's stage, and why."""

    version: TemplateVersion
    deployment_id: str
    # The new version of a rollout under way (canary or rolling): its
    # outcomes move the deployment's counters. False for a full deployment.
    canary: bool
