"""The one interface every isolation driver implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GuestSpec:
    agent_id: str
    tenant_id: str
    template: str
    role: str
    address: str  # the guest's IPv4 on the bridge
    prefix_len: int
    gateway: str  # the bridge's own address: the control plane as guests see it
    bridge: str
    env: Mapping[str, str]
    command: Sequence[str]
    workdir: str


@dataclass
class GuestHandle:
    agent_id: str
    driver: str
    pid: int | None = None
    devices: list[str] = field(default_factory=list)
    netns: str | None = None
    data: dict[str, str] = field(default_factory=dict)


class GuestDriver(Protocol):
    name: str
    # Whether guests get their own network namespace on the bridge.
    isolated: bool

    def probe(self) -> str | None:
        """None when this driver can run here, else why not."""

    def start(self, spec: GuestSpec) -> GuestHandle:
        """Start the guest; on failure raise and leave nothing behind."""

    def stop(self, handle: GuestHandle) -> None:
        """Kill the guest and remove its devices. Idempotent."""

    def alive(self, handle: GuestHandle) -> bool: ...

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        """Remove what guests not in `known_agent_ids` left behind; say what."""
