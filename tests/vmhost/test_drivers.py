"""Which drivers a host offers, and that none quietly runs guests unisolated."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from swarm_vmhost import network, server
from swarm_vmhost.config import Settings
from swarm_vmhost.domain import DriverName

BRIDGE = network.Bridge("swtnone", ipaddress.IPv4Network("10.213.255.0/24"))


def _process_probe(tmp_path: Path, **settings: object) -> str | None:
    values = {"workroot": str(tmp_path), "database_url": f"sqlite:///{tmp_path / 'v.db'}", **settings}
    return server.drivers(Settings(**values), BRIDGE)[DriverName.PROCESS].probe()  # type: ignore[arg-type]


def test_unisolated_guests_run_only_in_dev_mode_or_when_chosen(tmp_path: Path) -> None:
    refused = _process_probe(tmp_path, insecure_dev=False)
    assert refused is not None and "SWARM_VMHOST_DEFAULT_DRIVER=process" in refused
    assert _process_probe(tmp_path, insecure_dev=False, default_driver="process") is None
    assert _process_probe(tmp_path, insecure_dev=True) is None
