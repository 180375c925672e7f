"""Deployments of agent template versions: rolling one out, counting the
outcomes of its tickets, and the rollbacks and promotions that follow (rules
in `swarm_ticketing.templates`), automatic or by hand; every change audited
in `template_deployment_changes` and, for a tenant's own deployment, sent to
its webhooks (`template.rolled_back`, `template.promoted`).

Counting is exact under concurrency: an outcome increments its deployment's
counter with one `UPDATE … RETURNING`, which holds the deployment's row until
the commit, and the verdict on the returned counters (and any status change)
is written in the same transaction. The outcome that crosses a threshold is
the one that acts, once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.stores import requests
from swarm_ticketing.stores.templates import Obj, latest_deployment, to_deployment, visible_template
from swarm_ticketing.tables import (
    agent_template_versions,
    outbox,
    template_deployment_changes,
    template_deployments,
    template_outcomes,
)
from swarm_ticketing.templates import (
    PLATFORM,
    Deployment,
    DeploymentStatus,
    OutcomeCause,
    Verdict,
    check_percent,
    judge,
    next_step,
    parse_ladder,
    status_at,
)
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, InvalidArgument, NotFound
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.outbox import OutboxEvent, OutboxWriter

log = logging.getLogger(__name__)

TV, TD = agent_template_versions, template_deployments
ROLLED_BACK_EVENT = "template.rolled_back"
PROMOTED_EVENT = "template.promoted"
_outbox = OutboxWriter(outbox, source="ticketing")
_ACTIONS = {
    DeploymentStatus.ROLLBACK: "rolled_back",
    DeploymentStatus.DISABLED: "paused",
    DeploymentStatus.CANARY: "promoted",
    DeploymentStatus.ROLLING: "promoted",
    DeploymentStatus.FULL: "promoted",
}
_EVENTS = {"rolled_back": ROLLED_BACK_EVENT, "promoted": PROMOTED_EVENT}


class Deployments:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # -- deployments --------------------------------------------------------------------------

    def deploy(
        self,
        scope: str,
        actor: str,
        slug: str,
        version: int,
        rollout_percent: int,
        ladder: Sequence[int] | None = None,
        key: RequestKey | None = None,
    ) -> Deployment:
        """Roll `slug` v`version` out to `scope` (a tenant, or PLATFORM for all)."""
        steps = parse_ladder(ladder)
        if not 1 <= check_percent(rollout_percent) <= 100:
            raise InvalidArgument("rollout_percent", "a deployment starts at 1..100 percent")

        def work(conn: Connection, now: datetime) -> tuple[Deployment, Answer]:
            template = visible_template(conn, scope, slug)
            target = conn.execute(
                sa.select(TV.c.id).where(TV.c.template_id == template.id, TV.c.version == version)
            ).first()
            if target is None:
                raise NotFound(f"template {slug!r} has no version {version}", slug=slug, version=version)
            stable = self._stable(conn, scope, template.agent_type)
            if stable is None and rollout_percent < 100:
                raise FailedPrecondition(
                    f"nothing of type {template.agent_type!r} is deployed to fall back on: "
                    "deploy a first version at 100 percent",
                    agent_type=template.agent_type,
                )
            row = {
                "id": str(uuid.uuid4()),
                "tenant_id": scope,
                "agent_type": template.agent_type,
                "version_id": target.id,
                "stable_version_id": stable,
                "rollout_percent": rollout_percent,
                "status": status_at(rollout_percent, steps).value,
                "ladder": ",".join(str(s) for s in steps),
                "success_count": 0,
                "failure_count": 0,
                "created_by": actor,
                "created_at": now,
                "updated_at": now,
                "promoted_at": None,
            }
            conn.execute(sa.insert(TD).values(row))
            deployment = to_deployment(Obj(row))
            self._changed(conn, deployment, "created", actor, None, f"{slug} v{version}", now)
            return deployment, {"deployment_id": deployment.id}

        def replay(conn: Connection, answer: Answer) -> Deployment:
            return self._deployment_in(conn, scope, answer["deployment_id"])

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def _stable(self, conn: Connection, tenant: str, kind: str) -> str | None:
        """What every ticket of `tenant` gets today, outside any canary."""
        current = latest_deployment(conn, tenant, kind)
        if current is None:
            return None
        if current.status is DeploymentStatus.FULL:
            return current.version_id
        return current.stable_version_id

    def deployment(self, scope: str, deployment_id: str) -> Deployment:
        return self.db.transaction(lambda conn: self._deployment_in(conn, scope, deployment_id), write=False)

    def _deployment_in(
        self, conn: Connection, scope: str | None, deployment_id: str, *, lock: bool = False
    ) -> Deployment:
        """One deployment of `scope` (None: any), locked for a change if asked."""
        query = sa.select(TD).where(TD.c.id == deployment_id)
        if lock:
            query = query.with_for_update()
        if scope is not None:
            query = query.where(TD.c.tenant_id == scope)
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"deployment {deployment_id!r} not found", deployment_id=deployment_id)
        return to_deployment(row)

    # -- outcomes -----------------------------------------------------------------------------

    def record_outcome(
        self,
        tenant: str,
        ticket_id: str,
        stage: str,
        version_id: str,
        deployment_id: str | None,
        cause: OutcomeCause,
    ) -> Deployment | None:
        """Log a stage's outcome against its version; if the version is a
        deployment's new one and the cause is the template's, count it and
        apply the verdict. Returns the deployment as counted (None if not)."""

        return self.db.transaction(
            lambda conn: self.record_in(conn, tenant, ticket_id, stage, version_id, deployment_id, cause)
        )

    def record_in(
        self,
        conn: Connection,
        tenant: str,
        ticket_id: str,
        stage: str,
        version_id: str,
        deployment_id: str | None,
        cause: OutcomeCause,
    ) -> Deployment | None:
        """`record_outcome` inside the caller's transaction (the stage change's)."""
        now = self.clock.now()
        counted = None
        if deployment_id is not None and cause.counts:
            counted = self._count(conn, deployment_id, version_id, cause.success, now)
        conn.execute(
            sa.insert(template_outcomes).values(
                tenant_id=tenant,
                ticket_id=ticket_id,
                stage=stage,
                version_id=version_id,
                deployment_id=counted.id if counted else None,
                cause=cause.value,
                created_at=now,
            )
        )
        return counted

    def _count(
        self, conn: Connection, deployment_id: str, version_id: str, success: bool, now: datetime
    ) -> Deployment | None:
        column = TD.c.success_count if success else TD.c.failure_count
        row = conn.execute(
            sa.update(TD)
            .where(TD.c.id == deployment_id, TD.c.version_id == version_id)
            .values({column: column + 1})
            .returning(*TD.c)
        ).first()
        if row is None:
            return None  # the stable version's work: logged, not counted
        deployment = to_deployment(row)
        verdict = judge(
            deployment.status,
            deployment.rollout_percent,
            deployment.ladder,
            deployment.success_count,
            deployment.failure_count,
        )
        if not verdict.changed:
            return deployment
        return self._apply(conn, deployment, verdict, "system", now)

    def _apply(
        self, conn: Connection, deployment: Deployment, verdict: Verdict, actor: str, now: datetime
    ) -> Deployment:
        """Write a verdict's status and share, audit it and announce it."""
        values: dict[str, Any] = {
            "status": verdict.status.value,
            "rollout_percent": verdict.rollout_percent,
            "updated_at": now,
        }
        action = _ACTIONS[verdict.status]
        if action == "promoted":
            values["promoted_at"] = now
        row = conn.execute(
            sa.update(TD).where(TD.c.id == deployment.id).values(values).returning(*TD.c)
        ).one()
        after = to_deployment(row)
        old = f"{deployment.status.value} {deployment.rollout_percent}%"
        new = f"{after.status.value} {after.rollout_percent}%"
        self._changed(conn, after, action, actor, old, new, now, verdict.reason)
        data = {
            "deployment_id": after.id,
            "agent_type": after.agent_type,
            "version_id": after.version_id,
            "status": after.status.value,
            "rollout_percent": after.rollout_percent,
            "previous_rollout_percent": deployment.rollout_percent,
            "success_count": after.success_count,
            "failure_count": after.failure_count,
            "failure_rate": round(after.failure_rate, 4),
            "reason": verdict.reason,
            "actor": actor,
        }
        event = _EVENTS.get(action)
        if event is not None and after.tenant_id != PLATFORM:  # a tenant's webhooks hear of its own
            _outbox.add(conn, [OutboxEvent(after.tenant_id, event, data)], now)
        if action == "rolled_back":
            log.error("agent template rolled back", extra={"alert": "template_rollback", **data})
        else:
            log.warning("agent template deployment changed", extra={"action": action, **data})
        return after

    # -- an operator's (or the tenant's) hand ---------------------------------------------------

    def promote(
        self,
        scope: str | None,
        deployment_id: str,
        actor: str,
        to_percent: int = 0,
        key: RequestKey | None = None,
    ) -> Deployment:
        """The next ladder step, or `to_percent` (above today's share)."""

        def tx(conn: Connection, now: datetime) -> Deployment:
            d = self._deployment_in(conn, scope, deployment_id, lock=True)
            if d.status not in (DeploymentStatus.CANARY, DeploymentStatus.ROLLING):
                raise FailedPrecondition(
                    f"a {d.status.value} deployment cannot be promoted (deploy the version again)",
                    status=d.status.value,
                )
            target = check_percent(to_percent) if to_percent else next_step(d.rollout_percent, d.ladder)
            if target <= d.rollout_percent:
                raise InvalidArgument("rollout_percent", f"must be above today's {d.rollout_percent}")
            verdict = Verdict(status_at(target, d.ladder), target, f"Manual promotion to {target}%")
            return self._apply(conn, d, verdict, actor, now)

        return self._change(scope, deployment_id, key, tx)

    def rollback(
        self,
        scope: str | None,
        deployment_id: str,
        actor: str,
        reason: str = "",
        key: RequestKey | None = None,
    ) -> Deployment:
        def tx(conn: Connection, now: datetime) -> Deployment:
            d = self._deployment_in(conn, scope, deployment_id, lock=True)
            if d.status in (DeploymentStatus.ROLLBACK, DeploymentStatus.DISABLED):
                raise FailedPrecondition(f"the deployment is already {d.status.value}", status=d.status.value)
            if d.stable_version_id is None:
                raise FailedPrecondition("nothing to roll back to: this deployment was the first of its type")
            verdict = Verdict(DeploymentStatus.ROLLBACK, d.rollout_percent, reason or "Manual rollback")
            return self._apply(conn, d, verdict, actor, now)

        return self._change(scope, deployment_id, key, tx)

    def pause(
        self, scope: str | None, deployment_id: str, actor: str, key: RequestKey | None = None
    ) -> Deployment:
        """Disable: resolution skips it, as if it had never been made."""

        def tx(conn: Connection, now: datetime) -> Deployment:
            d = self._deployment_in(conn, scope, deployment_id, lock=True)
            if d.status is DeploymentStatus.DISABLED:
                raise FailedPrecondition("the deployment is already disabled", status=d.status.value)
            verdict = Verdict(DeploymentStatus.DISABLED, d.rollout_percent, "Paused")
            return self._apply(conn, d, verdict, actor, now)

        return self._change(scope, deployment_id, key, tx)

    def _change(
        self,
        scope: str | None,
        deployment_id: str,
        key: RequestKey | None,
        change: Callable[[Connection, datetime], Deployment],
    ) -> Deployment:
        """An operator's change, once per request id: a retry answers with the
        deployment as it is now."""
        return requests.LOG.run(
            self.db,
            key,
            self.clock.now,
            lambda conn, now: (change(conn, now), {"deployment_id": deployment_id}),
            lambda conn, _: self._deployment_in(conn, scope, deployment_id),
        )

    def _changed(
        self,
        conn: Connection,
        deployment: Deployment,
        action: str,
        actor: str,
        old: str | None,
        new: str,
        now: datetime,
        reason: str = "",
    ) -> None:
        conn.execute(
            sa.insert(template_deployment_changes).values(
                deployment_id=deployment.id,
                action=action,
                actor=actor,
                old_value=old,
                new_value=new,
                reason=reason,
                created_at=now,
            )
        )
