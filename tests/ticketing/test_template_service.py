"""AgentTemplateService over gRPC (both backends): a tenant authors a
template, rolls a version out as a canary, reads its counters, promotes,
rolls back and pauses it; bad inputs are INVALID_ARGUMENT and write nothing;
another tenant's template and deployment are NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest

from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import snapshot, tenant

pytestmark = BACKENDS


@pytest.fixture
def stub(ticketing: TicketingHarness) -> tpb_grpc.AgentTemplateServiceStub:
    return tpb_grpc.AgentTemplateServiceStub(ticketing.channel)


def _authored(stub: tpb_grpc.AgentTemplateServiceStub, t: str) -> str:
    slug = f"{t}-coder"
    stub.CreateTemplate(tpb.CreateTemplateRequest(tenant_id=t, slug=slug, agent_type="coder", name="Coder"))
    for n in (1, 2):
        stub.AddTemplateVersion(
            tpb.AddTemplateVersionRequest(
                tenant_id=t, slug=slug, prompt=f"You are v{n}.", parameters_json='{"max_tokens": 2048}'
            )
        )
    return slug


def test_author_deploy_promote_rollback_pause(stub: tpb_grpc.AgentTemplateServiceStub) -> None:
    t = tenant()
    slug = _authored(stub, t)
    got = stub.GetTemplate(tpb.GetTemplateRequest(tenant_id=t, slug=slug))
    assert got.template.owner_tenant_id == t and [x.version for x in got.versions] == [1, 2]
    assert got.versions[0].parameters_json == '{"max_tokens":2048}'
    stub.CreateDeployment(tpb.CreateDeploymentRequest(tenant_id=t, slug=slug, version=1, rollout_percent=100))
    canary = stub.CreateDeployment(
        tpb.CreateDeploymentRequest(tenant_id=t, slug=slug, version=2, rollout_percent=5)
    ).deployment
    assert (canary.status, canary.rollout_percent, list(canary.ladder)) == ("canary", 5, [5, 25, 50, 100])
    promoted = stub.PromoteDeployment(tpb.PromoteDeploymentRequest(tenant_id=t, deployment_id=canary.id))
    assert (promoted.deployment.status, promoted.deployment.rollout_percent) == ("rolling", 25)
    to_full = stub.PromoteDeployment(
        tpb.PromoteDeploymentRequest(tenant_id=t, deployment_id=canary.id, rollout_percent=100)
    )
    assert to_full.deployment.status == "full"
    back = stub.RollbackDeployment(
        tpb.RollbackDeploymentRequest(tenant_id=t, deployment_id=canary.id, reason="customers complained")
    )
    assert back.deployment.status == "rollback"
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "already rollback"):
        stub.RollbackDeployment(tpb.RollbackDeploymentRequest(tenant_id=t, deployment_id=canary.id))
    paused = stub.PauseDeployment(tpb.PauseDeploymentRequest(tenant_id=t, deployment_id=canary.id))
    assert paused.deployment.status == "disabled"
    status = stub.GetDeployment(tpb.GetDeploymentRequest(tenant_id=t, deployment_id=canary.id)).deployment
    assert (status.success_count, status.failure_count, status.failure_rate) == (0, 0, 0.0)


def test_bad_inputs_are_invalid_and_write_nothing(
    ticketing: TicketingHarness, stub: tpb_grpc.AgentTemplateServiceStub
) -> None:
    t = tenant()
    slug = _authored(stub, t)
    before = snapshot(ticketing)
    bad = [
        (
            stub.CreateTemplate,
            tpb.CreateTemplateRequest(tenant_id=t, slug="x-poet", agent_type="poet", name="P"),
        ),
        (
            stub.CreateTemplate,
            tpb.CreateTemplateRequest(tenant_id=t, slug=slug, agent_type="coder", name="C"),
        ),
        (stub.AddTemplateVersion, tpb.AddTemplateVersionRequest(tenant_id=t, slug=slug, prompt="")),
        (
            stub.AddTemplateVersion,
            tpb.AddTemplateVersionRequest(tenant_id=t, slug=slug, prompt="p", parameters_json="[1]"),
        ),
        (
            stub.CreateDeployment,
            tpb.CreateDeploymentRequest(tenant_id=t, slug=slug, version=1, rollout_percent=101),
        ),
        (
            stub.CreateDeployment,
            tpb.CreateDeploymentRequest(
                tenant_id=t, slug=slug, version=1, rollout_percent=5, ladder=[5, 5, 100]
            ),
        ),
    ]
    codes = []
    for call, request in bad:
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        codes.append(caught.value.code())
    assert codes == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    assert snapshot(ticketing) == before


def test_another_tenants_template_and_deployment_are_not_found(
    stub: tpb_grpc.AgentTemplateServiceStub,
) -> None:
    a, b = tenant(), tenant()
    slug = _authored(stub, a)
    mine = stub.CreateDeployment(
        tpb.CreateDeploymentRequest(tenant_id=a, slug=slug, version=1, rollout_percent=100)
    ).deployment
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.GetTemplate(tpb.GetTemplateRequest(tenant_id=b, slug=slug))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.CreateDeployment(
            tpb.CreateDeploymentRequest(tenant_id=b, slug=slug, version=1, rollout_percent=100)
        )
    for call, request in (
        (stub.GetDeployment, tpb.GetDeploymentRequest(tenant_id=b, deployment_id=mine.id)),
        (stub.PromoteDeployment, tpb.PromoteDeploymentRequest(tenant_id=b, deployment_id=mine.id)),
        (stub.RollbackDeployment, tpb.RollbackDeploymentRequest(tenant_id=b, deployment_id=mine.id)),
        (stub.PauseDeployment, tpb.PauseDeploymentRequest(tenant_id=b, deployment_id=mine.id)),
    ):
        with raises_status(grpc.StatusCode.NOT_FOUND):
            call(request)
    # The platform's templates are everyone's to read.
    assert stub.GetTemplate(tpb.GetTemplateRequest(tenant_id=b, slug="swarm-coder")).versions[0].version == 1
