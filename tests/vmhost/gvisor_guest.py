"""A guest program for the gvisor tests: prints one JSON line saying what it
sees from inside its sandbox (who it runs as, its capabilities, its kernel,
its file system, whether vmhost answers on the bridge), then waits.
Each entry is what the guest itself observed.

Environment (besides the guest's own):
  PROBE_HOST_FILE   a file on the host (a service's database) it must not see
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import time

PR_GET_NO_NEW_PRIVS = 39


def status(field: str) -> str:
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith(f"{field}:"))


def no_new_privs() -> int:
    return int(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))


def mounts() -> dict[str, list[str]]:
    """Mount point -> options, as the guest's kernel lists them."""
    with open("/proc/self/mounts") as f:
        return {fields[1]: fields[3].split(",") for fields in (line.split() for line in f)}


def writable(directory: str) -> bool | str:
    try:
        with open(os.path.join(directory, ".probe"), "w") as f:
            f.write("x")
    except OSError as exc:
        return str(exc)
    return True


def reaches(target: str) -> bool | str:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except OSError as exc:
        return str(exc)


if __name__ == "__main__":
    report = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "cap_eff": status("CapEff"),
        "cap_prm": status("CapPrm"),
        "cap_bnd": status("CapBnd"),
        "no_new_privs": no_new_privs(),
        "kernel": f"{os.uname().release} {os.uname().version}",
        "home": os.environ.get("HOME"),
        "cwd": os.getcwd(),
        "mounts": mounts(),
        "home_writable": writable(os.getcwd()),
        "root_entries": sorted(os.listdir("/")),
        "host_file_visible": os.path.exists(os.environ["PROBE_HOST_FILE"]),
        "vmhost": reaches(os.environ["SWARM_VMHOST_TARGET"]),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    while True:
        time.sleep(60)
