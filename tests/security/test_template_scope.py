"""Agent templates for every tenant (tenant_id "") are an operator's: the
gateway — which acts for whichever tenant an API key names — cannot author
the platform's templates or roll a version out to every tenant, even with
its own valid certificate; an operator can. Real servers, real mTLS."""

from __future__ import annotations

import grpc
import pytest

from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from tests.support.pki import MeshPki, own_channel
from tests.support.secure import SecureService


def _stub(
    servers: dict[str, SecureService], pki: MeshPki, identity: str
) -> tpb_grpc.AgentTemplateServiceStub:
    return tpb_grpc.AgentTemplateServiceStub(own_channel(servers["ticketing"].target, pki.identity(identity)))


def test_only_an_operator_acts_for_every_tenant(servers: dict[str, SecureService], pki: MeshPki) -> None:
    gateway, operator = _stub(servers, pki, "gateway"), _stub(servers, pki, "operator-admin")
    for attempt in (
        lambda s: s.CreateTemplate(
            tpb.CreateTemplateRequest(tenant_id="", slug="evil-coder", agent_type="coder", name="x")
        ),
        lambda s: s.AddTemplateVersion(
            tpb.AddTemplateVersionRequest(tenant_id="", slug="swarm-coder", prompt="pwned")
        ),
        lambda s: s.CreateDeployment(
            tpb.CreateDeploymentRequest(tenant_id="", slug="swarm-coder", version=1, rollout_percent=100)
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            attempt(gateway)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only an operator" in (refused.value.details() or "")
    # The platform's own template is untouched, and an operator may read and manage it.
    platform = operator.GetTemplate(tpb.GetTemplateRequest(tenant_id="", slug="swarm-coder"))
    assert [v.version for v in platform.versions] == [1]
    assert "pwned" not in platform.versions[0].prompt
    # The gateway acting for a tenant is served as before.
    assert gateway.GetTemplate(tpb.GetTemplateRequest(tenant_id="acme", slug="swarm-coder")).versions
