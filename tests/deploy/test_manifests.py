"""Invariants of the Kubernetes manifests under deploy/k8s.

These read the source YAML the way kustomize and the API server would (no
cluster here; test_rendered.py checks what `kubectl kustomize` really
renders, against the API schemas), and check what would
otherwise only fail at `kubectl apply` time or, worse, as a pod that never
becomes ready: a missing file, a Service that selects nothing, a probe on the
wrong port, a Secret that does not exist, a `$(VAR)` left unexpanded, an env
var that pydantic-settings silently ignores because of a wrong prefix.

Scope: the base (what `kubectl apply -k` deploys) is walked like kustomize
walks it; overlays and components are checked for pointing at things that
exist in the base.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
SERVICES = REPO / "services"
POSTGRES_DATABASES = BASE / "postgres" / "initdb" / "databases.list"

# The one image every control-plane service runs
# (deploy/docker/Dockerfile.control-plane); a container with this image is a
# Swarm service and must follow its rules.
SWARM_IMAGE = "swarm/swarm"
# vmhost's image (Dockerfile.vmhost): the sandbox tools and the agent runtime.
SWARM_IMAGES = (SWARM_IMAGE, "swarm/swarm-vmhost")
GRPC_PORT = 50051
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name} ({self.path.relative_to(REPO)})"


def _load_yaml(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


@cache
def yaml_files() -> tuple[Path, ...]:
    return tuple(sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"}))


def _kustomization_file(folder: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


@cache
def kustomization_files() -> tuple[Path, ...]:
    return tuple(p for p in yaml_files() if p.name in KUSTOMIZATION_NAMES)


def _kustomization(folder: Path) -> dict[str, Any]:
    path = _kustomization_file(folder)
    assert path is not None, f"{folder.relative_to(REPO)} has no kustomization.yaml"
    (doc,) = _load_yaml(path)
    return doc


def _generator_files(entry: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, relative path) of every file a config map / secret generator reads."""
    for spec in entry.get("files", []):
        key, _, path = spec.rpartition("=")
        yield key or Path(path).name, path
    for path in entry.get("envs", []):
        yield "", path


def listed_paths(kustomization: Path) -> Iterator[tuple[str, Path]]:
    """Every local path a kustomization names: (field, resolved path)."""
    (doc,) = _load_yaml(kustomization)
    here = kustomization.parent
    for field in ("resources", "components", "crds"):
        for entry in doc.get(field, []):
            yield field, here / entry
    for field in ("patches", "patchesStrategicMerge"):
        for entry in doc.get(field, []):
            if isinstance(entry, str):
                yield field, here / entry
            elif "path" in entry:
                yield field, here / entry["path"]
    for field in ("configMapGenerator", "secretGenerator"):
        for entry in doc.get(field, []):
            for _, path in _generator_files(entry):
                yield field, here / path


def _resources_of(folder: Path) -> Iterator[Manifest]:
    """Resources a kustomization accumulates, following `resources` like
    kustomize does (patches and generators are not applied)."""
    for entry in _kustomization(folder).get("resources", []):
        target = (folder / entry).resolve()
        # A missing path is reported by test_every_path_a_kustomization_lists_exists,
        # not as an error while collecting every other test.
        if target.is_dir() and _kustomization_file(target):
            yield from _resources_of(target)
        elif target.is_file():
            for doc in _load_yaml(target):
                yield Manifest(target, doc)


@cache
def base_resources() -> tuple[Manifest, ...]:
    return tuple(_resources_of(BASE))


def _generators_of(folder: Path, field: str) -> Iterator[tuple[str, set[str]]]:
    """(name, keys) of every generator under a kustomization, recursively."""
    doc = _kustomization(folder)
    for entry in doc.get(field, []):
        keys = {lit.split("=", 1)[0] for lit in entry.get("literals", [])}
        for key, path in _generator_files(entry):
            if key:
                keys.add(key)
            elif (folder / path).is_file():  # an env file: KEY=value lines
                for line in (folder / path).read_text(encoding="utf-8").splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        keys.add(line.split("=", 1)[0].strip())
        yield entry["name"], keys
    for entry in doc.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir() and _kustomization_file(target):
            yield from _generators_of(target, field)


def _defined_keys(kind: str, generator_field: str) -> dict[str, set[str]]:
    """Name -> keys of every ConfigMap or Secret the base defines."""
    defined: dict[str, set[str]] = {}
    for m in base_resources():
        if m.kind == kind:
            defined[m.name] = set(m.doc.get("data") or {}) | set(m.doc.get("stringData") or {})
    for name, keys in _generators_of(BASE, generator_field):
        defined.setdefault(name, set()).update(keys)
    return defined


# Secrets no manifest defines: the operator creates them before the first
# apply (deploy/k8s/README.md, "Mesh security"; tests/deploy/test_mesh_security.py
# checks the README says how).
OPERATOR_SECRETS = {
    "agent-token-public-key": {"public.pem"},
    "llm-provider-key": {"api-key"},
    "marketplace-key": {"key"},
    "gateway-dashboard": {"session-key"},
}
# What cert-manager writes into a Certificate's Secret.
CERTIFICATE_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def base_secrets() -> dict[str, set[str]]:
    """Secrets the base defines, generates, has cert-manager issue, or
    expects the operator to create."""
    defined = _defined_keys("Secret", "secretGenerator")
    for m in base_resources():
        if m.kind == "Certificate":
            defined.setdefault(m.doc["spec"]["secretName"], set()).update(CERTIFICATE_SECRET_KEYS)
    for name, keys in OPERATOR_SECRETS.items():
        defined.setdefault(name, set()).update(keys)
    return defined


def base_config_maps() -> dict[str, set[str]]:
    return _defined_keys("ConfigMap", "configMapGenerator")


def workloads() -> list[Manifest]:
    return [m for m in base_resources() if m.kind in WORKLOAD_KINDS]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return dict(workload.doc["spec"]["template"]["spec"])


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload.doc["spec"]["template"]["metadata"].get("labels", {}))


def containers(workload: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def is_swarm_container(container: dict[str, Any]) -> bool:
    return str(container.get("image", "")).split(":", 1)[0] in SWARM_IMAGES


def swarm_services() -> list[Manifest]:
    """Deployments that run a Swarm service; the Deployment's name is the
    service's name (ticketing, quota, ...)."""
    return [
        m for m in workloads() if m.kind == "Deployment" and any(is_swarm_container(c) for c in containers(m))
    ]


# Swarm services that speak HTTP to the outside instead of gRPC.
HTTP_SERVICES = {"gateway"}
HTTP_PORT = 8080


def grpc_services() -> list[Manifest]:
    return [s for s in swarm_services() if s.name not in HTTP_SERVICES]


def http_services() -> list[Manifest]:
    return [s for s in swarm_services() if s.name in HTTP_SERVICES]


def swarm_container(service: Manifest) -> dict[str, Any]:
    (container,) = [c for c in containers(service) if is_swarm_container(c)]
    return container


def env_values(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def service_packages() -> list[str]:
    """Services that exist as code: services/<name>/pyproject.toml."""
    return sorted(p.parent.name for p in SERVICES.glob("*/pyproject.toml"))


def _params(items: list[Manifest]) -> list[Any]:
    return [pytest.param(m, id=f"{m.kind}/{m.name}") for m in items]


def _container_params() -> list[Any]:
    return [
        pytest.param(w, c, id=f"{w.kind}/{w.name}/{c['name']}") for w in workloads() for c in containers(w)
    ]


def _cpu(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEMORY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}  # fmt: skip


def _memory(quantity: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match, f"not a memory quantity: {quantity!r}"
    number, unit = match.groups()
    return float(number) * (_MEMORY_UNITS[unit] if unit else 1)


def _effective_security_context(workload: Manifest, container: dict[str, Any]) -> dict[str, Any]:
    """The container's securityContext with pod-level defaults filled in
    (container fields win, as in Kubernetes)."""
    pod = pod_spec(workload).get("securityContext", {})
    merged = {k: pod[k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile") if k in pod}
    merged.update(container.get("securityContext", {}))
    return merged


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------- kustomize tree


def test_kustomize_tree_has_base_overlay_and_manifests() -> None:
    assert BASE / "kustomization.yaml" in kustomization_files()
    assert K8S / "overlays" / "dev" / "kustomization.yaml" in kustomization_files()
    assert workloads(), "the base deploys no workload"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid_yaml_with_kind(path: Path) -> None:
    docs = _load_yaml(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if path.name not in KUSTOMIZATION_NAMES:
            assert doc.get("kind") and doc.get("metadata", {}).get("name"), f"{path}: needs kind and name"


@pytest.mark.parametrize("kustomization", kustomization_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_path_a_kustomization_lists_exists(kustomization: Path) -> None:
    for field, path in listed_paths(kustomization):
        assert path.exists(), f"{kustomization.relative_to(REPO)}: {field} lists missing {path}"
        if field in ("resources", "components") and path.is_dir():
            assert _kustomization_file(path), f"{path} is listed as a {field} entry but has no kustomization"
        if field == "components":
            assert _kustomization(path)["kind"] == "Component", f"{path} is not a kustomize Component"


def _reachable_files() -> set[Path]:
    """Every file kustomize reads when building an overlay or a component."""
    roots = [p.parent for p in kustomization_files() if p.parent.parent.name in ("overlays", "components")]
    seen: set[Path] = set()
    pending = [r.resolve() for r in roots]
    while pending:
        folder = pending.pop()
        kustomization = _kustomization_file(folder)
        if kustomization is None or kustomization in seen:
            continue
        seen.add(kustomization)
        for _, path in listed_paths(kustomization):
            path = path.resolve()
            if path.is_dir():
                pending.append(path)
            else:
                seen.add(path)
    return seen


def test_every_manifest_file_is_reached_from_an_overlay_or_component() -> None:
    # A file no kustomization reaches is silently never applied.
    reachable = _reachable_files()
    assert BASE / "kustomization.yaml" in reachable, "no overlay uses the base"
    orphans = [str(p.relative_to(REPO)) for p in yaml_files() if p.resolve() not in reachable]
    assert not orphans, f"manifests no overlay or component reaches (never applied): {orphans}"


def test_base_puts_everything_in_the_swarm_namespace() -> None:
    base = _kustomization(BASE)
    assert base.get("namespace") == "swarm"
    namespaces = [m for m in base_resources() if m.kind == "Namespace"]
    assert [m.name for m in namespaces] == ["swarm"]
    for m in base_resources():
        ns = m.doc.get("metadata", {}).get("namespace")
        assert ns in (None, "swarm"), f"{m.label} hard-codes namespace {ns!r}"


def test_resource_names_are_unique_in_the_base() -> None:
    seen: dict[tuple[str, str], str] = {}
    for m in base_resources():
        key = (m.kind, m.name)
        assert key not in seen, f"{m.label} duplicates {seen[key]}"
        seen[key] = m.label


# ------------------------------------------------------------- workloads


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_container_has_resource_requests_and_limits(
    workload: Manifest, container: dict[str, Any]
) -> None:
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert resource in resources.get(bound, {}), f"{workload.label}: no {bound}.{resource}"
    requests, limits = resources["requests"], resources["limits"]
    assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"]), f"{workload.label}: cpu request above limit"
    assert _memory(requests["memory"]) <= _memory(limits["memory"]), (
        f"{workload.label}: memory request above limit"
    )


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_container_has_readiness_and_liveness_probes(
    workload: Manifest, container: dict[str, Any]
) -> None:
    assert "readinessProbe" in container, f"{workload.label}: no readinessProbe"
    assert "livenessProbe" in container, f"{workload.label}: no livenessProbe"


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_named_probe_port_is_a_container_port(workload: Manifest, container: dict[str, Any]) -> None:
    names = {p.get("name") for p in container.get("ports", [])}
    numbers = {p["containerPort"] for p in container.get("ports", [])}
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_name, {})
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe:
                port = probe[handler]["port"]
                assert port in names | numbers, f"{workload.label}: {probe_name} probes unknown port {port}"


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_container_runs_hardened(workload: Manifest, container: dict[str, Any]) -> None:
    ctx = _effective_security_context(workload, container)
    where = f"{workload.label} container {container['name']}"
    assert ctx.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true"
    assert ctx.get("runAsUser", 1) != 0, f"{where}: runs as uid 0"
    assert ctx.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
    assert ctx.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed"
    assert not ctx.get("privileged", False), f"{where}: privileged"
    assert "ALL" in ctx.get("capabilities", {}).get("drop", []), f"{where}: capabilities not dropped"
    assert not ctx.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
    assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", (
        f"{where}: no RuntimeDefault seccomp"
    )


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_container_has_a_tagged_image(workload: Manifest, container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    assert image, f"{workload.label}: container {container['name']} has no image"
    if "@" in image:  # pinned by digest
        return
    last_segment = image.rsplit("/", 1)[-1]  # a registry host may carry a :port
    tag = last_segment.partition(":")[2]
    assert tag and tag != "latest", f"{workload.label}: image {image} must carry a version tag"


@pytest.mark.parametrize("workload", _params(workloads()))
def test_every_volume_mount_names_a_volume_of_its_pod(workload: Manifest) -> None:
    volumes = {v["name"] for v in pod_spec(workload).get("volumes", [])}
    volumes |= {t["metadata"]["name"] for t in workload.doc["spec"].get("volumeClaimTemplates", [])}
    for container in containers(workload):
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{workload.label}: mount of undefined volume {mount['name']}"


@pytest.mark.parametrize("workload", _params(workloads()))
def test_every_workload_runs_as_its_own_service_account_without_a_token(workload: Manifest) -> None:
    spec = pod_spec(workload)
    accounts = {m.name: m for m in base_resources() if m.kind == "ServiceAccount"}
    name = spec.get("serviceAccountName")
    assert name in accounts, f"{workload.label}: serviceAccountName {name!r} is not defined in the base"
    assert spec.get("automountServiceAccountToken") is False, f"{workload.label}: mounts an API token"
    users = [w.name for w in workloads() if pod_spec(w).get("serviceAccountName") == name]
    assert users == [workload.name], f"service account {name} is shared by {users}"


@pytest.mark.parametrize("workload", _params(workloads()))
def test_workload_selector_matches_its_pod_labels(workload: Manifest) -> None:
    selector = workload.doc["spec"]["selector"]["matchLabels"]
    assert _selects(selector, pod_labels(workload)), f"{workload.label}: selector does not match its pods"


# ---------------------------------------------------- config and secrets


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_secret_reference_names_a_secret_defined_in_the_base(
    workload: Manifest, container: dict[str, Any]
) -> None:
    secrets = base_secrets()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] in secrets, (
                f"{workload.label}: env {env['name']} uses undefined Secret {ref['name']}"
            )
            assert ref["key"] in secrets[ref["name"]], (
                f"{workload.label}: env {env['name']}: Secret {ref['name']} has no key {ref['key']}"
            )
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            assert source["secretRef"]["name"] in secrets
    for volume in pod_spec(workload).get("volumes", []):
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets, f"{workload.label}: volume of undefined Secret"


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_every_config_map_reference_names_a_config_map_defined_in_the_base(
    workload: Manifest, container: dict[str, Any]
) -> None:
    config_maps = base_config_maps()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] in config_maps, f"{workload.label}: env {env['name']} uses undefined ConfigMap"
            assert ref["key"] in config_maps[ref["name"]], (
                f"{workload.label}: env {env['name']}: ConfigMap {ref['name']} has no key {ref['key']}"
            )
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
    for volume in pod_spec(workload).get("volumes", []):
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps, (
                f"{workload.label}: volume of undefined ConfigMap"
            )


@pytest.mark.parametrize(("workload", "container"), _container_params())
def test_env_interpolations_refer_to_variables_defined_before_them(
    workload: Manifest, container: dict[str, Any]
) -> None:
    # Kubernetes leaves `$(NAME)` as literal text when NAME is not defined
    # earlier in the same container: a silently wrong value, not an error.
    defined: set[str] = set()
    for env in container.get("env", []):
        for name in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(env.get("value", ""))):
            assert name in defined, f"{workload.label}: {env['name']} uses $({name}) before it is defined"
        defined.add(env["name"])


# --------------------------------------------------------- Swarm services


NODES = K8S / "nodes"


def node_agents() -> list[Manifest]:
    """Swarm services that run on every agent-hosting node (deploy/k8s/nodes)."""
    return [
        m
        for m in _resources_of(NODES)
        if m.kind == "DaemonSet" and any(is_swarm_container(c) for c in containers(m))
    ]


def test_every_service_package_is_deployed() -> None:
    deployed = sorted(m.name for m in [*swarm_services(), *node_agents()])
    assert deployed, "the base deploys no Swarm service"
    missing = sorted(set(service_packages()) - set(deployed))
    assert not missing, (
        f"services with code but no deployment: {missing}; add deploy/k8s/base/<service>/ "
        "(copy ticketing/, see deploy/k8s/README.md)"
    )


@pytest.mark.parametrize("service", _params(swarm_services()))
def test_every_service_runs_its_own_python_module(service: Manifest) -> None:
    container = swarm_container(service)
    module = f"swarm_{service.name}"
    assert container.get("command") == ["python", "-m", module], f"{service.label}: wrong command"
    assert (SERVICES / service.name / module / "__main__.py").is_file(), f"no module {module} to run"


HEALTHCHECK_MODULE = "swarmcommon.healthcheck"


def assert_mtls_health_probes(service: Manifest, container: dict[str, Any]) -> None:
    """The mesh port takes only mutual TLS, which the kubelet's native grpc
    probe cannot speak: every probe runs swarmcommon.healthcheck with the
    pod's own certificate (its TLS_DIR) against its gRPC port."""
    grpc_ports = {p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"}
    assert grpc_ports == {GRPC_PORT}, f"{service.label}: needs one container port named grpc = {GRPC_PORT}"
    tls_dir = env_values(container).get(f"SWARM_{service.name.upper()}_TLS_DIR")
    assert tls_dir, f"{service.label}: no SWARM_{service.name.upper()}_TLS_DIR for the probe to use"
    expected = ["python", "-m", HEALTHCHECK_MODULE, "--tls-dir", tls_dir, f"127.0.0.1:{GRPC_PORT}"]
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe_name == "startupProbe" and probe_name not in container:
            continue
        probe = container.get(probe_name, {})
        assert "grpc" not in probe, f"{service.label}: a native grpc probe cannot pass mutual TLS"
        assert probe.get("exec", {}).get("command") == expected, (
            f"{service.label}: {probe_name} must run {' '.join(expected)}"
        )
        # Each run starts Python: give it time under a CPU limit.
        assert probe.get("timeoutSeconds", 1) >= 3, f"{service.label}: {probe_name} timeout too short"
    assert (REPO / "libs/swarmcommon/swarmcommon/healthcheck.py").is_file()


@pytest.mark.parametrize("service", _params(grpc_services()))
def test_every_service_has_mtls_health_probes(service: Manifest) -> None:
    assert_mtls_health_probes(service, swarm_container(service))


@pytest.mark.parametrize("service", _params(grpc_services()))
def test_every_service_listens_on_all_interfaces_at_its_grpc_port(service: Manifest) -> None:
    # The settings default is 127.0.0.1, unreachable for probes and Services.
    env = env_values(swarm_container(service))
    variable = f"SWARM_{service.name.upper()}_LISTEN_ADDRESS"
    assert env.get(variable) == f"0.0.0.0:{GRPC_PORT}", f"{service.label}: {variable} = {env.get(variable)!r}"


@pytest.mark.parametrize("service", _params(swarm_services()))
def test_every_service_env_var_carries_its_own_prefix(service: Manifest) -> None:
    # pydantic-settings ignores unknown variables, so a misnamed one is
    # silently dropped and the service runs on its default.
    prefix = f"SWARM_{service.name.upper()}_"
    container = swarm_container(service)
    names = [e["name"] for e in container.get("env", [])]
    wrong = [n for n in names if n.startswith("SWARM_") and not n.startswith(prefix)]
    assert not wrong, f"{service.label}: env vars with another service's prefix: {wrong}"
    assert env_values(container).get("OTEL_SERVICE_NAME") == service.name
    if service.name not in HTTP_SERVICES:  # the gateway keeps no state
        assert f"{prefix}DATABASE_URL" in names, f"{service.label}: no {prefix}DATABASE_URL"


@pytest.mark.parametrize("service", _params(swarm_services()))
def test_every_service_database_is_created_by_the_postgres_init_script(service: Manifest) -> None:
    url = env_values(swarm_container(service)).get(f"SWARM_{service.name.upper()}_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return
    parts = urlsplit(url)
    assert parts.hostname == "postgres" and parts.port == 5432, (
        f"{service.label}: not the in-cluster Postgres"
    )
    listed = [
        line.split()[0]
        for line in POSTGRES_DATABASES.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    database = parts.path.lstrip("/")
    assert database == service.name, f"{service.label}: each service owns a database named after it"
    assert database in listed, f"database {database} is not in {POSTGRES_DATABASES.relative_to(REPO)}"


@pytest.mark.parametrize("service", _params(swarm_services()))
def test_termination_grace_period_covers_pre_stop_and_drain(service: Manifest) -> None:
    container = swarm_container(service)
    grace_period = pod_spec(service).get("terminationGracePeriodSeconds", 30)
    drain = float(env_values(container).get(f"SWARM_{service.name.upper()}_SHUTDOWN_GRACE_SECONDS", "10"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert sleep + drain < grace_period, (
        f"{service.label}: preStop {sleep}s + drain {drain}s does not fit in {grace_period}s; "
        "the kubelet would SIGKILL in-flight RPCs"
    )


@pytest.mark.parametrize("service", _params(grpc_services()))
def test_every_service_has_a_grpc_service_selecting_its_pods(service: Manifest) -> None:
    matches = [m for m in base_resources() if m.kind == "Service" and m.name == service.name]
    assert matches, f"{service.label}: no Service named {service.name}"
    svc = matches[0].doc["spec"]
    assert _selects(svc.get("selector", {}), pod_labels(service)), (
        f"Service {service.name} selects no pods of it"
    )
    grpc = [p for p in svc["ports"] if p.get("name") == "grpc"]
    assert grpc and grpc[0]["port"] == GRPC_PORT, f"Service {service.name} has no grpc port {GRPC_PORT}"


@pytest.mark.parametrize("service", _params(swarm_services()))
def test_every_service_has_a_disruption_budget_and_spreads_its_replicas(service: Manifest) -> None:
    labels = pod_labels(service)
    budgets = [
        m
        for m in base_resources()
        if m.kind == "PodDisruptionBudget" and _selects(m.doc["spec"]["selector"]["matchLabels"], labels)
    ]
    assert len(budgets) == 1, f"{service.label}: needs exactly one PodDisruptionBudget, has {len(budgets)}"
    spec = pod_spec(service)
    spreads = [
        c
        for c in spec.get("topologySpreadConstraints", [])
        if _selects(c["labelSelector"]["matchLabels"], labels)
    ]
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    anti_terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) + anti.get(
        "requiredDuringSchedulingIgnoredDuringExecution", []
    )
    assert spreads or anti_terms, f"{service.label}: replicas are not spread across nodes"
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spreads) or anti_terms


@pytest.mark.parametrize("service", _params(http_services()))
def test_http_services_probe_health_and_readiness_and_listen_publicly(service: Manifest) -> None:
    container = swarm_container(service)
    ports = {p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http"}
    assert ports == {HTTP_PORT}, f"{service.label}: needs one container port named http = {HTTP_PORT}"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = env_values(container)
    prefix = f"SWARM_{service.name.upper()}_"
    assert env.get(f"{prefix}HOST") == "0.0.0.0" and env.get(f"{prefix}PORT") == str(HTTP_PORT)
    # Backends are reached by their in-cluster Service names on the gRPC port.
    targets = {k: v for k, v in env.items() if k.endswith("_TARGET")}
    grpc_names = {s.name for s in grpc_services()}
    assert targets, f"{service.label}: no backend targets"
    for name, value in targets.items():
        host, _, port = value.rpartition(":")
        assert host in grpc_names and port == str(GRPC_PORT), f"{service.label}: {name}={value}"
    svc = [m for m in base_resources() if m.kind == "Service" and m.name == service.name]
    assert svc and any(p.get("name") == "http" for p in svc[0].doc["spec"]["ports"])


# -------------------------------------------------------------- Services


@pytest.mark.parametrize("service", _params([m for m in base_resources() if m.kind == "Service"]))
def test_every_service_selects_a_workload_and_targets_its_ports(service: Manifest) -> None:
    selector = service.doc["spec"].get("selector", {})
    targets = [w for w in workloads() if _selects(selector, pod_labels(w))]
    assert targets, f"{service.label}: selector {selector} matches no workload's pods"
    for workload in targets:
        ports = [p for c in containers(workload) for p in c.get("ports", [])]
        names = {p.get("name") for p in ports}
        numbers = {p["containerPort"] for p in ports}
        for port in service.doc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in names | numbers, (
                f"{service.label}: targetPort {target} is not a container port of {workload.label}"
            )


# ------------------------------------------------- overlays and components


def _other_kustomizations() -> list[Path]:
    return [p.parent for p in kustomization_files() if BASE not in p.parents and p.parent != BASE]


@pytest.mark.parametrize("folder", _other_kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_overlay_and_component_patches_target_resources_in_the_base(folder: Path) -> None:
    kinds_names = {(m.kind, m.name) for m in base_resources()}
    generated = set(base_config_maps()) | set(base_secrets())
    doc = _kustomization(folder)
    for entry in doc.get("patches", []) + doc.get("patchesStrategicMerge", []):
        path = entry if isinstance(entry, str) else entry.get("path")
        if path is None:
            continue
        for patch in _load_yaml(folder / path):
            key = (patch["kind"], patch["metadata"]["name"])
            assert key in kinds_names or key[1] in generated, f"{folder.name}/{path} patches missing {key}"
            if patch["kind"] in WORKLOAD_KINDS and "spec" in patch:
                (target,) = [m for m in workloads() if (m.kind, m.name) == key]
                names = {c["name"] for c in containers(target)}
                for container in patch["spec"]["template"]["spec"].get("containers", []):
                    assert container["name"] in names, f"{path}: no container {container['name']} in {key}"
    everywhere = [*workloads(), *(m for m in _resources_of(NODES) if m.kind in WORKLOAD_KINDS)]
    images = {str(c.get("image", "")).split(":", 1)[0] for w in everywhere for c in containers(w)}
    for image in doc.get("images", []):
        assert image["name"] in images, f"{folder.name}: images entry {image['name']} matches no container"
    for generator in doc.get("configMapGenerator", []):
        if generator.get("behavior") in ("merge", "replace"):
            assert generator["name"] in base_config_maps(), f"{folder.name}: merges into unknown ConfigMap"


# --------------------------------------------------------- node agents (vmhost)


# What vmhost's sandboxes need (the DaemonSet says why each), and no more.
SANDBOX_CAPABILITIES = (
    "NET_ADMIN",
    "SYS_ADMIN",
    "SETUID",
    "SETGID",
    "KILL",
    "CHOWN",
    "FOWNER",
    "DAC_OVERRIDE",
    "SYS_PTRACE",
)


def test_node_agents_live_in_their_own_privileged_namespace() -> None:
    kustomization = _kustomization(NODES)
    assert kustomization.get("namespace") == "swarm-nodes"
    namespaces = [m for m in _resources_of(NODES) if m.kind == "Namespace"]
    assert [n.doc["metadata"]["name"] for n in namespaces] == ["swarm-nodes"]
    labels = namespaces[0].doc["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert node_agents(), "no node agent deployed"


@pytest.mark.parametrize("agent", _params(node_agents()))
def test_node_agents_add_only_the_capabilities_sandboxes_need(agent: Manifest) -> None:
    container = swarm_container(agent)
    assert container.get("command") == ["python", "-m", f"swarm_{agent.name}"]
    ctx = container["securityContext"]
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert sorted(ctx["capabilities"]["add"]) == sorted(SANDBOX_CAPABILITIES)
    assert ctx["allowPrivilegeEscalation"] is False and not ctx.get("privileged", False)
    # Unfiltered (bubblewrap and gVisor are made of what the default filters
    # refuse); every guest gets vmhost's own filter instead.
    assert ctx["readOnlyRootFilesystem"] is True and ctx["seccompProfile"]["type"] == "Unconfined"
    assert container["image"].startswith("swarm/swarm-vmhost:")
    spec = pod_spec(agent)
    assert spec["hostNetwork"] is True and spec["automountServiceAccountToken"] is False
    env = env_values(container)
    assert env[f"SWARM_{agent.name.upper()}_LISTEN_ADDRESS"] == f"0.0.0.0:{GRPC_PORT}"
    assert env["OTEL_SERVICE_NAME"] == agent.name
    assert_mtls_health_probes(agent, container)
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts == {v["name"] for v in spec["volumes"]}
