"""What vmhost's qemu driver and a restored microVM say on its serial console.

Every guest is restored from one snapshot, taken while the guest program
(`swarmagent.vm`) waits on its console with the runtime imported. A restored
copy learns who it is there:

    guest -> host   READY                 (before the snapshot: take it now)
    host  -> guest  HELLO, repeated until answered (input sent while the
                    snapshot still loads is lost)
    guest -> host   LISTENING             (its echo goes off: the settings hold a token)
    host  -> guest  "SETTINGS <chunk>" lines of base64 JSON (a terminal line
                    holds at most 4095 characters), then "END <its sha256>"
    guest -> host   "UP <address>", or "BAD <why>" and it exits
    host  -> guest  STOP, when vmhost ends the guest: it stops as on SIGTERM
                    (flushes its spans) and the VM resets, which ends QEMU

Both sides import this module: vmhost to write the settings, the guest to
read them.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

READY, LISTENING, UP, BAD, EXIT = "SWARM-READY", "SWARM-LISTENING", "SWARM-UP", "SWARM-BAD", "SWARM-EXIT"
HELLO, SETTINGS, END, STOP = "swarm-hello", "swarm-settings", "swarm-end", "swarm-stop"
CHUNK = 1024  # base64 characters per settings line


class BadSettings(ValueError):
    """Settings that cannot be read or applied; the guest says why and exits."""


@dataclass(frozen=True)
class VmSettings:
    """Everything a restored guest is told."""

    address: str  # its interface, "10.88.0.5/24"
    gateway: str  # the bridge: where the control plane is
    mac: str  # its own, so restored copies never collide on the bridge
    time_ns: int  # the host's clock when sent (the snapshot's is stale)
    entropy: bytes  # fresh randomness (every copy starts from the same memory)
    env: dict[str, str]  # the guest program's environment
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> content (the CA)
    restore: tuple[int, int] | None = None  # the restore's start and end, host clock (ns)
    driver: str = "qemu"

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VmSettings:
        try:
            mac = str(raw["mac"]).lower()
            if mac.count(":") != 5 or len(bytes.fromhex(mac.replace(":", ""))) != 6:
                raise ValueError(f"not a MAC address: {mac!r}")
            restore = raw.get("restore")
            return cls(
                address=str(ipaddress.IPv4Interface(raw["address"])),
                gateway=str(ipaddress.IPv4Address(raw["gateway"])),
                mac=mac,
                time_ns=int(raw["time_ns"]),
                entropy=bytes.fromhex(raw["entropy"]),
                env={str(k): str(v) for k, v in dict(raw["env"]).items()},
                files={str(k): str(v) for k, v in dict(raw.get("files") or {}).items()},
                restore=(int(restore[0]), int(restore[1])) if restore else None,
                driver=str(raw.get("driver", "qemu")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BadSettings(f"malformed settings: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "gateway": self.gateway,
            "mac": self.mac,
            "time_ns": self.time_ns,
            "entropy": self.entropy.hex(),
            "env": self.env,
            "files": self.files,
            "restore": list(self.restore) if self.restore else None,
            "driver": self.driver,
        }


def encode(settings: VmSettings) -> list[str]:
    """The console lines that carry `settings`, without line ends."""
    payload = base64.b64encode(json.dumps(settings.to_json()).encode()).decode()
    lines = [f"{SETTINGS} {payload[i : i + CHUNK]}" for i in range(0, len(payload), CHUNK)]
    return [*lines, f"{END} {hashlib.sha256(payload.encode()).hexdigest()}"]


def decode(lines: Iterable[str]) -> VmSettings:
    """The settings in `lines` (others are skipped), read up to their END."""
    chunks: list[str] = []
    for line in lines:
        word, _, value = line.strip().partition(" ")
        if word == SETTINGS:
            chunks.append(value)
        elif word == END:
            payload = "".join(chunks)
            if hashlib.sha256(payload.encode()).hexdigest() != value:
                raise BadSettings("the settings arrived damaged (checksum mismatch)")
            try:
                raw = json.loads(base64.b64decode(payload, validate=True))
            except ValueError as exc:
                raise BadSettings(f"the settings are not base64 JSON: {exc}") from exc
            if not isinstance(raw, dict):
                raise BadSettings("the settings are not a JSON object")
            return VmSettings.from_json(raw)
    raise BadSettings("the console closed before the settings ended")
