"""API keys: shown once, stored only as a hash, revocable."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import grpc
import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.quota.v1 import quota_pb2 as pb
from swarm_quota.tables import metadata
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status

pytestmark = BACKENDS


def test_api_keys_are_not_recoverable_from_the_database(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
    created = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme", display_name="ci"))
    secret = created.secret
    assert secret.startswith(created.api_key.secret_prefix + "_")
    hidden = secret.removeprefix(created.api_key.secret_prefix + "_")
    with quota.app.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for value in row:
                    assert secret not in str(value) and hidden not in str(value), (
                        f"secret found in {table.name}"
                    )
    listed = quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id="acme")).api_keys
    assert [k.id for k in listed] == [created.api_key.id]
    assert secret not in str(listed)


def test_authenticate_accepts_the_key_and_refuses_tampered_or_revoked(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme", plan=pb.PLAN_PRO))
    created = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme"))
    who = quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    assert who.tenant.id == "acme" and who.api_key_id == created.api_key.id
    tampered = created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")
    for bad in [tampered, "", "swk_000000000000_" + "x" * 48, "garbage"]:
        with raises_status(grpc.StatusCode.UNAUTHENTICATED, "invalid API key"):
            quota.stub.Authenticate(pb.AuthenticateRequest(secret=bad))
    quota.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id="acme", api_key_id=created.api_key.id))
    again = quota.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id="acme", api_key_id=created.api_key.id))
    assert again.api_key.HasField("revoke_time")
    with raises_status(grpc.StatusCode.UNAUTHENTICATED, "invalid API key"):
        quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    assert quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id="acme")).api_keys == []
    assert (
        len(quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id="acme", show_revoked=True)).api_keys) == 1
    )


def test_another_tenants_key_cannot_be_revoked(quota: QuotaHarness) -> None:
    for t in ("a", "b"):
        quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=t))
    key = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="a")).api_key
    with raises_status(grpc.StatusCode.NOT_FOUND):
        quota.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id="b", api_key_id=key.id))


def test_secret_format_and_prefix(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
    created = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme", display_name="ci pipeline"))
    assert re.fullmatch(r"swk_[0-9a-f]{12}_[A-Za-z0-9_-]{48}", created.secret)
    assert created.api_key.secret_prefix == created.secret[:16]
    assert created.api_key.display_name == "ci pipeline"
    other = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme")).secret
    assert other != created.secret


def test_an_expired_key_no_longer_authenticates(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
    expire = Timestamp()
    expire.FromDatetime(datetime(2030, 1, 1, 1, tzinfo=UTC))
    created = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme", expire_time=expire))
    assert created.api_key.expire_time == expire
    quota.clock.advance(timedelta(minutes=59, seconds=59))
    quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    quota.clock.advance(timedelta(seconds=1))
    with raises_status(grpc.StatusCode.UNAUTHENTICATED, "invalid API key"):
        quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))


def test_last_use_is_recorded_at_most_once_a_minute(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
    created = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme"))

    def last_use() -> datetime:
        keys = quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id="acme")).api_keys
        return keys[0].last_use_time.ToDatetime(tzinfo=UTC)

    assert (
        not quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id="acme"))
        .api_keys[0]
        .HasField("last_use_time")
    )
    quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    first = last_use()
    assert first == datetime(2030, 1, 1, tzinfo=UTC)
    quota.clock.advance(timedelta(seconds=30))
    quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    assert last_use() == first
    quota.clock.advance(timedelta(seconds=31))
    quota.stub.Authenticate(pb.AuthenticateRequest(secret=created.secret))
    assert last_use() == datetime(2030, 1, 1, 0, 1, 1, tzinfo=UTC)
