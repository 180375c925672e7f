"""Client SDK for agents: the ticketing calls an agent makes, with request
ids set so that retries (the channel retries UNAVAILABLE) are safe.

Calls go through swarmcommon's TicketingClient (default deadline, SwarmError
instead of grpc.RpcError); a lease the server no longer honours
(FAILED_PRECONDITION) becomes LeaseLost, which the agent loop acts on."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.credentials import AgentCredentials
from swarmcommon import clients
from swarmcommon.errors import SwarmError


@dataclass(frozen=True)
class ClaimedTicket:
    ticket: pb.Ticket
    lease: pb.Lease
    stage: int
    # The ticket's repository's credential, when ticketing's store has one.
    git_credential: pb.GitCredential | None = None
    # The agent template version this stage runs with (its prompt, model, parameters).
    template: pb.AgentTemplateVersion | None = None
    # A judge's ensemble attempts to choose from.
    attempts: tuple[pb.EnsembleAttempt, ...] = ()

    @property
    def id(self) -> str:
        return str(self.ticket.id)

    @property
    def token(self) -> str:
        return str(self.lease.claim_token)

    @property
    def stage_name(self) -> str:
        return str(pb.AgentRole.Name(self.stage)).removeprefix("AGENT_ROLE_").lower()


# A long poll's deadline is its wait plus this: the server answers (empty)
# when the wait ends, well before the call would time out.
WAIT_SLACK = 10.0


def _seconds(value: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=value))
    return d


def _until_stopped(call: Any, stop: threading.Event | None) -> pb.ClaimTicketResponse | None:
    """The call's answer; None when `stop` was set first (the call is cancelled)."""
    done = threading.Event()
    call.add_done_callback(lambda _: done.set())
    while not done.wait(0.1):
        if stop is not None and stop.is_set():
            call.cancel()
            return None
    reply: pb.ClaimTicketResponse = call.result()
    return reply


class LeaseLost(Exception):
    """The lease is gone (expired and reassigned, or released): stop working."""


class TicketingClient:
    """One agent's view of ticketing: its tenant, its id, its lease length."""

    def __init__(
        self,
        target: str,
        tenant_id: str,
        agent_id: str,
        *,
        lease: timedelta | None = None,
        credentials: AgentCredentials | None = None,
    ) -> None:
        # With credentials: TLS to ticketing's agent port, the current token on every call.
        channel = credentials.channel("ticketing") if credentials is not None else {}
        self._service = clients.TicketingClient(target, **channel)
        self.stub = self._service.stub
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.lease = lease

    def close(self) -> None:
        self._service.close()

    def _lease_duration(self) -> Duration | None:
        if self.lease is None:
            return None
        d = Duration()
        d.FromTimedelta(self.lease)
        return d

    def claim(
        self,
        role: int = pb.AGENT_ROLE_UNSPECIFIED,
        project_id: str = "",
        *,
        wait: float = 0.0,
        stop: threading.Event | None = None,
    ) -> ClaimedTicket | None:
        """The best claimable ticket, or None. With `wait` (seconds, the
        server caps it at 60), a long poll: the call waits for a ticket to
        become ready; setting `stop` hangs up, and the server then takes none."""
        request = pb.ClaimTicketRequest(
            tenant_id=self.tenant_id,
            agent_id=self.agent_id,
            role=role,  # type: ignore[arg-type]
            project_id=project_id,
            request_id=str(uuid.uuid4()),
            lease_duration=self._lease_duration(),
            wait_duration=_seconds(wait) if wait > 0 else None,
        )
        if wait <= 0:
            reply = self.stub.ClaimTicket(request)
        else:
            reply = _until_stopped(self.stub.ClaimTicket.future(request, timeout=wait + WAIT_SLACK), stop)
            if reply is None:
                return None
        if not reply.HasField("ticket"):
            return None
        credential = reply.git_credential if reply.HasField("git_credential") else None
        template = reply.template if reply.HasField("template") else None
        return ClaimedTicket(
            reply.ticket, reply.lease, reply.stage, credential, template, tuple(reply.attempts)
        )

    def _guarded(self, call: Any, request: Any) -> Any:
        """A call on a held lease: a stale or released lease is LeaseLost."""
        try:
            return call(request)
        except SwarmError as err:
            if err.code == grpc.StatusCode.FAILED_PRECONDITION:
                raise LeaseLost(err.message) from err
            raise

    def renew(self, claimed: ClaimedTicket, progress: int = 0) -> pb.Lease:
        """Heartbeat: extend the lease, reporting `progress` (the work's steps so far)."""
        reply = self._guarded(
            self.stub.RenewLease,
            pb.RenewLeaseRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                lease_duration=self._lease_duration(),
                progress=progress,
            ),
        )
        lease: pb.Lease = reply.lease
        return lease

    def start(self, claimed: ClaimedTicket) -> None:
        self._guarded(
            self.stub.StartWork,
            pb.StartWorkRequest(tenant_id=self.tenant_id, ticket_id=claimed.id, claim_token=claimed.token),
        )

    def submit(self, claimed: ClaimedTicket, result: dict[str, Any]) -> pb.SubmitWorkResponse:
        reply: pb.SubmitWorkResponse = self._guarded(
            self.stub.SubmitWork,
            pb.SubmitWorkRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                result_json=json.dumps(result),
                request_id=str(uuid.uuid4()),
            ),
        )
        return reply

    def fail(self, claimed: ClaimedTicket, reason: str, details: dict[str, Any] | None = None) -> bool:
        reply = self._guarded(
            self.stub.ReportFailure,
            pb.ReportFailureRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                reason=reason[:2000],
                details_json=json.dumps(details or {}),
                request_id=str(uuid.uuid4()),
            ),
        )
        return bool(reply.quarantined)

    def lessons(self, claimed: ClaimedTicket) -> str:
        """The prompt section of the project's conventions and lessons for the
        ticket this agent holds (seed §13); "" when there is nothing to say."""
        reply = self._service.learning.GetLessons(
            lpb.GetLessonsRequest(tenant_id=self.tenant_id, ticket_id=claimed.id, claim_token=claimed.token)
        )
        return str(reply.prompt_section)
