"""Generate Python code for every .proto under a source folder.

Usage: python scripts/gen_protos.py <proto_root> <package_parent>

Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py mirroring the proto package
layout (swarm/ticketing/v1/...) under <package_parent>, with an __init__.py
in every generated folder so the result is a regular, installable package.
The previous output is replaced only once generation succeeded.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc


def main(proto_root: str, package_parent: str) -> int:
    root = Path(proto_root)
    parent = Path(package_parent)
    protos = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    top_levels = {Path(p).parts[0] for p in protos}
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        code = protoc.main(args)
        if code != 0:
            return int(code)
        for top in top_levels:
            generated = Path(tmp) / top
            for folder in [generated, *(p for p in generated.rglob("*") if p.is_dir())]:
                (folder / "__init__.py").touch()
            (generated / "py.typed").touch()
            target = parent / top
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(generated, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
