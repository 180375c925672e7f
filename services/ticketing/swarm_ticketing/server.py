"""Wiring: settings + clock -> a running ticketing server (used by
`python -m swarm_ticketing`, the tests and the benchmarks)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing import learning_servicer, marketplace_servicer, snapshot_servicer, template_servicer
from swarm_ticketing.config import Settings
from swarm_ticketing.default_templates import ensure_defaults
from swarm_ticketing.domain import LeasePolicy
from swarm_ticketing.fairness import FairClaims, parse_weights
from swarm_ticketing.gitcredentials import FileCredentials
from swarm_ticketing.longpoll import LongPollServicer
from swarm_ticketing.marketplace import KEYRING, PromptSealer
from swarm_ticketing.matching import ParkedPollers
from swarm_ticketing.notify import ReadyListener, ReadySignal, new_origin
from swarm_ticketing.platform_git import PlatformGit
from swarm_ticketing.quota import TicketQuota
from swarm_ticketing.reaper import Reaper
from swarm_ticketing.repositories import RepositoryPolicy
from swarm_ticketing.servicer import ACCESS, Stores, TicketingServicer
from swarm_ticketing.snapshots import Checkpoints
from swarm_ticketing.stores.cancels import Cancellations
from swarm_ticketing.stores.claims import Claims
from swarm_ticketing.stores.conventions import Conventions
from swarm_ticketing.stores.cost_caps import CostCaps
from swarm_ticketing.stores.dead_letters import DeadLetters
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.edits import Edits
from swarm_ticketing.stores.learnings import Learnings
from swarm_ticketing.stores.leases import LeaseManager
from swarm_ticketing.stores.listings import Listings
from swarm_ticketing.stores.lost import LostLeases
from swarm_ticketing.stores.marketplace import Marketplace
from swarm_ticketing.stores.merge_requests import MergeRequests
from swarm_ticketing.stores.project_history import ProjectHistory
from swarm_ticketing.stores.projects import Projects
from swarm_ticketing.stores.rollbacks import Rollbacks
from swarm_ticketing.stores.snapshots import Snapshots
from swarm_ticketing.stores.stage_templates import StageTemplates
from swarm_ticketing.stores.templates import TemplateStore
from swarm_ticketing.stores.tickets import Tickets
from swarm_ticketing.tables import VERSION_TABLE, outbox, outbox_dead_letters
from swarmcommon import metrics, migrations
from swarmcommon.aioserver import AioServerHandle, start_aio_server
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService
from swarmcommon.outbox import OutboxRelay
from swarmcommon.revocation import RevocationList, revocation_list, revoked, start_revocations
from swarmcommon.security import ServerSecurity, client_tls

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.ticketing.v1.TicketingService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Ticketing:
    handle: AioServerHandle
    db: Database
    stores: Stores
    reaper: Reaper
    pollers: ParkedPollers
    executor: ThreadPoolExecutor
    listener: ReadyListener | None = None
    relay: OutboxRelay | None = None
    quota: TicketQuota | None = None
    revocations: RevocationList | None = None
    marketplace: Marketplace | None = None

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.reaper.stop()
        if self.listener is not None:
            self.listener.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.revocations is not None:
            self.revocations.stop()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.db.dispose()
        if self.quota is not None:
            self.quota.close()

    def stop(self, grace: float = 5.0) -> None:
        self.before_drain()
        self.handle.stop(grace)
        self.close()


def build_stores(db: Database, clock: Clock, settings: Settings, quota: TicketQuota | None) -> Stores:
    policy = LeasePolicy(
        default_lease=timedelta(seconds=settings.lease_seconds), max_failures=settings.max_failures
    )
    templates, deployments = TemplateStore(db, clock), Deployments(db, clock)
    stages = StageTemplates(deployments)
    return Stores(
        projects=Projects(db, clock, quota),
        tickets=Tickets(db),
        dead_letters=DeadLetters(db, clock),
        claims=Claims(db, clock, policy, stages),
        leases=LeaseManager(db, clock, policy, stages),
        lost=LostLeases(db, clock, policy),
        merge_requests=MergeRequests(db),
        cost_caps=CostCaps(db, clock),
        templates=templates,
        deployments=deployments,
        cancels=Cancellations(db, clock),
        edits=Edits(db, clock),
    )


def start(settings: Settings, clock: Clock | None = None) -> Ticketing:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    quota = TicketQuota(settings.quota_target, client_tls(settings)) if settings.quota_target else None
    stores = build_stores(db, clock, settings, quota)
    # Sealed prompts are opened on the claim path, where no server object
    # reaches: the process-wide keyring holds this server's key(s).
    sealer = PromptSealer(settings.marketplace_keys())
    KEYRING.add(sealer)
    listings, marketplace = Listings(db, clock, sealer), Marketplace(db, clock)
    ensure_defaults(stores.templates, stores.deployments)
    # Long polls park on the event loop; database work runs in these threads.
    executor = ThreadPoolExecutor(max_workers=settings.grpc_max_workers, thread_name_prefix="rpc")
    pollers = ParkedPollers(settings.claim_recheck_seconds)
    origin = new_origin()
    db.add_commit_hook(ReadySignal(pollers, postgres=db.is_postgres, origin=origin))
    db.add_commit_hook(metrics.CountAfterCommit())  # quarantines and redrives, once committed
    listener = ReadyListener(settings.database_url, pollers, origin) if db.is_postgres else None
    repositories = RepositoryPolicy.from_settings(
        settings.repository_prefixes, settings.local_repository_root
    )
    credentials = FileCredentials.load(settings.git_credentials_file)
    servicer = LongPollServicer(
        TicketingServicer(stores, repositories, credentials),
        pollers,
        FairClaims(executor, settings.claim_slots, parse_weights(settings.tenant_weights)),
    )
    # Snapshots and rollback: git run by this process on projects' repositories.
    Checkpoints.every = settings.checkpoint_every
    platform_git = PlatformGit(repositories, credentials)
    snapshots = Snapshots(db, clock, platform_git)
    rollbacks = Rollbacks(db, clock, platform_git, snapshots)
    # Learning from history: conventions read from repositories by this process's git.
    conventions = Conventions(db, clock, platform_git)
    learnings = Learnings(db, clock, stores.leases, conventions, settings.lessons_token_budget)
    revocations = revocation_list(settings.vmhost_target, settings)
    handle = start_aio_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_TicketingServiceServicer_to_server(servicer, server),
                domain="swarm.ticketing",
                access=ACCESS,
                # Mostly parked, mostly empty: LongPollServicer traces the claims.
                untraced_methods=frozenset({"ClaimTicket"}),
            ),
            GrpcService(
                template_servicer.SERVICE_NAME,
                lambda server: tpb_grpc.add_AgentTemplateServiceServicer_to_server(
                    template_servicer.AgentTemplateServicer(stores.templates, stores.deployments), server
                ),
                domain="swarm.ticketing",
                access=template_servicer.ACCESS,
            ),
            GrpcService(
                marketplace_servicer.SERVICE_NAME,
                lambda server: mpb_grpc.add_MarketplaceServiceServicer_to_server(
                    marketplace_servicer.MarketplaceServicer(listings, marketplace), server
                ),
                domain="swarm.ticketing",
                access=marketplace_servicer.ACCESS,
            ),
            GrpcService(
                snapshot_servicer.SERVICE_NAME,
                lambda server: spb_grpc.add_SnapshotServiceServicer_to_server(
                    snapshot_servicer.SnapshotServicer(snapshots, rollbacks, ProjectHistory(db)), server
                ),
                domain="swarm.ticketing",
                access=snapshot_servicer.ACCESS,
            ),
            GrpcService(
                learning_servicer.SERVICE_NAME,
                lambda server: lpb_grpc.add_LearningServiceServicer_to_server(
                    learning_servicer.LearningServicer(learnings, conventions), server
                ),
                domain="swarm.ticketing",
                access=learning_servicer.ACCESS,
            ),
        ],
        listen_address=settings.listen_address,
        security=ServerSecurity.from_settings(settings, agent_tokens=True, revoked=revoked(revocations)),
        executor=executor,
        agent_listen_address=settings.agent_listen_address,
        reuse_port=settings.reuse_port,
        on_loop=pollers.bind,
        metrics_port=settings.worker_metrics_port(),
    )
    if listener is not None:
        listener.start()
    reaper = Reaper(
        stores.lost,
        settings.reaper_interval_seconds,
        timedelta(seconds=settings.request_retention_seconds),
        stale_after=timedelta(minutes=settings.stale_lease_minutes) if settings.stale_lease_minutes else None,
    )
    reaper.start()
    relay = (
        OutboxRelay(db, outbox, outbox_dead_letters, settings.events_target, tls=client_tls(settings))
        if settings.events_target
        else None
    )
    if relay is not None:
        relay.start()
    start_revocations(revocations)
    return Ticketing(
        handle, db, stores, reaper, pollers, executor, listener, relay, quota, revocations, marketplace
    )
