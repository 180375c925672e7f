"""Self-healing (seed §12's remediation table), one pass every few seconds:

- VM_HEARTBEAT: no heartbeat for the window, or the guest process is dead
  -> heal the agent (fail, terminate, release its leases, replace it);
- STALE_TICKETS: an agent heartbeating BUSY on one ticket for longer than
  `stale_ticket_seconds` is hung -> heal it the same way;
- NETWORK: a guest's link to the bridge is gone or down -> rebuild it;
- SERVICES: a control-plane service is not SERVING -> alert (the
  orchestrator, e.g. the kubelet, restarts it);
- DATABASE: the database refuses queries -> checkpoint (SQLite WAL), alert;
- DISK: the workroot's filesystem is over the threshold -> purge the logs of
  finished guests.

Every step is recorded in the healing log (see healing.py). Before the
checks, each pass finishes what a crash cut short (reconcile.py).
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from swarm_vmhost import network
from swarm_vmhost.domain import (
    Agent,
    AgentState,
    CheckStatus,
    HealingActionType,
    HealingOutcome,
    HealingStep,
    HealthCheck,
    HealthPolicy,
    silence,
    stale_ticket,
)
from swarm_vmhost.healing import Healer
from swarm_vmhost.host import VmHost
from swarm_vmhost.reconcile import Reconciler
from swarmcommon.errors import SwarmError
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)

SERVING = "SERVING"


class Monitor(Periodic):
    name = "self-healing"

    def __init__(self, host: VmHost, healer: Healer, policy: HealthPolicy, interval: float) -> None:
        super().__init__(interval)
        self.host = host
        self.healer = healer
        self.policy = policy
        self.reconciler = Reconciler(host, policy.start_timeout)
        self.status = {check: CheckStatus() for check in HealthCheck}
        # (agent, ticket) -> when the agent was first seen busy on a ticket whose lease it lost.
        self._lost_since: dict[tuple[str, str], datetime] = {}
        # A DATABASE step the outage kept out of the healing log, written when it is over.
        self._database_outage: HealingStep | None = None
        # One pass at a time: the loop and a test (or an operator) may both run one.
        self._pass_lock = threading.Lock()

    def checks(self) -> list[tuple[HealthCheck, Callable[[], str]]]:
        return [
            (HealthCheck.VM_HEARTBEAT, self.check_heartbeats),
            (HealthCheck.STALE_TICKETS, self.check_stale_tickets),
            (HealthCheck.NETWORK, self.check_network),
            (HealthCheck.SERVICES, self.check_services),
            (HealthCheck.DATABASE, self.check_database),
            (HealthCheck.DISK, self.check_disk),
        ]

    def run_once(self) -> bool:
        with self._pass_lock:
            try:
                self.reconciler.run()
            except Exception:  # the checks still run; the next pass retries
                log.exception("reconciling failed")
            for check, run in self.checks():
                try:
                    problem = run()
                except Exception as exc:  # one broken check must not stop the others
                    log.exception("health check failed", extra={"check": check})
                    problem = f"the check itself failed: {type(exc).__name__}: {exc}"
                self.status[check].record(problem, self.host.agents.clock.now())
        return False

    # -- agents -----------------------------------------------------------------------------------

    def check_heartbeats(self) -> str:
        now = self.host.agents.clock.now()
        found = []
        for agent in self.host.agents.live():
            driver = self.host.drivers.get(agent.driver)
            if (
                driver is not None
                and agent.handle is not None
                and not self.host.guest_alive(driver, agent.handle)
            ):
                reason: str | None = "guest process exited"
            elif driver is not None and not driver.guest_heartbeats:
                continue  # a guest without a runtime: its live process is its heartbeat
            else:
                reason = silence(agent, now, self.policy)
            if reason is not None:
                found.append(f"{agent.id}: {reason}")
                self.healer.heal_agent(agent, HealthCheck.VM_HEARTBEAT, reason)
        return "; ".join(found)

    def check_stale_tickets(self) -> str:
        now = self.host.agents.clock.now()
        found = []
        busy: dict[tuple[str, str], str] = {}
        for agent in self.host.agents.live():
            reason = stale_ticket(agent, now, self.policy)
            if reason is None:
                reason = self._lease_lost(agent, now, busy)
            if reason is not None:
                found.append(f"{agent.id}: {reason}")
                self.healer.heal_agent(agent, HealthCheck.STALE_TICKETS, reason)
        self._lost_since = {k: v for k, v in self._lost_since.items() if k in busy}
        return "; ".join(found)

    def _lease_lost(self, agent: Agent, now: datetime, busy: dict[tuple[str, str], str]) -> str | None:
        """Why a guest busy on a ticket whose lease it no longer holds must go
        (it was told to stop at its last renewal and is still at it), or None."""
        ticketing = self.host.ticketing
        if ticketing is None or agent.state != AgentState.BUSY or not agent.ticket_id:
            return None
        key = (agent.id, agent.ticket_id)
        try:
            held = ticketing.holds_lease(agent.tenant_id, agent.ticket_id, agent.id)
        except SwarmError:
            return None  # ticketing cannot say: no evidence against the guest
        if held:
            return None
        busy[key] = agent.ticket_id
        since = self._lost_since.setdefault(key, now)
        if now - since < self.policy.lease_lost_grace:
            return None
        return (
            f"still busy on ticket {agent.ticket_id} {_seconds(now - since)} after losing its lease "
            f"(cancelled, released or taken over; grace {_seconds(self.policy.lease_lost_grace)})"
        )

    def check_network(self) -> str:
        found = []
        for agent in self.host.agents.live():
            if agent.handle is None or agent.handle.netns is None or not agent.address:
                continue
            if network.link_up(agent.id):
                continue
            detail = f"{agent.id}: link to {self.host.bridge.name} missing or down"
            found.append(detail)
            outcome, error = HealingOutcome.SUCCEEDED, ""
            try:
                network.plug(agent.id, self.host.bridge, agent.address)
            except Exception as exc:  # netlink errors of every kind
                outcome, error = HealingOutcome.FAILED, str(exc)
            self.healer.record(
                HealingStep(
                    str(uuid.uuid4()),
                    HealthCheck.NETWORK,
                    HealingActionType.REBUILD_NETWORK,
                    outcome,
                    tenant_id=agent.tenant_id,
                    agent_id=agent.id,
                    target=f"agents/{agent.id}/network",
                    detail=detail,
                    error=error,
                )
            )
        return "; ".join(found)

    # -- host-wide --------------------------------------------------------------------------------

    def check_services(self) -> str:
        problems = []
        for name, client in (("ticketing", self.host.ticketing), ("quota", self.host.quota)):
            if client is None:
                continue
            status = client.health(timeout=2)
            if status == SERVING:
                continue
            problems.append(f"{name} at {client.target} is not serving ({status})")
            if self.status[HealthCheck.SERVICES].healthy:  # alert once per outage
                self._host_step(
                    HealthCheck.SERVICES, HealingActionType.ALERT, f"services/{name}", problems[-1]
                )
        return "; ".join(problems)

    def check_database(self) -> str:
        db = self.host.agents.db
        try:
            db.transaction(lambda conn: conn.execute(sa.text("SELECT 1")).scalar(), write=False)
        except (SwarmError, SQLAlchemyError) as exc:
            message = exc.message if isinstance(exc, SwarmError) else str(getattr(exc, "orig", exc))
            return self._database_down(f"database refused a query: {message.strip()[:300]}")
        if self._database_outage is not None:
            # The healing log lives in this database: a step it could not
            # take during the outage is written now that it answers again.
            step, self._database_outage = self._database_outage, None
            self.healer.record(step)
        return ""

    def _database_down(self, detail: str) -> str:
        outcome, error = HealingOutcome.SUCCEEDED, ""
        db = self.host.agents.db
        if not db.is_postgres:
            try:
                with db.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception as exc:  # the checkpoint's own failure is what the step records
                outcome, error = HealingOutcome.FAILED, str(exc)
        step = HealingStep(
            str(uuid.uuid4()),
            HealthCheck.DATABASE,
            HealingActionType.CHECKPOINT_DATABASE,
            outcome,
            target="databases/vmhost",
            detail=detail,
            error=error,
        )
        try:
            self.healer.record(step)
        except (SwarmError, SQLAlchemyError):
            log.error("database unreachable", extra={"alert": "vmhost_database", "detail": detail})
            if self._database_outage is None:  # the outage's first sighting is the one kept
                self._database_outage = step
        return detail

    def check_disk(self) -> str:
        root = Path(self.host.settings.workroot)
        root.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(root)
        share = usage.used / usage.total if usage.total else 0.0
        if share <= self.host.settings.disk_purge_threshold:
            return ""
        guests = root / "guests"
        live = {a.id for a in self.host.agents.live()}
        purged = 0
        for d in guests.iterdir() if guests.is_dir() else []:
            if d.name not in live:
                shutil.rmtree(d, ignore_errors=True)
                purged += 1
        detail = f"disk {share:.0%} full; purged logs of {purged} finished guests"
        self._host_step(HealthCheck.DISK, HealingActionType.PURGE_LOGS, f"disks/{root}", detail)
        return detail

    def _host_step(
        self,
        check: HealthCheck,
        action: HealingActionType,
        target: str,
        detail: str,
        outcome: HealingOutcome = HealingOutcome.SUCCEEDED,
        error: str = "",
    ) -> None:
        incident = str(uuid.uuid4())
        self.healer.record(
            HealingStep(incident, check, action, outcome, target=target, detail=detail, error=error)
        )


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f}s"
