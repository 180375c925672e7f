"""Self-healing (seed §12's remediation table), run every few seconds:

- VM_HEARTBEAT: no heartbeat for the window, or the guest process is dead
  -> fail it, terminate it, release its leases, spawn a replacement;
- NETWORK: a guest's link to the bridge is gone or down -> rebuild it;
- SERVICES: a control-plane service is not SERVING -> alert (the
  orchestrator, e.g. the kubelet, restarts it);
- DATABASE: the database refuses queries -> checkpoint (SQLite WAL), alert;
- DISK: the workroot's filesystem is over the threshold -> purge the logs of
  finished guests;
- STALE_TICKETS: leases nobody renews -> ticketing's reaper returns them.

Every step is a HealingAction row (and an `agent.healed` event for tenant
steps); steps for one condition share an incident id. A failed agent's
place is refilled: the target is the pool the tenant spawned, so a
replacement is spawned unless quota refuses (recorded as SKIPPED).
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm_vmhost import network
from swarm_vmhost.host import VmHost
from swarm_vmhost.store import AgentRecord
from swarmcommon.errors import QuotaExceeded, SwarmError
from swarmcommon.grpcclient import channel

log = logging.getLogger(__name__)
CHECKS = ("vm_heartbeat", "stale_tickets", "network", "services", "database", "disk")


@dataclass
class CheckStatus:
    healthy: bool = True
    last_run: datetime | None = None
    failures: int = 0
    detail: str = ""


@dataclass
class Monitor:
    host: VmHost
    interval: float
    status: dict[str, CheckStatus] = field(default_factory=lambda: {c: CheckStatus() for c in CHECKS})
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="self-healing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("self-healing pass failed")

    def run_once(self) -> None:
        with self._lock:  # one pass at a time (the loop and tests may both call it)
            for check, run in (
                ("vm_heartbeat", self.check_heartbeats),
                ("network", self.check_network),
                ("services", self.check_services),
                ("database", self.check_database),
                ("disk", self.check_disk),
                ("stale_tickets", lambda: ""),
            ):
                problem = run()
                st = self.status[check]
                st.last_run = self.host.store.clock.now()
                st.healthy = not problem
                st.failures = st.failures + 1 if problem else 0
                st.detail = problem

    # -- heartbeats --------------------------------------------------------------------------

    def check_heartbeats(self) -> str:
        s = self.host.settings
        window = timedelta(seconds=s.heartbeat_interval_seconds * s.missed_heartbeats)
        start_window = timedelta(seconds=s.start_timeout_seconds)
        now = self.host.store.clock.now()
        found = []
        for agent in self.host.store.live():
            driver = self.host.drivers.get(agent.driver)
            dead = agent.handle is not None and driver is not None and not driver.alive(agent.handle)
            if not dead and driver is not None and not driver.guest_heartbeats:
                continue  # a guest without a runtime: its live process is its heartbeat
            if agent.last_heartbeat_at is not None:
                silent = now - agent.last_heartbeat_at
                missed = silent > window
                why = f"no heartbeat for {silent.total_seconds():.1f}s"
            else:
                silent = now - agent.created_at
                missed = silent > start_window
                why = f"no first heartbeat {silent.total_seconds():.1f}s after spawn"
            if dead or missed:
                reason = "guest process exited" if dead else why
                found.append(f"{agent.id}: {reason}")
                self.heal_silent_agent(agent, reason)
        return "; ".join(found)

    def heal_silent_agent(self, agent: AgentRecord, reason: str) -> None:
        incident = str(uuid.uuid4())
        store = self.host.store
        failed = store.fail(agent.id, reason)
        if failed is None:
            return  # someone else dealt with it
        common = {"tenant_id": agent.tenant_id, "agent_id": agent.id, "target": f"agents/{agent.id}"}
        try:
            _, released = self.host.terminate(failed, reason)
            store.record_action(
                incident, "vm_heartbeat", "terminate_agent", "succeeded", detail=reason, **common
            )
            store.record_action(
                incident,
                "vm_heartbeat",
                "release_tickets",
                "succeeded",
                detail=f"{len(released)} lease(s) returned",
                ticket_ids=released,
                **common,
            )
        except SwarmError as exc:
            store.record_action(
                incident, "vm_heartbeat", "terminate_agent", "failed", error=exc.message, **common
            )
            return
        try:
            replacement = self.host.spawn(
                agent.tenant_id,
                agent.template,
                agent.role,
                agent.driver,
                f"replace:{agent.id}",
                replaces=agent.id,
            )
            store.record_action(
                incident,
                "vm_heartbeat",
                "spawn_replacement",
                "succeeded",
                detail=f"replaced by {replacement.id}",
                replacement_agent_id=replacement.id,
                **common,
            )
        except QuotaExceeded as exc:
            store.record_action(
                incident, "vm_heartbeat", "spawn_replacement", "skipped", detail=exc.message, **common
            )
        except SwarmError as exc:
            store.record_action(
                incident, "vm_heartbeat", "spawn_replacement", "failed", error=exc.message, **common
            )

    # -- network ----------------------------------------------------------------------------------

    def check_network(self) -> str:
        found = []
        for agent in self.host.store.live():
            driver = self.host.drivers.get(agent.driver)
            if agent.handle is None or agent.handle.netns is None or driver is None or not agent.address:
                continue
            if network.link_up(agent.id):
                continue
            detail = f"{agent.id}: link to {self.host.bridge.name} missing or down"
            found.append(detail)
            common = {
                "tenant_id": agent.tenant_id,
                "agent_id": agent.id,
                "target": f"agents/{agent.id}/network",
            }
            try:
                network.plug(agent.id, self.host.bridge, agent.address)
                self.host.store.record_action(
                    str(uuid.uuid4()), "network", "rebuild_network", "succeeded", detail=detail, **common
                )
            except Exception as exc:  # netlink errors of every kind
                self.host.store.record_action(
                    str(uuid.uuid4()),
                    "network",
                    "rebuild_network",
                    "failed",
                    detail=detail,
                    error=str(exc),
                    **common,
                )
        return "; ".join(found)

    # -- host-wide --------------------------------------------------------------------------------

    def check_services(self) -> str:
        problems = []
        for name, target in (
            ("ticketing", self.host.settings.ticketing_target),
            ("quota", self.host.settings.quota_target),
        ):
            if not target:
                continue
            ch = channel(target)
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                ok = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                ok = False
            finally:
                ch.close()
            if not ok:
                problems.append(f"{name} at {target} is not serving")
                if self.status["services"].healthy:  # alert once per outage
                    self.host.store.record_action(
                        str(uuid.uuid4()),
                        "services",
                        "alert",
                        "succeeded",
                        target=f"services/{name}",
                        detail=problems[-1],
                    )
        return "; ".join(problems)

    def check_database(self) -> str:
        db = self.host.store.db
        try:
            db.transaction(lambda conn: conn.execute(sa.text("SELECT 1")).scalar(), write=False)
            return ""
        except SwarmError as exc:
            detail = f"database refused a query: {exc.message}"
        outcome, error = "succeeded", ""
        if not db.is_postgres:
            try:
                with db.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception as exc:
                outcome, error = "failed", str(exc)
        self.host.store.record_action(
            str(uuid.uuid4()),
            "database",
            "checkpoint_database",
            outcome,
            target="databases/vmhost",
            detail=detail,
            error=error,
        )
        return detail

    def check_disk(self) -> str:
        root = Path(self.host.settings.workroot)
        root.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(root)
        share = usage.used / usage.total if usage.total else 0.0
        if share <= self.host.settings.disk_purge_threshold:
            return ""
        guests = root / "guests"
        live = {a.id for a in self.host.store.live()}
        purged = 0
        for d in guests.iterdir() if guests.is_dir() else []:
            if d.name not in live:
                shutil.rmtree(d, ignore_errors=True)
                purged += 1
        detail = f"disk {share:.0%} full; purged logs of {purged} finished guests"
        self.host.store.record_action(
            str(uuid.uuid4()), "disk", "purge_logs", "succeeded", target=f"disks/{root}", detail=detail
        )
        return detail
