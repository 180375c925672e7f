"""Templates, versions and deployments in the database (both backends):
which version a ticket gets, outcomes counted exactly under 64 concurrent
agents, and the automatic rollback and promotion firing exactly at their
thresholds, once, audited and announced."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from swarm_ticketing.server import migrate
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.templates import TemplateStore
from swarm_ticketing.tables import metadata, outbox, template_deployment_changes, template_outcomes
from swarm_ticketing.templates import PLATFORM, DeploymentStatus, OutcomeCause
from swarmcommon.clock import SystemClock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.support.harness import BACKENDS

pytestmark = BACKENDS

TICKETS = [str(uuid.UUID(int=i)) for i in range(2000)]
OK, FAIL = OutcomeCause.SUBMITTED, OutcomeCause.STAGE_FAILED


@dataclass
class Stores:
    db: Database
    templates: TemplateStore
    deployments: Deployments


@pytest.fixture
def stores(db: str) -> Iterator[Stores]:
    migrate(db)
    database = Database.from_url(db, pool_size=70)
    clock = SystemClock()
    yield Stores(database, TemplateStore(database, clock), Deployments(database, clock))
    database.dispose()


def _coder(s: Stores, owner: str = PLATFORM, slug: str = "coder-default", versions: int = 2) -> None:
    s.templates.create_template(owner, slug, "coder", "Coder", "writes the change")
    for n in range(versions):
        s.templates.add_version(owner, slug, f"You are coder v{n + 1}.", "claude-sonnet-4-5", {}, {}, "ops")


def _share(s: Stores, tenant: str, version: int) -> set[str]:
    return {t for t in TICKETS if s.templates.resolve(tenant, "coder", t).version.version == version}


def _changes(s: Stores, deployment_id: str) -> list[str]:
    c = template_deployment_changes
    with s.db.engine.connect() as conn:
        rows = conn.execute(sa.select(c.c.action).where(c.c.deployment_id == deployment_id).order_by(c.c.seq))
        return [r.action for r in rows]


def _events(s: Stores, tenant: str) -> list[tuple[str, dict[str, object]]]:
    with s.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.event_type, outbox.c.payload)
            .where(outbox.c.tenant_id == tenant)
            .order_by(outbox.c.id)
        )
        return [(r.event_type, json.loads(r.payload)) for r in rows]


def test_a_canary_takes_its_share_and_tickets_keep_their_version(stores: Stores) -> None:
    _coder(stores)
    stores.deployments.deploy(PLATFORM, "ops", "coder-default", 1, 100)
    assert _share(stores, "acme", 1) == set(TICKETS)
    canary = stores.deployments.deploy(PLATFORM, "ops", "coder-default", 2, 10, ladder=[10, 25, 50, 100])
    assert canary.status is DeploymentStatus.CANARY and canary.stable_version_id is not None
    at_10 = _share(stores, "acme", 2)
    assert 160 <= len(at_10) <= 240, "10 % +- 2 % of 2,000 tickets"
    assert _share(stores, "acme", 2) == at_10, "every retry and stage attempt gets its first version"
    stores.deployments.promote(None, canary.id, "ops")
    at_25 = _share(stores, "acme", 2)
    assert at_10 < at_25 and 400 <= len(at_25) <= 600, "raising the share only adds tickets"
    resolved = stores.templates.resolve("acme", "coder", next(iter(at_10)))
    assert resolved.canary and resolved.deployment_id == canary.id
    assert resolved.version.prompt == "You are coder v2." and resolved.version.slug == "coder-default"


def test_a_tenants_deployment_wins_and_a_disabled_one_is_skipped(stores: Stores) -> None:
    _coder(stores)
    _coder(stores, owner="acme", slug="acme-coder", versions=1)
    stores.deployments.deploy(PLATFORM, "ops", "coder-default", 1, 100)
    own = stores.deployments.deploy("acme", "alice", "acme-coder", 1, 100)
    assert stores.templates.resolve("acme", "coder", TICKETS[0]).version.slug == "acme-coder"
    assert stores.templates.resolve("globex", "coder", TICKETS[0]).version.slug == "coder-default"
    stores.deployments.pause("acme", own.id, "alice")
    assert stores.templates.resolve("acme", "coder", TICKETS[0]).version.slug == "coder-default"
    assert _changes(stores, own.id) == ["created", "paused"]


def test_nothing_deployed_for_a_type_is_an_error_naming_it(stores: Stores) -> None:
    with pytest.raises(FailedPrecondition, match="no agent template is deployed for type 'security'"):
        stores.templates.resolve("acme", "security", TICKETS[0])


def test_another_tenants_template_is_not_found(stores: Stores) -> None:
    _coder(stores, owner="acme", slug="acme-coder", versions=1)
    with pytest.raises(NotFound):
        stores.templates.template("globex", "acme-coder")
    with pytest.raises(NotFound):
        stores.deployments.deploy("globex", "mallory", "acme-coder", 1, 100)
    with pytest.raises(NotFound):
        stores.templates.add_version("globex", "acme-coder", "pwned", "m", {}, {}, "mallory")


def _snapshot(s: Stores) -> dict[str, list[tuple[object, ...]]]:
    with s.db.engine.connect() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(sa.select(t))), key=repr) for t in metadata.sorted_tables
        }


def test_bad_inputs_are_refused_and_write_nothing(stores: Stores) -> None:
    _coder(stores)
    before = _snapshot(stores)
    with pytest.raises(InvalidArgument, match="unknown agent type 'poet'"):
        stores.templates.create_template(PLATFORM, "poet", "poet", "Poet", "")
    with pytest.raises(AlreadyExists):
        stores.templates.create_template(PLATFORM, "coder-default", "coder", "Coder", "")
    with pytest.raises(InvalidArgument, match="rollout_percent"):
        stores.deployments.deploy(PLATFORM, "ops", "coder-default", 1, 101)
    with pytest.raises(InvalidArgument, match="ladder"):
        stores.deployments.deploy(PLATFORM, "ops", "coder-default", 1, 5, ladder=[5, 5, 100])
    with pytest.raises(FailedPrecondition, match="deploy a first version at 100 percent"):
        stores.deployments.deploy(PLATFORM, "ops", "coder-default", 1, 5)
    with pytest.raises(NotFound, match="no version 9"):
        stores.deployments.deploy(PLATFORM, "ops", "coder-default", 9, 100)
    with pytest.raises(InvalidArgument, match="slug"):
        stores.templates.create_template(PLATFORM, "Bad Slug!", "coder", "x", "")
    assert _snapshot(stores) == before


def _canary(s: Stores, tenant: str = "acme") -> str:
    _coder(s, owner=tenant, slug=f"{tenant}-coder")
    s.deployments.deploy(tenant, "alice", f"{tenant}-coder", 1, 100)
    return s.deployments.deploy(tenant, "alice", f"{tenant}-coder", 2, 5).id


def _record(s: Stores, deployment_id: str, cause: OutcomeCause, ticket: str = "t") -> None:
    d = s.deployments.deployment("acme", deployment_id)
    s.deployments.record_outcome("acme", ticket, "coder", d.version_id, deployment_id, cause)


def test_rollback_fires_at_the_outcome_that_crosses_the_threshold_once(stores: Stores) -> None:
    d = _canary(stores)
    for cause in [OK] * 6 + [FAIL] * 3:  # 9 attempts, 33 %: too few to judge
        _record(stores, d, cause)
    assert stores.deployments.deployment("acme", d).status is DeploymentStatus.CANARY
    _record(stores, d, FAIL)  # the 10th: 4/10 = 40 %
    after = stores.deployments.deployment("acme", d)
    assert after.status is DeploymentStatus.ROLLBACK and (after.success_count, after.failure_count) == (6, 4)
    _record(stores, d, FAIL)
    assert _changes(stores, d) == ["created", "rolled_back"]
    rolled = [data for name, data in _events(stores, "acme") if name == "template.rolled_back"]
    assert len(rolled) == 1 and rolled[0]["reason"] == "Auto-rollback: 40.0% failure rate"
    assert _share(stores, "acme", 2) == set(), "every ticket is back on the stable version"


def test_promotion_fires_exactly_at_the_20th_success(stores: Stores) -> None:
    d = _canary(stores)
    for _ in range(19):
        _record(stores, d, OK)
    assert stores.deployments.deployment("acme", d).rollout_percent == 5
    _record(stores, d, OK)
    after = stores.deployments.deployment("acme", d)
    assert (after.status, after.rollout_percent) == (DeploymentStatus.ROLLING, 25)
    for _ in range(100):
        _record(stores, d, OK)
    assert stores.deployments.deployment("acme", d).rollout_percent == 25, "later steps are manual"
    stores.deployments.promote("acme", d, "alice")
    assert stores.deployments.deployment("acme", d).rollout_percent == 50
    assert _changes(stores, d) == ["created", "promoted", "promoted"]
    assert [n for n, _ in _events(stores, "acme")] == ["template.promoted", "template.promoted"]


def test_only_the_templates_own_outcomes_count(stores: Stores) -> None:
    d = _canary(stores)
    stable = stores.deployments.deployment("acme", d).stable_version_id
    assert stable is not None
    for _ in range(20):
        _record(stores, d, OutcomeCause.LEASE_LOST)  # dead VMs are not the prompt's fault
        stores.deployments.record_outcome("acme", "t", "coder", stable, d, FAIL)  # the stable version's
    after = stores.deployments.deployment("acme", d)
    assert (after.success_count, after.failure_count, after.status) == (0, 0, DeploymentStatus.CANARY)
    with stores.db.engine.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).select_from(template_outcomes)).scalar()
    assert logged == 40, "every outcome is logged against its version"


def test_64_agents_never_lose_a_count_and_the_rollback_happens_once(stores: Stores) -> None:
    d = _canary(stores)
    version = stores.deployments.deployment("acme", d).version_id
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def agent(n: int) -> None:
        try:
            start.wait()
            for i in range(5):
                cause = FAIL if (n + i) % 2 else OK
                stores.deployments.record_outcome("acme", f"t{n}", "coder", version, d, cause)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    after = stores.deployments.deployment("acme", d)
    assert after.success_count + after.failure_count == 320 and after.failure_count == 160
    assert after.status is DeploymentStatus.ROLLBACK
    assert _changes(stores, d) == ["created", "rolled_back"]
    assert [n for n, _ in _events(stores, "acme")] == ["template.rolled_back"]
