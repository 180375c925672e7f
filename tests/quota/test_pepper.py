"""The API-key pepper: a real secret in production, refused at start-up when
it is missing, a placeholder or the old built-in default; generated once per
database in development mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as pb
from swarm_quota.config import Settings
from swarm_quota.tables import dev_secrets
from tests.support.harness import BACKENDS, QuotaHarness, start_quota

pytestmark = BACKENDS

REAL_PEPPER = "4f2a" * 16


@pytest.mark.parametrize(
    "pepper",
    [
        "swarm-dev-pepper-change-me",  # the old built-in default
        "PLACEHOLDER-not-a-real-pepper-change-me",  # deploy/k8s/base/quota/secret.yaml
        "placeholder-" + "x" * 40,
        "change-me-" + "x" * 40,
        "too-short-to-be-a-secret",
    ],
)
def test_a_placeholder_or_weak_pepper_is_refused_at_start_up(db: str, pepper: str) -> None:
    for dev_mode in (False, True):
        with pytest.raises(ValueError, match="SWARM_QUOTA_API_KEY_PEPPER"):
            Settings(database_url=db, api_key_pepper=pepper, dev_mode=dev_mode)


def test_no_pepper_is_refused_outside_development_mode(db: str) -> None:
    with pytest.raises(ValueError, match="SWARM_QUOTA_API_KEY_PEPPER") as caught:
        Settings(database_url=db, api_key_pepper="", dev_mode=False)
    assert "SWARM_QUOTA_DEV_MODE" in str(caught.value)


def _key_authenticates(q: QuotaHarness, secret: str) -> bool:
    return q.stub.Authenticate(pb.AuthenticateRequest(secret=secret)).tenant.id == "acme"


def test_a_real_pepper_is_used_and_nothing_is_generated(db: str) -> None:
    q = start_quota(db, api_key_pepper=REAL_PEPPER, dev_mode=False)
    try:
        q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
        secret = q.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme")).secret
        assert _key_authenticates(q, secret)
        with q.app.db.engine.connect() as conn:
            assert conn.execute(sa.select(dev_secrets)).all() == []
    finally:
        q.stop()


def _stored_pepper(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.select(dev_secrets.c.value)).scalar_one())
    finally:
        engine.dispose()


def test_development_mode_generates_a_pepper_per_database_and_keeps_it(db: str, tmp_path: Path) -> None:
    first = start_quota(db, api_key_pepper="", dev_mode=True)
    try:
        first.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="acme"))
        secret = first.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="acme")).secret
    finally:
        first.stop()
    again = start_quota(db, api_key_pepper="", dev_mode=True)
    try:
        assert _key_authenticates(again, secret)  # the same pepper after a restart
    finally:
        again.stop()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    start_quota(other, api_key_pepper="", dev_mode=True).stop()
    assert len(_stored_pepper(db)) >= 64
    assert _stored_pepper(other) != _stored_pepper(db)
