"""Every store of ticketing, as the servicers get them (built in server.py)."""

from __future__ import annotations

from dataclasses import dataclass

from swarm_ticketing.stores.cancels import Cancellations
from swarm_ticketing.stores.claims import Claims
from swarm_ticketing.stores.cost_caps import CostCaps
from swarm_ticketing.stores.dead_letters import DeadLetters
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.edits import Edits
from swarm_ticketing.stores.leases import LeaseManager
from swarm_ticketing.stores.lost import LostLeases
from swarm_ticketing.stores.merge_requests import MergeRequests
from swarm_ticketing.stores.projects import Projects
from swarm_ticketing.stores.templates import TemplateStore
from swarm_ticketing.stores.tickets import Tickets


@dataclass(frozen=True)
class Stores:
    projects: Projects
    tickets: Tickets
    dead_letters: DeadLetters
    claims: Claims
    leases: LeaseManager
    lost: LostLeases
    merge_requests: MergeRequests
    cost_caps: CostCaps
    templates: TemplateStore
    deployments: Deployments
    cancels: Cancellations
    edits: Edits
