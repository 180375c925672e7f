"""Request ids (AIP-155) on AgentTemplateService's mutating calls, both
backends: a retry answers as the first call did and changes nothing; the
same id on another request is INVALID_ARGUMENT and writes nothing."""

from __future__ import annotations

import grpc
import pytest
import sqlalchemy as sa

from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm_ticketing.tables import agent_template_versions, agent_templates, template_deployment_changes
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import snapshot, tenant

pytestmark = BACKENDS


@pytest.fixture
def stub(ticketing: TicketingHarness) -> tpb_grpc.AgentTemplateServiceStub:
    return tpb_grpc.AgentTemplateServiceStub(ticketing.channel)


def _count(h: TicketingHarness, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with h.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def test_a_retried_create_and_version_make_one_of_each(
    ticketing: TicketingHarness, stub: tpb_grpc.AgentTemplateServiceStub
) -> None:
    t = tenant()
    create = tpb.CreateTemplateRequest(
        tenant_id=t, slug=f"{t}-c", agent_type="coder", name="C", request_id="c-1"
    )
    first, again = stub.CreateTemplate(create), stub.CreateTemplate(create)
    assert first.template.id == again.template.id
    assert _count(ticketing, agent_templates, agent_templates.c.owner_tenant_id == t) == 1

    add = tpb.AddTemplateVersionRequest(tenant_id=t, slug=f"{t}-c", prompt="You are v1.", request_id="v-1")
    v1, v1_again = stub.AddTemplateVersion(add), stub.AddTemplateVersion(add)
    assert (v1.version.version_id, v1.version.version) == (v1_again.version.version_id, 1)
    assert v1_again.version.prompt == "You are v1."
    assert (
        _count(ticketing, agent_template_versions, agent_template_versions.c.template_id == first.template.id)
        == 1
    )
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        stub.AddTemplateVersion(
            tpb.AddTemplateVersionRequest(tenant_id=t, slug=f"{t}-c", prompt="You are v2.", request_id="v-1")
        )
    assert snapshot(ticketing) == before
    v2 = stub.AddTemplateVersion(
        tpb.AddTemplateVersionRequest(tenant_id=t, slug=f"{t}-c", prompt="You are v2.", request_id="v-2")
    )
    assert v2.version.version == 2


def test_retried_deployment_changes_happen_once(
    ticketing: TicketingHarness, stub: tpb_grpc.AgentTemplateServiceStub
) -> None:
    t = tenant()
    slug = f"{t}-c"
    stub.CreateTemplate(tpb.CreateTemplateRequest(tenant_id=t, slug=slug, agent_type="coder", name="C"))
    for n in (1, 2):
        stub.AddTemplateVersion(tpb.AddTemplateVersionRequest(tenant_id=t, slug=slug, prompt=f"v{n}"))
    stub.CreateDeployment(tpb.CreateDeploymentRequest(tenant_id=t, slug=slug, version=1, rollout_percent=100))
    deploy = tpb.CreateDeploymentRequest(
        tenant_id=t, slug=slug, version=2, rollout_percent=5, request_id="d-1"
    )
    canary = stub.CreateDeployment(deploy).deployment
    assert stub.CreateDeployment(deploy).deployment.id == canary.id

    def changes(action: str) -> int:
        c = template_deployment_changes.c
        return _count(
            ticketing, template_deployment_changes, c.deployment_id == canary.id, c.action == action
        )

    promote = tpb.PromoteDeploymentRequest(tenant_id=t, deployment_id=canary.id, request_id="p-1")
    assert stub.PromoteDeployment(promote).deployment.rollout_percent == 25
    assert stub.PromoteDeployment(promote).deployment.rollout_percent == 25, "promoted once, not to 50"
    assert changes("promoted") == 1
    rollback = tpb.RollbackDeploymentRequest(
        tenant_id=t, deployment_id=canary.id, reason="bad", request_id="r-1"
    )
    assert stub.RollbackDeployment(rollback).deployment.status == "rollback"
    assert stub.RollbackDeployment(rollback).deployment.status == "rollback", (
        "answered, not 'already rollback'"
    )
    pause = tpb.PauseDeploymentRequest(tenant_id=t, deployment_id=canary.id, request_id="x-1")
    assert stub.PauseDeployment(pause).deployment.status == "disabled"
    assert stub.PauseDeployment(pause).deployment.status == "disabled"
    assert (changes("rolled_back"), changes("paused")) == (1, 1)
    before = snapshot(ticketing)
    with raises_status(
        grpc.StatusCode.INVALID_ARGUMENT, "request_id"
    ):  # ids are scoped by call: same call, new body
        stub.RollbackDeployment(
            tpb.RollbackDeploymentRequest(
                tenant_id=t, deployment_id=canary.id, reason="other", request_id="r-1"
            )
        )
    assert snapshot(ticketing) == before
