"""The shape of the test tree: helpers come from tests/support or the test's
own package, never from a conftest module or another service's tests."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_tests_import_only_support_or_their_own_package() -> None:
    wrong: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS)
        own = rel.parts[0] if len(rel.parts) > 1 else ""
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "tests" or len(parts) < 2:
                continue
            if parts[-1] == "conftest":
                wrong.append(f"{rel}: imports {module} (a conftest module)")
            elif parts[1] not in ("support", own):
                wrong.append(f"{rel}: imports {module} (another package's tests)")
    assert wrong == []


SERVICES = ["ticketing", "quota", "events", "telemetry", "vmhost"]
ROLES = ["config.py", "domain.py", "wire.py", "tables.py", "stores/__init__.py", "servicer.py", "server.py",
         "__main__.py", "migrations/env.py"]  # fmt: skip


def test_every_grpc_service_has_the_same_file_roles() -> None:
    missing = [
        f"services/{s}/swarm_{s}/{role}"
        for s in SERVICES
        for role in ROLES
        if not (TESTS.parent / "services" / s / f"swarm_{s}" / role).is_file()
    ]
    assert missing == []


def test_no_service_module_outgrows_its_concept() -> None:
    """CONVENTIONS.md: a module past ~400 lines is asking to be split by concept."""
    long = [
        f"{path.relative_to(TESTS.parent)}: {n} lines"
        for path in sorted((TESTS.parent / "services").rglob("*.py"))
        if "migrations" not in path.parts and (n := len(path.read_text().splitlines())) > 420
    ]
    assert long == []
