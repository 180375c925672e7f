"""The pieces of the qemu driver that need no VM: what host and guest say on
the console, what the guest is handed (its environment as the VM sees it,
files only where the host may write them), which template a guest is
restored from, and the `vm.restore` span a restored guest adds to its first
ticket's trace."""

from __future__ import annotations

import io
import ipaddress
import os
import random
import signal
import threading
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_vmhost import network
from swarm_vmhost.drivers import qemu, qemu_image
from swarmagent import vm
from swarmagent.client import ClaimedTicket
from swarmcommon import vmconsole
from swarmcommon.errors import Unavailable

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
BRIDGE = network.Bridge("swtnone", ipaddress.IPv4Network("10.9.9.0/24"))  # never created


def _settings(**overrides: object) -> vmconsole.VmSettings:
    values: dict[str, object] = {
        "address": "10.88.0.5/24",
        "gateway": "10.88.0.1",
        "mac": "52:54:00:ab:cd:ef",
        "time_ns": 1_700_000_000_000_000_000,
        "entropy": bytes(range(32)),
        "env": {"SWARM_AGENT_ID": "a-1", "SWARM_AGENT_TOKEN": "t" * 6000},  # longer than a terminal line
        "files": {qemu.GUEST_CA_FILE: "-----BEGIN CERTIFICATE-----\n...\n"},
        "restore": (100, 250),
    }
    return vmconsole.VmSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_settings_cross_the_console_in_lines_a_terminal_takes_whatever_else_it_says() -> None:
    settings = _settings()
    lines = vmconsole.encode(settings)
    assert all(len(line) < 4095 for line in lines) and len(lines) > 3
    # The echo of the host's hellos and kernel messages between the lines are skipped.
    noisy = ["warm-hello", "swarm-hello", *lines[:2], "[  3.1] random: crng reseeded", *lines[2:]]
    assert vmconsole.decode(line + "\n" for line in noisy) == settings


@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: [lines[0][:-1] + "A", *lines[1:]],  # a chunk changed on the way
        lambda lines: [*lines[:1], *lines[2:]],  # a chunk lost
        lambda lines: lines[:-1],  # never ended
    ],
)
def test_damaged_or_cut_settings_are_refused(damage: object) -> None:
    lines = damage(vmconsole.encode(_settings()))  # type: ignore[operator]
    with pytest.raises(vmconsole.BadSettings):
        vmconsole.decode(lines)


@pytest.mark.parametrize(
    "field, value",
    [
        ("mac", "52:54:00:zz:00:01"),
        ("mac", "52:54:00:00:01"),
        ("address", "10.88.0.300/24"),
        ("gateway", "h"),
    ],
)
def test_malformed_settings_say_what_is_wrong(field: str, value: str) -> None:
    raw = _settings().to_json() | {field: value}
    with pytest.raises(vmconsole.BadSettings, match="malformed settings"):
        vmconsole.VmSettings.from_json(raw)


def test_the_guest_writes_files_only_where_the_host_may_hand_them(tmp_path: Path) -> None:
    root = tmp_path / "run" / "swarm"
    vm.write_files({str(root / "ca.crt"): "pem"}, root)
    assert (root / "ca.crt").read_text() == "pem"
    for elsewhere in ("/etc/passwd", f"{root}/../escape", f"{root}/sub/ca.crt", "ca.crt"):
        with pytest.raises(vmconsole.BadSettings, match="only write files in"):
            vm.write_files({elsewhere: "x"}, root)
    assert not (tmp_path / "run" / "escape").exists()


def test_the_guest_environment_is_the_vms_own(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("the mesh CA")
    host_env = {
        "PATH": "/work/main/.venv/bin:/usr/bin",
        "PYTHONPATH": "/work/main",
        "VIRTUAL_ENV": "/work/main/.venv",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SWARM_AGENT_ID": "a-1",
        "SWARM_AGENT_TOKEN": "token",
        "SWARM_AGENT_CA_FILE": str(ca),
    }
    env, files = qemu.vm_environment(host_env)
    assert env == {
        "PATH": qemu.GUEST_PATH,
        "SWARM_AGENT_ID": "a-1",
        "SWARM_AGENT_TOKEN": "token",
        "SWARM_AGENT_CA_FILE": qemu.GUEST_CA_FILE,
    }
    assert files == {qemu.GUEST_CA_FILE: "the mesh CA"}
    assert qemu.vm_environment({"SWARM_AGENT_ID": "a-1"}) == (
        {"SWARM_AGENT_ID": "a-1", "PATH": qemu.GUEST_PATH},
        {},
    )
    with pytest.raises(Unavailable, match="CA file"):
        qemu.vm_environment({"SWARM_AGENT_CA_FILE": str(tmp_path / "missing.crt")})


@pytest.mark.parametrize(
    "work, warmed",
    [
        ("swarmagent.runtime:work", "swarmagent.runtime"),
        ("swarmagent.vm:report", ""),  # the guest program imports it anyway
        ("", ""),  # an idle guest
        ("x; reboot -f:work", ""),  # never onto the kernel command line
    ],
)
def test_a_template_warms_the_module_of_the_work_function(work: str, warmed: str) -> None:
    assert qemu.work_module({"SWARM_AGENT_WORK": work}) == warmed
    assert ("SWARM_WARM=" in qemu_image.kernel_args(warmed)) == bool(warmed)


def test_templates_are_named_by_the_image_and_what_they_warm(tmp_path: Path) -> None:
    image = tmp_path / "guest"
    image.mkdir()
    for name in ("vmlinux", "initrd.gz", "rootfs.img"):
        (image / name).write_bytes(b"x")
    (image / "image.stamp").write_text("a" * 32)
    driver = qemu.QemuDriver(BRIDGE, image, tmp_path)
    idle, runtime = driver.image.template_path(), driver.image.template_path("swarmagent.runtime")
    assert idle.parent == image / "snapshots" and idle != runtime
    assert idle == driver.image.template_path()
    (image / "image.stamp").write_text("b" * 32)  # a rebuilt image: new templates
    assert driver.image.template_path().name.startswith("b" * 16) and driver.image.template_path() != idle


def test_templates_of_a_read_only_image_live_in_vmhosts_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "guest"
    image.mkdir()
    # As if the image were mounted read-only (root may write anywhere else).
    monkeypatch.setattr(qemu_image.os, "access", lambda path, mode: Path(path) != image)
    driver = qemu.QemuDriver(BRIDGE, image, tmp_path / "state")
    assert driver.image.snapshot_dir() == tmp_path / "state" and not (image / "snapshots").exists()


def test_a_restored_guest_puts_its_restore_in_the_first_tickets_trace(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(env={"SWARM_AGENT_WORK": "swarmagent.vm:report", "SWARM_TENANT_ID": "acme"})
    env = vm.guest_environment(settings)
    assert env["SWARM_AGENT_WORK"] == "swarmagent.vm:work"
    assert (env[vm.REAL_WORK_ENV], env[vm.RESTORE_ENV]) == ("swarmagent.vm:report", "100 250 qemu")
    assert vm.guest_environment(_settings(env={})) == {}  # an idle guest has no work to wrap
    unrestored = _settings(env={"SWARM_AGENT_WORK": "m:f"}, restore=None)
    assert vm.guest_environment(unrestored) == {"SWARM_AGENT_WORK": "m:f"}

    for key, value in {**env, "SWARM_AGENT_ID": "a-1"}.items():
        monkeypatch.setenv(key, value)
    spans.clear()
    work = vm.RestoredWork()
    tickets = [
        ClaimedTicket(tpb.Ticket(id=f"t-{i}", traceparent=f"00-{TRACE}-{PARENT}-01"), tpb.Lease(), 1)
        for i in range(2)
    ]
    results = [work(t) for t in tickets]
    assert [r["ticket"] for r in results] == ["t-0", "t-1"]  # the real work ran, both times
    (restore,) = [s for s in spans.get_finished_spans() if s.name == "vm.restore"]  # the first ticket only
    assert restore.context is not None and restore.parent is not None
    assert (f"{restore.context.trace_id:032x}", f"{restore.parent.span_id:016x}") == (TRACE, PARENT)
    assert (restore.start_time, restore.end_time) == (100, 250)  # as the host measured it
    assert dict(restore.attributes or {}) == {
        "swarm.tenant_id": "acme",
        "swarm.agent_id": "a-1",
        "swarm.ticket_id": "t-0",
        "vm.driver": "qemu",
    }


def test_every_restored_copy_gets_its_own_randomness() -> None:
    """Copies of one snapshot share Python's generator state (OpenTelemetry
    draws trace and span ids from it) until `reseed` (run as root: it also
    credits the entropy to the kernel and reseeds the kernel's generator)."""
    state = random.getstate()
    first = [random.getrandbits(64) for _ in range(3)]
    random.setstate(state)
    vm.reseed(os.urandom(32))
    assert [random.getrandbits(64) for _ in range(3)] != first


def test_the_guest_stops_as_on_sigterm_when_vmhost_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    got = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: got.set())
    try:
        vm.watch_for_stop(io.StringIO("SWARM-UP 10.88.0.5/24\nswarm-hello\n"))
        assert not got.wait(0.3)  # anything else on the console is not a stop
        vm.watch_for_stop(io.StringIO(f"swarm-hello\n{vmconsole.STOP}\n"))
        assert got.wait(5)
    finally:
        signal.signal(signal.SIGTERM, previous)
