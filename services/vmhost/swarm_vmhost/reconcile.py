"""Finishing what a crash cut short, on start and on every monitor pass.

vmhost can die (kill -9, OOM, a node reboot) between any two steps of a
spawn or a terminate. Each step is safe to run again (host.py), so the
reconciler only has to find the agents a step is missing from and run the
rest:

- a terminate that did not finish leaves the agent STOPPING (or FAILED, when
  self-healing was terminating it): its guest is stopped and its devices
  removed by the driver, its leases, reservation and address given back;
- a spawn that did not finish leaves a STARTING agent without a guest: what
  the driver made is removed, the reservation (found by its owner when its
  id was never recorded) given back, and the agent ends with its request id
  freed;
- a terminated agent whose reservation could not be given back (quota did
  not answer) gets it released.

Quota counts a release once however often it is asked, and the address and
the agent's end are one transaction, so running twice gives back nothing
twice. On start nothing else is in flight; on a monitor pass the agents a
spawn or terminate of this process is working on are left alone, and so
are those that changed too recently to be stuck (self-healing fails an agent
and terminates it a moment later).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from swarm_vmhost.domain import Agent, AgentState
from swarm_vmhost.host import VmHost

log = logging.getLogger(__name__)

# On a monitor pass, how long an agent must have stayed STOPPING or FAILED
# before it counts as stuck.
STUCK_AFTER = timedelta(seconds=30)
# Terminated agents whose reservation is retried per pass (oldest first).
SETTLE_BATCH = 100
ABANDONED = "its spawn never finished (vmhost stopped or failed during it)"
UNFINISHED = "its terminate never finished (vmhost stopped or failed during it)"


class Reconciler:
    def __init__(self, host: VmHost, start_timeout: timedelta, stuck_after: timedelta = STUCK_AFTER) -> None:
        self.host = host
        # A spawn in flight in another process of this host has that long to record its guest.
        self.start_timeout = start_timeout
        self.stuck_after = stuck_after

    def run(self, at_start: bool = False) -> list[str]:
        """One pass; what it finished, one line per agent. `at_start`: before
        vmhost serves, when nothing can be in flight (no age is waited for)."""
        now = self.host.agents.clock.now()
        unstarted = self.host.agents.unstarted(None if at_start else now - self.start_timeout)
        unfinished = self.host.agents.unfinished(None if at_start else now - self.stuck_after)
        unsettled = self.host.agents.unsettled(SETTLE_BATCH)
        done = []
        for agent in [*unstarted, *unfinished]:
            finished = None if self.host.busy(agent.id) else self._finish(agent)
            if finished:
                done.append(f"{agent.id}: {finished}")
        for agent in unsettled:
            if not self.host.busy(agent.id) and self.host.settle_reservation(agent):
                self.host.agents.reservation_settled(agent.id)
                done.append(f"{agent.id}: reservation released")
        for line in done:
            log.info("reconciled", extra={"detail": line})
        return done

    def _finish(self, agent: Agent) -> str | None:
        """Run the rest of the agent's spawn or terminate and say which; None
        when that failed (logged; the next pass retries)."""
        try:
            if agent.state == AgentState.STARTING:
                self.host.abandon(agent, ABANDONED)
                return "spawn abandoned"
            self.host.terminate(agent, agent.state_reason or UNFINISHED)
            return f"terminate finished ({agent.state})"
        except Exception:  # one agent's failure must not stop the others
            log.exception("reconciling an agent failed", extra={"agent_id": agent.id})
            return None
