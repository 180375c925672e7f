"""Who is calling, and may they call this method?

Every call is authenticated before it reaches a servicer:
- a workload (a service or an operator's tool) by the SPIFFE id in the
  certificate it presented on the mesh port (mutual TLS);
- an agent by the token vmhost signed it (`authorization: Bearer …`), on the
  port guests reach, where no client certificate is asked for;
- nobody else: UNAUTHENTICATED. Only a service started with
  `SWARM_<SERVICE>_INSECURE_DEV=true` lets an unidentified caller through,
  as the `insecure-dev` caller, and says so loudly at start-up.

Each service declares next to its servicer which callers may call each
method:

    ACCESS = {
        "CreateApiKey": allow("gateway", operators=True),
        "Reserve": allow("vmhost"),
        "ClaimTicket": allow("gateway", agents=True),
    }

A method missing from the table cannot be served: the server refuses to
start. A known caller outside a method's entry gets PERMISSION_DENIED.
Servicers read the caller with `current_caller()`; `Caller.tenant(...)`
gives an agent its token's tenant and refuses a body naming another.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool

from swarmcommon.agenttoken import AgentClaims, TokenVerifier
from swarmcommon.errors import PermissionDenied, Unauthenticated

BEARER = "bearer "


class CallerKind(enum.StrEnum):
    SERVICE = "service"
    OPERATOR = "operator"
    AGENT = "agent"
    INSECURE_DEV = "insecure-dev"


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    name: str  # the service's or operator's name; the agent's id
    agent: AgentClaims | None = None

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def is_agent(self) -> bool:
        return self.agent is not None

    def tenant(self, requested: str, field: str = "tenant_id") -> str:
        """The tenant this call acts for. An agent acts for its token's tenant
        (an empty field means that one); a field naming another is refused.
        Services and operators act for the tenant they name."""
        if self.agent is None:
            return requested
        if requested and requested != self.agent.tenant_id:
            raise PermissionDenied(
                f"{field} {requested!r} is not the tenant of this agent's token",
                reason="TENANT_MISMATCH",
                field=field,
            )
        return self.agent.tenant_id

    def require_agent(self, agent_id: str, field: str = "agent_id") -> str:
        """An agent may act only as itself; an empty field means itself."""
        if self.agent is None:
            return agent_id
        if agent_id and agent_id != self.agent.agent_id:
            raise PermissionDenied(
                f"{field} {agent_id!r} is not the agent of this token", reason="AGENT_MISMATCH", field=field
            )
        return self.agent.agent_id


INSECURE_DEV_CALLER = Caller(CallerKind.INSECURE_DEV, "insecure-dev")
_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("swarm_caller", default=None)


def current_caller() -> Caller:
    """The caller of the RPC being served (set by AuthzInterceptor)."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("current_caller() outside an authorized RPC")
    return caller


@dataclass(frozen=True)
class Rule:
    services: frozenset[str] = frozenset()
    operators: bool = False
    agents: bool = False
    # Anyone, authenticated or not (health checks).
    public: bool = False

    def admits(self, caller: Caller) -> bool:
        if self.public or caller.kind is CallerKind.INSECURE_DEV:
            return True
        match caller.kind:
            case CallerKind.SERVICE:
                return caller.name in self.services
            case CallerKind.OPERATOR:
                return self.operators
            case CallerKind.AGENT:
                return self.agents
        return False

    def describe(self) -> str:
        who = sorted(f"service/{s}" for s in self.services)
        if self.operators:
            who.append("operators")
        if self.agents:
            who.append("agents")
        return ", ".join(who) or "nobody"


def allow(*services: str, operators: bool = False, agents: bool = False) -> Rule:
    return Rule(frozenset(services), operators, agents)


PUBLIC = Rule(public=True)
Access = Mapping[str, Rule]
# Services every server carries that anyone may call.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})


def check_access(full_name: str, access: Access) -> None:
    """Every method of the service has an entry, and every entry a method."""
    try:
        methods = {m.name for m in descriptor_pool.Default().FindServiceByName(full_name).methods}
    except KeyError:  # a handler without a proto (tests' probes): its table is what it serves
        methods = set(access)
    if not methods:
        raise ValueError(f"access table of {full_name} is empty")
    missing, unknown = methods - set(access), set(access) - methods
    if missing or unknown:
        raise ValueError(
            f"access table of {full_name} is wrong: "
            f"no entry for {sorted(missing)}; entries for unknown methods {sorted(unknown)}"
        )


class Authenticator:
    """Turns a call's peer certificate or token into a Caller."""

    def __init__(self, trust_domain: str, verifier: TokenVerifier | None, insecure_dev: bool) -> None:
        self.prefix = f"spiffe://{trust_domain}/"
        self.verifier = verifier
        self.insecure_dev = insecure_dev

    def identify(self, context: grpc.ServicerContext) -> Caller:
        spiffe = context.auth_context().get("peer_spiffe_id")
        if spiffe:
            return self._workload(spiffe[0].decode("utf-8", "replace"))
        token = _bearer(context.invocation_metadata())
        if token is not None:
            if self.verifier is None:
                raise Unauthenticated(
                    "this service does not accept agent tokens", reason="TOKENS_NOT_ACCEPTED"
                )
            claims = self.verifier.verify(token)
            return Caller(CallerKind.AGENT, claims.agent_id, claims)
        if self.insecure_dev:
            return INSECURE_DEV_CALLER
        raise Unauthenticated(
            "no client certificate or agent token: every call must say who makes it",
            reason="NO_CREDENTIALS",
        )

    def _workload(self, spiffe_id: str) -> Caller:
        if not spiffe_id.startswith(self.prefix):
            raise Unauthenticated(
                f"identity {spiffe_id} is outside this trust domain", reason="FOREIGN_IDENTITY"
            )
        kind, _, name = spiffe_id[len(self.prefix) :].partition("/")
        if kind == CallerKind.SERVICE and name and "/" not in name:
            return Caller(CallerKind.SERVICE, name)
        if kind == CallerKind.OPERATOR and name and "/" not in name:
            return Caller(CallerKind.OPERATOR, name)
        raise Unauthenticated(
            f"identity {spiffe_id} is not a service or an operator", reason="UNKNOWN_IDENTITY"
        )


def _bearer(metadata: Iterable[Any] | None) -> str | None:
    for item in metadata or ():
        if item.key == "authorization" and isinstance(item.value, str):
            if item.value.lower().startswith(BEARER):
                return item.value[len(BEARER) :].strip()
            raise Unauthenticated(
                "authorization metadata must be 'Bearer <agent token>'", reason="TOKEN_MALFORMED"
            )
    return None


class Gate:
    """The access tables of a server and who is calling: the part of
    authorization the thread-pool and the asyncio servers share."""

    def __init__(self, tables: Mapping[str, Access], authenticator: Authenticator) -> None:
        self._tables = tables
        self._auth = authenticator

    def rule(self, rpc_method: str) -> tuple[str, Rule | None] | None:
        """("Service/Method", its rule) for "/Service/Method"; None for the
        services anyone may call (health)."""
        service, _, method = rpc_method.lstrip("/").partition("/")
        if service in OPEN_SERVICES:
            return None
        return f"{service}/{method}", self._tables.get(service, {}).get(method)

    def admit(self, context: Any, rule: Rule | None, method: str) -> Caller:
        caller = self._auth.identify(context)
        if rule is None:  # no entry: nobody (reflection when not enabled, say)
            raise PermissionDenied(f"{method} is not open to any caller", reason="NOT_IN_ACCESS_TABLE")
        if not rule.admits(caller):
            raise PermissionDenied(
                f"{caller} may not call {method} (allowed: {rule.describe()})", reason="METHOD_NOT_ALLOWED"
            )
        return caller


def bind_caller(caller: Caller) -> contextvars.Token[Caller | None]:
    """Make `caller` the current caller (undo with `unbind_caller`)."""
    return _current.set(caller)


def unbind_caller(token: contextvars.Token[Caller | None]) -> None:
    _current.reset(token)


class AuthzInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call and checks it against the method's rule.

    Runs inside the error interceptor, so its refusals become statuses like
    any SwarmError."""

    def __init__(self, tables: Mapping[str, Access], authenticator: Authenticator) -> None:
        self._gate = Gate(tables, authenticator)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        found = self._gate.rule(handler_call_details.method)
        if found is None:
            return handler
        full, rule = found
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, rule, full),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, rule, full),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:  # reflection, when enabled
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, rule, full),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ValueError(f"{full}: client-streaming methods are not served")

    def _admit(self, context: grpc.ServicerContext, rule: Rule | None, method: str) -> Caller:
        return self._gate.admit(context, rule, method)

    def _unary(self, fn: Callable[..., Any], rule: Rule | None, method: str) -> Callable[..., Any]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            token = _current.set(self._admit(context, rule, method))
            try:
                return fn(request, context)
            finally:
                _current.reset(token)

        return behaviour

    def _stream(
        self, fn: Callable[..., Iterator[Any]], rule: Rule | None, method: str
    ) -> Callable[..., Iterator[Any]]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self._admit(context, rule, method)
            token = _current.set(caller)
            try:
                yield from fn(request, context)
            finally:
                _current.reset(token)

        return behaviour
