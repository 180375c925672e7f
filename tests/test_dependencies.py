"""Every package declares what it imports.

`make setup` installs the pinned requirements and then each package with
--no-deps, so an import a package's pyproject.toml forgets still works here
and breaks only where the package is installed alone (a guest image, a
service container). This test reads every module of every package under
libs/ and services/, maps each import to the distribution that ships it, and
requires that distribution in the package's own `dependencies`: a direct
import is declared directly, not borrowed from a dependency's dependencies.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = sorted(
    p.parent for p in (*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml"))
)
# Generated protobuf code (`make protos`): not hand-written, shipped by swarmcommon.
GENERATED = {"swarm"}
DEMO = "swarmdemo"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    root: Path
    name: str
    declared: frozenset[str]
    # The top-level import names the package ships.
    modules: frozenset[str]

    @classmethod
    def load(cls, root: Path) -> Package:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        declared = frozenset(canonical(Requirement(d).name) for d in project.get("dependencies", []))
        modules = frozenset(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.endswith(".egg-info") and (p / "__init__.py").exists()
        )
        return cls(root, canonical(project["name"]), declared, modules)

    def sources(self) -> Iterator[Path]:
        for module in sorted(self.modules - GENERATED):
            yield from sorted((self.root / module).rglob("*.py"))


def imported_names(path: Path) -> Iterator[str]:
    """Absolute imports, as dotted names; `from a import b` gives `a.b` (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@cache
def _top_level_owners() -> dict[str, frozenset[str]]:
    return {
        top: frozenset(canonical(d) for d in dists)
        for top, dists in metadata.packages_distributions().items()
    }


@cache
def _shipped_paths(dist: str) -> frozenset[str]:
    return frozenset(str(f) for f in metadata.distribution(dist).files or [])


def _ships(dist: str, parts: list[str]) -> bool:
    prefix = "/".join(parts)
    return any(f == f"{prefix}.py" or f.startswith(f"{prefix}/") for f in _shipped_paths(dist))


def distributions_of(dotted: str) -> frozenset[str]:
    """The distributions that can provide `dotted`; several only when they
    share a namespace package (google, opentelemetry) at every depth we can see."""
    parts = dotted.split(".")
    owners = _top_level_owners().get(parts[0], frozenset())
    if len(owners) <= 1:
        return owners
    # A namespace shared by several distributions: the deepest package one of them ships decides.
    for depth in range(len(parts), 1, -1):
        shipping = frozenset(d for d in owners if _ships(d, parts[:depth]))
        if shipping:
            return shipping
    return owners


def undeclared_imports(package: Package) -> dict[str, set[str]]:
    """Distribution (or "a | b" when any of them would do) -> the files importing it undeclared."""
    missing: dict[str, set[str]] = {}
    for path in package.sources():
        for dotted in imported_names(path):
            top = dotted.split(".")[0]
            if top in sys.stdlib_module_names or top in package.modules:
                continue
            dists = distributions_of(dotted)
            if package.name in dists or dists & package.declared:
                continue
            key = " | ".join(sorted(dists)) or f"{top} (no installed distribution ships it)"
            missing.setdefault(key, set()).add(path.relative_to(package.root).as_posix())
    return missing


PACKAGES = [Package.load(root) for root in PACKAGE_ROOTS]


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_every_import_is_a_declared_dependency(package: Package) -> None:
    missing = undeclared_imports(package)
    assert missing == {}, f"{package.root.relative_to(REPO)}/pyproject.toml does not declare: " + "; ".join(
        f"{dist} (imported by {', '.join(sorted(files))})" for dist, files in sorted(missing.items())
    )


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_every_declared_dependency_is_installed(package: Package) -> None:
    absent = []
    for name in sorted(package.declared):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
    assert absent == [], f"{package.name} declares dependencies `make setup` does not install"


def test_the_packages_are_found() -> None:
    # A sanity floor: the walk above would pass vacuously on an empty list.
    names = {p.name for p in PACKAGES}
    assert {"swarmcommon", "swarmagent", "swarm-events", "swarm-vmhost"} <= names
    assert all(any(p.sources()) for p in PACKAGES)


# The operator's command line: `swarm up` runs the demo's local mesh (and its
# stand-in model) without the demo's project. A client on an operator's
# machine, in no image and imported by nothing that is.
CLI = "swarmcli"


def test_nothing_in_the_product_depends_on_the_demo() -> None:
    """The demo drives the product through configuration (an LLM endpoint URL),
    never the other way round: no package but the demo's own (and the CLI's
    `swarm up`) may import it, and nothing may import the CLI."""
    leaning = [
        p.name for p in PACKAGES if p.name not in (DEMO, CLI) and (DEMO in p.declared or DEMO in p.modules)
    ]
    assert leaning == []
    on_cli = [p.name for p in PACKAGES if p.name != CLI and (CLI in p.declared or CLI in p.modules)]
    assert on_cli == []
    assert {DEMO, CLI} <= {p.name for p in PACKAGES}, "the demo and the CLI are packages of their own"
