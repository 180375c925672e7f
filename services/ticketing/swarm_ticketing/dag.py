"""A project's tickets as stored: the dependency graph checked (unknown,
repeated or self references, cycles), and each ticket planned as the rows it
becomes — one, or for an ensemble the ticket itself and its coder attempts.

No SQL here; `stores/projects.py` inserts the plan in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swarm_ticketing.domain import (
    MAX_DEPENDENCIES_PER_TICKET,
    MAX_KEY,
    MAX_NAME,
    MAX_TICKETS_PER_PROJECT,
    AgentRole,
    CollaborationPattern,
    ProjectSpec,
    TicketSpec,
)
from swarmcommon.errors import InvalidArgument

# A planned row: (the spec ticket's key, its attempt number; 0 for the ticket itself).
PlanKey = tuple[str, int]


@dataclass(frozen=True)
class Planned:
    """One ticket row to store."""

    key: PlanKey
    spec: TicketSpec
    name: str
    stages: tuple[AgentRole, ...]
    depends_on: tuple[PlanKey, ...]
    # What it waits for before it is READY: its parents, or for an ensemble
    # ticket the attempts that must succeed (its quorum).
    pending: int
    ensemble_of: PlanKey | None = None

    @property
    def attempt(self) -> int:
        return self.key[1]


def plan(spec: ProjectSpec) -> list[Planned]:
    """Every row the project stores, in submission order (an ensemble ticket
    first, then its attempts).

    An ensemble's attempts take over its dependencies, and the ensemble
    ticket (stages judge -> reviewer) depends on its attempts: each attempt
    is claimed, leased, failed and retried like any ticket."""
    rows: list[Planned] = []
    for t in spec.tickets:
        parents = tuple((dep, 0) for dep in t.depends_on)
        if t.pattern != CollaborationPattern.ENSEMBLE:
            rows.append(Planned((t.key, 0), t, t.name, t.stages, parents, len(parents)))
            continue
        attempts = tuple((t.key, n) for n in range(1, t.ensemble_size + 1))
        rows.append(Planned((t.key, 0), t, t.name, t.stages, attempts, t.ensemble_quorum))
        for key in attempts:
            suffix = f" (attempt {key[1]} of {t.ensemble_size})"
            name = t.name[: MAX_NAME - len(suffix)] + suffix
            rows.append(Planned(key, t, name, (AgentRole.CODER,), parents, len(parents), (t.key, 0)))
    return rows


def validate_project(spec: ProjectSpec) -> None:
    """Reject a project whose tickets or dependency graph are malformed.

    Raises InvalidArgument naming the offending field or, for a cycle, the
    tickets in it (by key and name). Everything a project could be refused
    for is checked here, before quota is charged or anything is written.
    """
    if not spec.tickets:
        raise InvalidArgument("tickets", "a project needs at least one ticket")
    stored = sum(t.rows for t in spec.tickets)
    if stored > MAX_TICKETS_PER_PROJECT:
        raise InvalidArgument(
            "tickets",
            f"too many tickets ({stored} with ensemble attempts > {MAX_TICKETS_PER_PROJECT})",
        )
    keys: dict[str, int] = {}
    for i, ticket in enumerate(spec.tickets):
        if ticket.key in keys:
            raise InvalidArgument(f"tickets[{i}].key", f"duplicate key {ticket.key!r}")
        keys[ticket.key] = i
    for i, ticket in enumerate(spec.tickets):
        _validate_dependencies(f"tickets[{i}].depends_on", ticket, keys)
    cycle = find_cycle({t.key: t.depends_on for t in spec.tickets})
    if cycle:
        names = {t.key: t.name for t in spec.tickets}
        members = " -> ".join(f"{key} ({names[key]})" for key in [*cycle, cycle[0]])
        raise InvalidArgument("tickets", f"dependency cycle: {members}", cycle=",".join(cycle))


def _validate_dependencies(field: str, ticket: TicketSpec, keys: dict[str, int]) -> None:
    if len(ticket.depends_on) > MAX_DEPENDENCIES_PER_TICKET:
        raise InvalidArgument(
            field, f"too many dependencies ({len(ticket.depends_on)} > {MAX_DEPENDENCIES_PER_TICKET})"
        )
    seen: set[str] = set()
    for j, dep in enumerate(ticket.depends_on):
        shown = repr(dep[:MAX_KEY])
        if dep not in keys:
            raise InvalidArgument(f"{field}[{j}]", f"unknown ticket key {shown}")
        if dep == ticket.key:
            raise InvalidArgument(f"{field}[{j}]", f"ticket {shown} depends on itself")
        if dep in seen:
            raise InvalidArgument(f"{field}[{j}]", f"{shown} is listed twice")
        seen.add(dep)


def find_cycle(graph: dict[str, Sequence[str]]) -> list[str] | None:
    """One cycle of the graph (node -> its dependencies) in order, or None.

    Iterative depth-first search, so a 5,000-ticket chain does not hit
    Python's recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(graph[root])]
        colour[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            if colour[nxt] == grey:
                return path[path.index(nxt) :]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None
