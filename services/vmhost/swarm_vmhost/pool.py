"""Tenants' target pools: "keep N coders and M reviewers running", and the
reconciler that makes it so, one pass every monitor interval.

A pass reads every target, then the live agents (STARTING, READY, BUSY),
and for each (tenant, role) below its target spawns the missing number;
above it, it terminates surplus idle agents (READY, no ticket), oldest
first, and leaves busy and starting ones to finish. A role the pool does
not list is not managed; a managed role's agents are the pool's, however
they were spawned (a manual spawn over the target is surplus once idle).

Never more than the missing number, even with two passes at once (two
threads, or two vmhost processes on one database): a target's spawns are
named by request ids `pool:<role>:<epoch>:<n>` from a counter stored with
the target, advanced only after the spawns it names have their rows (a
spawn writes its row first). A pass that read the counter before another
pass advanced it asks for the same ids, and SpawnAgent's unique request
id gives it the same agents; one that read it after sees those agents
live. Retiring is one conditional update (READY and idle -> STOPPING), so
two passes never retire two agents for one surplus, and an agent that
took a ticket meanwhile is not retired. Self-healing still replaces a
failed agent itself; if a pass spawns in the same moment the pool is one
over for a pass, and the next pass retires the extra idle agent.

A spawn quota refuses (the tenant is at max_vms) ends that target's pass:
it is logged, shown as the target's `detail`, and tried again next pass;
any other failure likewise. One target's failure never stops the others.

Several nodes: every node's vmhost has its own database (the DaemonSet's
SQLite, deploy/k8s/nodes/vmhost), so a pool is per node: the targets a
tenant sets are kept, counted and reconciled by the vmhost that answered
SetAgentPool, for the agents on that node. The gateway reaches vmhost
through one Service, so with several nodes it sets (and reads) the pool of
whichever node answered, as it already does for agents. That is honest for
one node per cluster, as deployed today; spreading one pool over nodes
needs the targets stored centrally (e.g. with quota) and each node asking
for its share, which this module does not do.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from swarm_vmhost.agent_pool import (
    SURPLUS_REASON,
    PoolStatus,
    PoolTarget,
    plan,
    validate_targets,
)
from swarm_vmhost.domain import DEFAULT_TEMPLATE, Agent, AgentRole, SpawnRequest
from swarm_vmhost.host import VmHost
from swarm_vmhost.stores import PoolStore
from swarmcommon.errors import QuotaExceeded, SwarmError
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)


class AgentPools:
    """SetAgentPool and GetAgentPool."""

    def __init__(self, store: PoolStore, max_count: int) -> None:
        self.store = store
        self.max_count = max_count

    def set_pool(self, tenant_id: str, targets: Sequence[tuple[AgentRole | None, int]]) -> list[PoolStatus]:
        pool = validate_targets(targets, self.max_count)  # nothing written on bad input
        self.store.set_targets(tenant_id, pool)
        # The pool's audit trail: who wanted what, when (tenant-scoped REST, so the tenant).
        log.info(
            "agent pool set",
            extra={"tenant_id": tenant_id, "targets": {str(r): n for r, n in pool.items()}},
        )
        return self.get_pool(tenant_id)

    def get_pool(self, tenant_id: str) -> list[PoolStatus]:
        targets = self.store.targets(tenant_id)
        live = self.store.live_counts(tenant_id)
        order = list(AgentRole)
        return [PoolStatus(t, live[t.role]) for t in sorted(targets, key=lambda t: order.index(t.role))]


class PoolReconciler(Periodic):
    name = "agent-pool"

    def __init__(self, host: VmHost, store: PoolStore, interval: float) -> None:
        super().__init__(interval)
        self.host = host
        self.store = store

    def run_once(self) -> bool:
        # Targets first, agents second: see the module docstring.
        targets = self.store.targets()
        live: dict[tuple[str, AgentRole], list[Agent]] = defaultdict(list)
        for agent in self.host.agents.live():
            live[(agent.tenant_id, agent.role)].append(agent)
        for target in targets:
            try:
                self.reconcile(target, live[(target.tenant_id, target.role)])
            except Exception:  # one target's failure must not stop the others; the next pass retries
                log.exception(
                    "agent pool pass failed", extra={"tenant_id": target.tenant_id, "role": target.role}
                )
        return False

    def reconcile(self, target: PoolTarget, live: Sequence[Agent]) -> None:
        todo = plan(target, live)
        if todo.spawn_request_ids:
            self._grow(target, todo.spawn_request_ids)
            return
        for agent in todo.retire:
            if self.store.retire(agent.id, SURPLUS_REASON):
                self.host.terminate(agent, SURPLUS_REASON)
                log.info("surplus agent retired", extra={"agent_id": agent.id, "tenant_id": agent.tenant_id})
        if target.detail:
            self.store.spent(target, target.spawned, "")

    def _grow(self, target: PoolTarget, request_ids: Sequence[str]) -> None:
        detail = ""
        spent = target.spawned
        for request_id in request_ids:
            spent += 1
            request = SpawnRequest(target.tenant_id, DEFAULT_TEMPLATE, target.role, None, request_id)
            try:
                agent = self.host.spawn(request)
            except QuotaExceeded as exc:  # at max_vms: the next pass asks again
                detail = f"quota refused a spawn: {exc.message}"
            except SwarmError as exc:
                detail = f"spawn failed: {exc.message}"
            except Exception as exc:  # a driver's own failure (the agent row already says it)
                detail = f"spawn failed: {type(exc).__name__}: {exc}"
            else:
                log.info(
                    "pool agent spawned",
                    extra={"agent_id": agent.id, "tenant_id": target.tenant_id, "role": target.role},
                )
                continue
            log.warning(
                "agent pool below target",
                extra={"tenant_id": target.tenant_id, "role": target.role, "detail": detail},
            )
            break
        self.store.spent(target, spent, detail)
