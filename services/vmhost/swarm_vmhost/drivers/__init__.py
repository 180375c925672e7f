"""Isolation drivers: the registry vmhost chooses from."""

from __future__ import annotations

from swarm_vmhost.drivers.base import GuestDriver, GuestHandle, GuestSpec

__all__ = ["GuestDriver", "GuestHandle", "GuestSpec"]
