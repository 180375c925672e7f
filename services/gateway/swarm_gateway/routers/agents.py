"""Agents (vmhost's VMs) and the tenant's target pool of them, backed by
vmhost's VmHostService. The tenant comes from the API key: another
tenant's agent is 404, and a pool is only ever the caller's own.

vmhost is one node's: with several nodes behind one Service, these routes
reach whichever node answers (see swarm_vmhost.pool).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarm_gateway.agent_models import (
    AGENT_ROLE,
    AGENT_STATE,
    DRIVER,
    AgentCreate,
    AgentPage,
    AgentPoolPublic,
    AgentPoolUpdate,
    AgentPublic,
    AgentState,
    HealingActionPage,
    HealingActionPublic,
)
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import UUID_PATTERN, Role

router = APIRouter(prefix="/api", tags=["agents"], responses=COMMON_ERRORS)

AgentId = Annotated[str, Path(pattern=UUID_PATTERN)]
# Why an agent stopped over REST, as its state_reason says.
TERMINATE_REASON = "terminated by its tenant"


@router.get("/agents", response_model=AgentPage)
def list_agents(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    state: AgentState | None = None,
    role: Role | None = None,
) -> AgentPage:
    """The tenant's agents, oldest first; terminated ones only when asked for by state."""
    reply = b.vmhost.stub.ListAgents(
        vpb.ListAgentsRequest(
            tenant_id=caller.tenant_id,
            state=AGENT_STATE.number(state),  # type: ignore[arg-type]
            role=AGENT_ROLE.number(role),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return AgentPage(
        items=[AgentPublic.from_proto(a) for a in reply.agents], next_page_token=reply.next_page_token
    )


@router.post("/agents", status_code=status.HTTP_201_CREATED, response_model=AgentPublic)
def spawn_agent(
    body: AgentCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> AgentPublic:
    """Start an agent; it is `starting` until its first heartbeat. Holds one of
    the tenant's VMs in quota (429 at the limit)."""
    reply = b.vmhost.stub.SpawnAgent(
        vpb.SpawnAgentRequest(
            tenant_id=caller.tenant_id,
            template=body.template or "",
            role=AGENT_ROLE.number(body.role),  # type: ignore[arg-type]
            driver=DRIVER.number(body.driver),  # type: ignore[arg-type]
            request_id=request_id,
        )
    )
    return AgentPublic.from_proto(reply.agent)


@router.get("/agents/{agent_id}", response_model=AgentPublic)
def get_agent(agent_id: AgentId, caller: CurrentCaller, b: BackendsDep) -> AgentPublic:
    reply = b.vmhost.stub.GetAgent(vpb.GetAgentRequest(tenant_id=caller.tenant_id, agent_id=agent_id))
    return AgentPublic.from_proto(reply.agent)


@router.delete("/agents/{agent_id}", response_model=AgentPublic)
def terminate_agent(
    agent_id: AgentId, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> AgentPublic:
    """Stop the agent (its tickets go back to the queue, its VM to quota);
    stopping a terminated agent returns it unchanged."""
    reply = b.vmhost.stub.TerminateAgent(
        vpb.TerminateAgentRequest(
            tenant_id=caller.tenant_id, agent_id=agent_id, reason=TERMINATE_REASON, request_id=request_id
        )
    )
    return AgentPublic.from_proto(reply.agent)


@router.get("/agents/{agent_id}/healing", response_model=HealingActionPage)
def list_agent_healing(
    agent_id: AgentId, caller: CurrentCaller, b: BackendsDep, page: Paging
) -> HealingActionPage:
    """What self-healing did about this agent, newest first."""
    # The agent first: another tenant's is 404, not an empty page.
    b.vmhost.stub.GetAgent(vpb.GetAgentRequest(tenant_id=caller.tenant_id, agent_id=agent_id))
    reply = b.vmhost.stub.ListHealingActions(
        vpb.ListHealingActionsRequest(
            tenant_id=caller.tenant_id, agent_id=agent_id, page_size=page.size, page_token=page.token
        )
    )
    return HealingActionPage(
        items=[HealingActionPublic.from_proto(h) for h in reply.actions],
        next_page_token=reply.next_page_token,
    )


@router.get("/agent-pool", response_model=AgentPoolPublic)
def get_agent_pool(caller: CurrentCaller, b: BackendsDep) -> AgentPoolPublic:
    """How many agents of each role the tenant wants kept running, and how many are."""
    reply = b.vmhost.stub.GetAgentPool(vpb.GetAgentPoolRequest(tenant_id=caller.tenant_id))
    return AgentPoolPublic.from_proto(reply.pool)


@router.put("/agent-pool", response_model=AgentPoolPublic)
def set_agent_pool(body: AgentPoolUpdate, caller: CurrentCaller, b: BackendsDep) -> AgentPoolPublic:
    """Replace the pool: agents are spawned up to each role's count and idle
    surplus ones stopped, oldest first; roles not listed are left alone. The
    same body twice is the same pool, so no Idempotency-Key is needed."""
    reply = b.vmhost.stub.SetAgentPool(body.to_proto(caller.tenant_id))
    return AgentPoolPublic.from_proto(reply.pool)
