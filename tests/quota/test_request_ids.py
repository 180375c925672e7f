"""Request ids (AIP-155) on every mutating quota call: a retry with the same
request_id answers as the first call did and writes nothing; the same
request_id on a different request is INVALID_ARGUMENT and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import VMS, consume, reserve, snapshot, tenant
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status

pytestmark = BACKENDS

Ctx = dict[str, Any]
Call = Callable[[QuotaHarness, Ctx, str], Message]


def _nothing(q: QuotaHarness) -> Ctx:
    return {}


def _tenant(q: QuotaHarness) -> Ctx:
    return {"tenant": tenant(q)}


def _two_keys(q: QuotaHarness) -> Ctx:
    tid = tenant(q)
    keys = [q.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=tid)).api_key.id for _ in range(2)]
    return {"tenant": tid, "keys": keys}


def _two_reservations(q: QuotaHarness) -> Ctx:
    tid = tenant(q)
    return {"tenant": tid, "held": [reserve(q, tid).reservation.id for _ in range(2)]}


def _rename(name: str) -> Call:
    return lambda q, c, rid: q.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id=c["tenant"],
            tenant=pb.Tenant(display_name=name),
            update_mask={"paths": ["display_name"]},
            request_id=rid,
        )
    )


def _without_secret(reply: Message) -> Message:
    assert isinstance(reply, pb.CreateApiKeyResponse)
    return pb.CreateApiKeyResponse(api_key=reply.api_key)


@dataclass(frozen=True)
class Case:
    setup: Callable[[QuotaHarness], Ctx]
    call: Call
    # The same request_id on a request that differs in one field.
    other: Call
    # What a retry answers, given the first answer.
    replayed: Callable[[Message], Message] = lambda first: first


CASES = {
    "CreateTenant": Case(
        _nothing,
        lambda q, c, rid: q.stub.CreateTenant(pb.CreateTenantRequest(display_name="Acme", request_id=rid)),
        lambda q, c, rid: q.stub.CreateTenant(pb.CreateTenantRequest(display_name="Other", request_id=rid)),
    ),
    "UpdateTenant": Case(_tenant, _rename("A"), _rename("B")),
    "CreateApiKey": Case(
        _tenant,
        lambda q, c, rid: q.stub.CreateApiKey(
            pb.CreateApiKeyRequest(tenant_id=c["tenant"], display_name="ci", request_id=rid)
        ),
        lambda q, c, rid: q.stub.CreateApiKey(
            pb.CreateApiKeyRequest(tenant_id=c["tenant"], display_name="cd", request_id=rid)
        ),
        # The secret is shown once and stored nowhere: a retry gets the key without it.
        _without_secret,
    ),
    "RevokeApiKey": Case(
        _two_keys,
        lambda q, c, rid: q.stub.RevokeApiKey(
            pb.RevokeApiKeyRequest(tenant_id=c["tenant"], api_key_id=c["keys"][0], request_id=rid)
        ),
        lambda q, c, rid: q.stub.RevokeApiKey(
            pb.RevokeApiKeyRequest(tenant_id=c["tenant"], api_key_id=c["keys"][1], request_id=rid)
        ),
    ),
    "Consume": Case(
        _tenant,
        lambda q, c, rid: consume(q, c["tenant"], 3, request_id=rid),
        lambda q, c, rid: consume(q, c["tenant"], 4, request_id=rid),
    ),
    "Reserve": Case(
        _tenant,
        lambda q, c, rid: reserve(q, c["tenant"], request_id=rid, owner="vmhost/a"),
        lambda q, c, rid: reserve(q, c["tenant"], request_id=rid, owner="vmhost/b"),
    ),
    "Release": Case(
        _two_reservations,
        lambda q, c, rid: q.stub.Release(
            pb.ReleaseRequest(tenant_id=c["tenant"], reservation_id=c["held"][0], request_id=rid)
        ),
        lambda q, c, rid: q.stub.Release(
            pb.ReleaseRequest(tenant_id=c["tenant"], reservation_id=c["held"][1], request_id=rid)
        ),
    ),
}
RPCS = pytest.mark.parametrize("rpc", list(CASES))


@RPCS
def test_a_retry_answers_as_the_first_call_and_writes_nothing(quota: QuotaHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(quota)
    first = case.call(quota, ctx, "req-1")
    before = snapshot(quota)
    quota.clock.advance(timedelta(seconds=30))  # an update retried later must not touch update_time
    again = case.call(quota, ctx, "req-1")
    assert again == case.replayed(first)
    assert snapshot(quota) == before


@RPCS
def test_a_request_id_reused_for_another_request_is_refused(quota: QuotaHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(quota)
    case.call(quota, ctx, "req-1")
    before = snapshot(quota)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", rpc):
        case.other(quota, ctx, "req-1")
    assert snapshot(quota) == before


@pytest.mark.parametrize("rpc", ["CreateTenant", "UpdateTenant", "RevokeApiKey", "Release"])
def test_concurrent_retries_get_one_answer_and_one_write(quota: QuotaHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(quota)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: case.call(quota, ctx, "same"), range(8)))
    assert all(a == answers[0] for a in answers)
    before = snapshot(quota)
    assert case.call(quota, ctx, "same") == answers[0]
    assert snapshot(quota) == before


def test_a_released_reservation_retried_still_reports_it_released(quota: QuotaHarness) -> None:
    tid = tenant(quota, vms=1)
    held = reserve(quota, tid).reservation.id

    def release() -> pb.ReleaseResponse:
        return quota.stub.Release(pb.ReleaseRequest(tenant_id=tid, reservation_id=held, request_id="free-1"))

    first = release()
    assert first.released and first.usage.used == 0
    assert release().released
    # Without a request_id a second release is a no-op that says so.
    plain = quota.stub.Release(pb.ReleaseRequest(tenant_id=tid, reservation_id=held))
    assert not plain.released and plain.usage.resource == VMS
