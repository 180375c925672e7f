"""Zero trust in the Kubernetes manifests: every workload's identity
(cert-manager Certificates, mounted and used), no insecure dev mode, and
NetworkPolicies that admit exactly the callers the services' access tables
name, so a table and its policy cannot drift apart unnoticed.

The access tables are imported from the servicers (`ACCESS`, and any other
table a servicer module declares, such as telemetry's `OTLP_ACCESS`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from swarmcommon.authz import Rule
from tests.deploy.test_manifests import (
    BASE,
    GRPC_PORT,
    K8S,
    NODES,
    OPERATOR_SECRETS,
    REPO,
    Manifest,
    _kustomization,
    _load_yaml,
    _resources_of,
    base_resources,
    containers,
    env_values,
    node_agents,
    pod_labels,
    pod_spec,
    swarm_container,
    swarm_services,
    yaml_files,
)

TRUST_DOMAIN = "swarm.local"
PKI = K8S / "pki"
AGENT_HOSTS_COMPONENT = K8S / "components" / "agent-host-addresses"
README = K8S / "README.md"
NAME_LABEL = "app.kubernetes.io/name"
MESH_CA_ISSUER = "swarm-mesh-ca"
# Certificates live at most this long; cert-manager renews them before.
MAX_CERT_HOURS = 72
# Services whose egress is restricted to DNS + the peers they call. The others
# reach outside the mesh by design (README, "Mesh security"): events delivers
# webhooks to tenants' URLs, telemetry forwards to Jaeger and (next) the LLM
# provider, the gateway calls vmhost on the host network, vmhost's policies
# do not apply to it (host network).
EGRESS_RESTRICTED = {"ticketing", "quota"}
# Swarm services without a gRPC servicer (no access table): the REST front door.
FRONT_DOORS = {"gateway"}


# ---------------------------------------------------------------- helpers


def namespace_of(path_root: Any) -> str:
    return str(_kustomization(path_root)["namespace"])


BASE_NS, NODES_NS = namespace_of(BASE), namespace_of(NODES)


@cache
def node_resources() -> tuple[Manifest, ...]:
    return tuple(_resources_of(NODES))


@cache
def pki_resources() -> tuple[Manifest, ...]:
    return tuple(_resources_of(PKI))


def mesh_workloads() -> list[tuple[Manifest, str]]:
    """(workload, namespace) of every Swarm service: base Deployments and node agents."""
    return [(w, BASE_NS) for w in swarm_services()] + [(w, NODES_NS) for w in node_agents()]


def resources_in(namespace: str) -> tuple[Manifest, ...]:
    return base_resources() if namespace == BASE_NS else node_resources()


def _params() -> list[Any]:
    return [pytest.param(w, ns, id=w.name) for w, ns in mesh_workloads()]


def location() -> dict[str, str]:
    """Workload name -> namespace."""
    return {w.name: ns for w, ns in mesh_workloads()} | {
        m.name: BASE_NS for m in base_resources() if m.kind in ("Deployment", "StatefulSet")
    }


def access_tables(service: str) -> list[Mapping[str, Rule]]:
    """Every access table the service's servicer module declares."""
    module = importlib.import_module(f"swarm_{service}.servicer")
    return [
        value
        for value in vars(module).values()
        if isinstance(value, Mapping) and value and all(isinstance(r, Rule) for r in value.values())
    ]


def allowed_services(service: str) -> set[str]:
    return {name for table in access_tables(service) for rule in table.values() for name in rule.services}


def admits_agents(service: str) -> bool:
    return any(rule.agents for table in access_tables(service) for rule in table.values())


def certificate_of(workload: Manifest, namespace: str) -> Manifest:
    certs = [
        m
        for m in resources_in(namespace)
        if m.kind == "Certificate" and m.doc["metadata"].get("labels", {}).get(NAME_LABEL) == workload.name
    ]
    assert len(certs) == 1, f"{workload.label}: needs exactly one Certificate, has {len(certs)}"
    return certs[0]


def hours(duration: str) -> float:
    """A Go duration as cert-manager takes it (`24h`, `90m`, `1h30m`)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def policies_in(namespace: str) -> list[Manifest]:
    return [m for m in resources_in(namespace) if m.kind == "NetworkPolicy"]


def policies_selecting(labels: dict[str, str], namespace: str) -> list[Manifest]:
    out = []
    for policy in policies_in(namespace):
        selector = policy.doc["spec"]["podSelector"]
        match = selector.get("matchLabels", {})
        if match and all(labels.get(k) == v for k, v in match.items()):
            out.append(policy)
    return out


def rules_for_port(
    policies: list[Manifest], port_names: set[str | int], direction: str = "ingress"
) -> Iterator[dict[str, Any]]:
    """Rules of `policies` that open one of `port_names` (a rule without ports opens all)."""
    for policy in policies:
        for rule in policy.doc["spec"].get(direction, []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if not rule.get("ports") or ports & port_names:
                yield rule


def peer_workload(peer: dict[str, Any], policy_namespace: str, where: str) -> str:
    """The workload a NetworkPolicy peer selects (by its name label, in the
    namespace the peer names), failing for anything broader."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, f"{where}: peer {peer} is not a workload's pods"
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    assert set(pods) == {NAME_LABEL}, f"{where}: peer {peer} must select pods by {NAME_LABEL} alone"
    namespace = policy_namespace
    if "namespaceSelector" in peer:
        ns_labels = peer["namespaceSelector"].get("matchLabels", {})
        assert set(ns_labels) == {"kubernetes.io/metadata.name"}, f"{where}: peer {peer}: vague namespace"
        namespace = ns_labels["kubernetes.io/metadata.name"]
    name = pods[NAME_LABEL]
    assert location().get(name) == namespace, f"{where}: peer selects {name} in {namespace}: no such workload"
    return str(name)


def sources(rules: Iterator[dict[str, Any]], namespace: str, where: str) -> set[str]:
    out: set[str] = set()
    for rule in rules:
        assert "from" in rule, f"{where}: a rule admits everyone"
        out |= {peer_workload(p, namespace, where) for p in rule["from"]}
    return out


def host_of(target: str) -> str:
    """`quota:50051`, `quota.swarm.svc:50051`, `https://telemetry:50051` -> quota / telemetry."""
    netloc = urlsplit(target).netloc if "://" in target else target
    return netloc.rsplit(":", 1)[0].split(".", 1)[0]


def called_services(container: dict[str, Any]) -> set[str]:
    """Services a container dials: its *_TARGET settings and its OTLP endpoint."""
    env = env_values(container)
    called = {host_of(v) for k, v in env.items() if k.startswith("SWARM_") and k.endswith("_TARGET")}
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
        called.add(host_of(env["OTEL_EXPORTER_OTLP_ENDPOINT"]))
    elif any(e.get("name") == "OTEL_EXPORTER_OTLP_ENDPOINT" for e in container.get("env", [])):
        called.add("telemetry")  # from swarm-common: https://telemetry:50051
    return called


def uses_postgres(container: dict[str, Any], service: str) -> bool:
    url = env_values(container).get(f"SWARM_{service.upper()}_DATABASE_URL", "")
    return url.startswith("postgresql") and urlsplit(url).hostname == "postgres"


def mount_of(workload: Manifest, container: dict[str, Any], secret: str) -> str:
    """Where `container` mounts the Secret `secret` (a whole-directory mount)."""
    volumes = [
        v["name"] for v in pod_spec(workload)["volumes"] if v.get("secret", {}).get("secretName") == secret
    ]
    assert len(volumes) == 1, f"{workload.label}: no volume of Secret {secret}"
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] == volumes[0]]
    assert len(mounts) == 1, f"{workload.label}: Secret {secret} is not mounted"
    # subPath mounts never see a renewed Secret.
    assert "subPath" not in mounts[0], f"{workload.label}: {secret} mounted with subPath"
    assert mounts[0].get("readOnly") is True, f"{workload.label}: {secret} mounted writable"
    return str(mounts[0]["mountPath"])


def settings_fields(service: str) -> set[str]:
    module = importlib.import_module(f"swarm_{service}.config")
    return set(module.Settings.model_fields)


# ------------------------------------------------------ identity (cert-manager)


def test_the_mesh_ca_is_bootstrapped_by_cert_manager() -> None:
    by_kind = {(m.kind, m.name): m for m in pki_resources()}
    issuer = by_kind[("ClusterIssuer", MESH_CA_ISSUER)].doc
    ca_cert = [m for m in pki_resources() if m.kind == "Certificate"]
    assert len(ca_cert) == 1, "one CA Certificate"
    ca = ca_cert[0].doc
    assert ca["spec"]["isCA"] is True
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    # A ClusterIssuer reads its CA Secret from cert-manager's cluster
    # resource namespace; the CA and its bootstrap issuer live there.
    assert ca["metadata"]["namespace"] == "cert-manager"
    bootstrap = by_kind[("Issuer", ca["spec"]["issuerRef"]["name"])].doc
    assert ca["spec"]["issuerRef"]["kind"] == "Issuer" and "selfSigned" in bootstrap["spec"]
    assert bootstrap["metadata"]["namespace"] == "cert-manager"
    # Renewal keeps the CA key, so leaves signed before and after both verify.
    assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
    assert "namespace" not in _kustomization(PKI), "the pki kustomization must not move the CA"
    overlay = _kustomization(K8S / "overlays" / "dev")
    assert "../../pki" in overlay["resources"], "the dev overlay does not install the mesh CA"


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_every_workload_has_a_short_lived_spiffe_certificate(workload: Manifest, namespace: str) -> None:
    cert = certificate_of(workload, namespace)
    spec = cert.doc["spec"]
    assert spec["uris"] == [f"spiffe://{TRUST_DOMAIN}/service/{workload.name}"], (
        f"{cert.label}: wrong URI SAN"
    )
    assert {"server auth", "client auth"} <= set(spec["usages"]), (
        f"{cert.label}: needs server and client auth"
    )
    assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": MESH_CA_ISSUER}
    assert spec["secretName"] == f"{workload.name}-tls"
    duration, renew = hours(spec["duration"]), hours(spec["renewBefore"])
    assert duration <= MAX_CERT_HOURS, f"{cert.label}: {spec['duration']} is not short-lived"
    assert duration / 4 <= renew < duration, f"{cert.label}: renewBefore leaves too little or no margin"
    assert spec["privateKey"]["rotationPolicy"] == "Always", f"{cert.label}: renewals must change the key"
    assert "commonName" not in spec, f"{cert.label}: the identity is the URI SAN alone"
    # Clients check the server by the name they dial: the Service's names.
    names = set(spec["dnsNames"])
    expected = {
        workload.name,
        f"{workload.name}.{namespace}.svc",
        f"{workload.name}.{namespace}.svc.cluster.local",
    }
    assert expected <= names, f"{cert.label}: missing DNS names {sorted(expected - names)}"


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_every_address_a_client_dials_is_a_name_in_the_servers_certificate(
    workload: Manifest, namespace: str
) -> None:
    names = set(certificate_of(workload, namespace).doc["spec"]["dnsNames"])
    for client, _ in mesh_workloads():
        env = env_values(swarm_container(client))
        for key, value in env.items():
            if key.endswith("_TARGET") and host_of(value) == workload.name:
                host = value.rsplit(":", 1)[0]
                assert host in names, (
                    f"{client.label} dials {host}, not a name in {workload.name}'s certificate"
                )


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_every_workload_mounts_its_certificate_and_uses_it(workload: Manifest, namespace: str) -> None:
    container = swarm_container(workload)
    secret = certificate_of(workload, namespace).doc["spec"]["secretName"]
    path = mount_of(workload, container, secret)
    env = env_values(container)
    prefix = f"SWARM_{workload.name.upper()}_"
    assert env.get(f"{prefix}TLS_DIR") == path, f"{workload.label}: {prefix}TLS_DIR must be {path}"
    if "trust_domain" in settings_fields(workload.name):
        assert env.get(f"{prefix}TRUST_DOMAIN") == TRUST_DOMAIN, f"{workload.label}: {prefix}TRUST_DOMAIN"
    # Spans go to telemetry's mesh port with the same certificate.
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "https://telemetry:50051")
    if host_of(endpoint) == "telemetry":
        assert endpoint.startswith("https://"), f"{workload.label}: plaintext OTLP to a mutual-TLS port"
        assert env.get("OTEL_EXPORTER_OTLP_CERTIFICATE") == f"{path}/ca.crt"
        assert env.get("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE") == f"{path}/tls.crt"
        assert env.get("OTEL_EXPORTER_OTLP_CLIENT_KEY") == f"{path}/tls.key"


def test_the_shared_otlp_endpoint_is_telemetrys_tls_port() -> None:
    (common,) = [
        g for g in _kustomization(BASE / "common")["configMapGenerator"] if g["name"] == "swarm-common"
    ]
    literals = dict(lit.split("=", 1) for lit in common["literals"])
    assert literals["otel-exporter-otlp-endpoint"] == f"https://telemetry:{GRPC_PORT}"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_nothing_under_deploy_k8s_turns_on_insecure_dev_mode() -> None:
    # Base, nodes, overlays and components alike: plaintext and trust-everyone
    # is for a laptop, never for a cluster.
    for path in yaml_files():
        for doc in _load_yaml(path):
            for node in _walk(doc):
                name = str(node.get("name", ""))
                assert not name.endswith("_INSECURE_DEV"), f"{path.relative_to(REPO)} sets {name}"


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_services_guests_reach_have_an_agent_port_with_the_token_key(
    workload: Manifest, namespace: str
) -> None:
    container = swarm_container(workload)
    env = env_values(container)
    prefix = f"SWARM_{workload.name.upper()}_"
    agent_ports = [p for p in container.get("ports", []) if p.get("name") == "agent"]
    if workload.name in FRONT_DOORS or not admits_agents(workload.name):
        assert not agent_ports and f"{prefix}AGENT_LISTEN_ADDRESS" not in env, (
            f"{workload.label}: no agent may call it, yet it opens an agent port"
        )
        return
    assert len(agent_ports) == 1, f"{workload.label}: agents call it; needs a container port named agent"
    port = agent_ports[0]["containerPort"]
    assert port != GRPC_PORT
    assert env.get(f"{prefix}AGENT_LISTEN_ADDRESS") == f"0.0.0.0:{port}"
    secret = "agent-token-signing-key" if workload.name == "vmhost" else "agent-token-public-key"
    path = mount_of(workload, container, secret)
    assert env.get(f"{prefix}AGENT_TOKEN_PUBLIC_KEYS") == f"{path}/public.pem"
    if workload.name == "vmhost":
        assert env.get(f"{prefix}AGENT_TOKEN_SIGNING_KEY") == f"{path}/key.pem"
        return  # guests reach their own node's vmhost on the bridge, not through a Service
    (service,) = [m for m in base_resources() if m.kind == "Service" and m.name == workload.name]
    exposed = [p for p in service.doc["spec"]["ports"] if p.get("targetPort") == "agent"]
    assert len(exposed) == 1, f"Service {workload.name} does not expose the agent port"
    # vmhost hands guests exactly this address (and never the mesh port).
    (vmhost,) = node_agents()
    given = env_values(swarm_container(vmhost)).get(f"SWARM_VMHOST_{workload.name.upper()}_AGENT_TARGET")
    assert given == f"{workload.name}.{namespace}.svc:{exposed[0]['port']}", (
        f"vmhost gives guests {given!r} for {workload.name}"
    )


def test_the_signing_key_lives_only_with_vmhost() -> None:
    holders = [
        w.name
        for w, _ in mesh_workloads()
        for v in pod_spec(w).get("volumes", [])
        if v.get("secret", {}).get("secretName") == "agent-token-signing-key"
    ]
    assert holders == ["vmhost"]


def test_secrets_the_operator_creates_are_documented_with_a_command() -> None:
    readme = README.read_text(encoding="utf-8")
    for name in [*OPERATOR_SECRETS, "agent-token-signing-key"]:
        assert re.search(rf"create secret generic {name}\b", readme), f"README: no command creating {name}"
    assert "openssl genpkey -algorithm ed25519" in readme
    assert "## Mesh security" in readme


# ----------------------------------------------------------- NetworkPolicies


@pytest.mark.parametrize("root", [BASE, NODES], ids=["swarm", "swarm-nodes"])
def test_every_namespace_denies_ingress_by_default(root: Any) -> None:
    namespace = namespace_of(root)
    defaults = [
        p
        for p in policies_in(namespace)
        if p.doc["spec"]["podSelector"] == {} and "Ingress" in p.doc["spec"]["policyTypes"]
    ]
    assert len(defaults) == 1, f"namespace {namespace}: needs one default-deny ingress policy"
    assert not defaults[0].doc["spec"].get("ingress"), f"{defaults[0].label} admits something"


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_the_mesh_port_admits_exactly_the_callers_of_the_access_tables(
    workload: Manifest, namespace: str
) -> None:
    policies = policies_selecting(pod_labels(workload), namespace)
    assert policies, f"{workload.label}: no NetworkPolicy of its own"
    where = f"NetworkPolicy for {workload.name}"
    if workload.name in FRONT_DOORS:
        rules = list(rules_for_port(policies, {"http", 8080}))
        assert rules and all("from" not in r for r in rules), f"{where}: the HTTP port is open to anyone"
        assert not list(rules_for_port(policies, {"grpc", GRPC_PORT})), f"{where}: opens a gRPC port"
        return
    admitted = sources(rules_for_port(policies, {"grpc", GRPC_PORT}), namespace, where)
    expected = allowed_services(workload.name)
    assert admitted == expected, (
        f"{where}: the mesh port admits {sorted(admitted)}, the access tables name {sorted(expected)}; "
        "change the policy with the table"
    )


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_the_agent_port_admits_only_where_guests_run(workload: Manifest, namespace: str) -> None:
    policies = policies_selecting(pod_labels(workload), namespace)
    rules = list(rules_for_port(policies, {"agent"}))
    if workload.name in FRONT_DOORS or not admits_agents(workload.name):
        assert not rules, f"{workload.label}: no agent may call it, yet a policy opens an agent port"
        return
    assert rules, f"{workload.label}: guests cannot reach its agent port"
    if workload.name == "vmhost":
        # Its guests sit on the node's swarm0 bridge.
        bridge = env_values(swarm_container(workload))["SWARM_VMHOST_BRIDGE_CIDR"]
        peers = [p for r in rules for p in r.get("from", [{}])]
        assert peers == [{"ipBlock": {"cidr": bridge}}], (
            f"{workload.label}: agent port open beyond the bridge"
        )
        return
    # Guests' traffic leaves their node through vmhost's network.
    assert sources(iter(rules), namespace, f"{workload.name} agent port") == {"vmhost"}


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_restricted_egress_reaches_exactly_dns_and_the_peers_called(
    workload: Manifest, namespace: str
) -> None:
    policies = policies_selecting(pod_labels(workload), namespace)
    restricting = [p for p in policies if "Egress" in p.doc["spec"]["policyTypes"]]
    if workload.name not in EGRESS_RESTRICTED:
        assert not restricting, (
            f"{workload.label}: egress restricted; add it to EGRESS_RESTRICTED and the README"
        )
        return
    assert restricting, f"{workload.label}: egress is meant to be restricted"
    rules = [r for p in restricting for r in p.doc["spec"].get("egress", [])]
    dns = [r for r in rules if "to" not in r]
    assert len(dns) == 1, f"{workload.label}: exactly one rule without `to` (DNS)"
    assert sorted((p["port"], p["protocol"]) for p in dns[0]["ports"]) == [(53, "TCP"), (53, "UDP")]
    container = swarm_container(workload)
    expected = called_services(container) | (
        {"postgres"} if uses_postgres(container, workload.name) else set()
    )
    destinations = [{"from": r["to"]} for r in rules if "to" in r]  # same peer shape as ingress
    reached = sources(iter(destinations), namespace, f"{workload.name} egress")
    assert reached == expected, (
        f"{workload.label}: egress reaches {sorted(reached)}, it calls {sorted(expected)}"
    )


def test_postgres_admits_exactly_the_services_with_a_database_there() -> None:
    (postgres,) = [m for m in base_resources() if m.kind == "StatefulSet" and m.name == "postgres"]
    policies = policies_selecting(pod_labels(postgres), BASE_NS)
    admitted = sources(rules_for_port(policies, {"postgres", 5432}), BASE_NS, "postgres policy")
    users = {w.name for w, _ in mesh_workloads() if uses_postgres(swarm_container(w), w.name)}
    assert users and admitted == users


def test_jaeger_admits_exactly_the_workloads_that_send_it_spans() -> None:
    (jaeger,) = [m for m in base_resources() if m.kind == "Deployment" and m.name == "jaeger"]
    policies = policies_selecting(pod_labels(jaeger), BASE_NS)
    admitted = sources(rules_for_port(policies, {"otlp-grpc", 4317}), BASE_NS, "jaeger policy")
    senders = {
        w.name
        for w, _ in mesh_workloads()
        for c in containers(w)
        if any("jaeger-collector" in v for v in env_values(c).values())
    }
    assert senders and admitted == senders
    assert not list(rules_for_port(policies, {"http-query", 16686})), "the Jaeger UI is port-forward only"


def test_the_agent_host_component_admits_node_addresses_only_to_what_vmhost_and_guests_call() -> None:
    (policy,) = [m for m in _resources_of(AGENT_HOSTS_COMPONENT) if m.kind == "NetworkPolicy"]
    (expression,) = policy.doc["spec"]["podSelector"]["matchExpressions"]
    assert expression["key"] == NAME_LABEL and expression["operator"] == "In"
    expected = {
        w.name
        for w, ns in mesh_workloads()
        if ns == BASE_NS
        and w.name not in FRONT_DOORS
        and ("vmhost" in allowed_services(w.name) or admits_agents(w.name))
    }
    assert set(expression["values"]) == expected
    (rule,) = policy.doc["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"grpc", "agent"}
    assert [set(peer) for peer in rule["from"]] == [{"ipBlock"}]


def test_only_guests_reach_the_llm_proxy_and_only_telemetry_holds_the_provider_key() -> None:
    (telemetry,) = [w for w, _ in mesh_workloads() if w.name == "telemetry"]
    container = swarm_container(telemetry)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    address = env_values(container)["SWARM_TELEMETRY_LLM_PROXY_LISTEN_ADDRESS"]
    assert address.endswith(f":{ports['llm-proxy']}")
    rules = list(rules_for_port(policies_selecting(pod_labels(telemetry), BASE_NS), {"llm-proxy"}))
    assert sources(iter(rules), BASE_NS, "telemetry llm-proxy port") == {"vmhost"}
    holders = {
        w.name
        for w, _ in mesh_workloads()
        for c in containers(w)
        for e in c.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "llm-provider-key"
    }
    assert holders == {"telemetry"}


MONITORING_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {NAME_LABEL: "prometheus"}},
}


@pytest.mark.parametrize(("workload", "namespace"), _params())
def test_prometheus_in_monitoring_reaches_the_metrics_port_and_nothing_else(
    workload: Manifest, namespace: str
) -> None:
    policies = policies_selecting(pod_labels(workload), namespace)
    ports = {p["name"]: p["containerPort"] for p in swarm_container(workload).get("ports", [])}
    if workload.name in FRONT_DOORS:
        # Its /metrics is on the HTTP port, already open to every client.
        assert "metrics" not in ports
        return
    assert "metrics" in ports, f"{workload.label}: no container port named metrics"
    rules = list(rules_for_port(policies, {"metrics", ports["metrics"]}))
    assert rules, f"{workload.label}: Prometheus cannot reach the metrics port"
    for rule in rules:
        assert rule.get("from") == [MONITORING_PEER], f"{workload.label}: metrics open to {rule.get('from')}"
        opened = {p["port"] for p in rule["ports"]}
        assert opened == {"metrics"}, (
            f"{workload.label}: the Prometheus rule also opens {opened - {'metrics'}}"
        )
    # The mesh and agent ports stay closed to it.
    for rule in rules_for_port(policies, {"grpc", GRPC_PORT, "agent"}):
        assert MONITORING_PEER not in rule.get("from", []), (
            f"{workload.label}: Prometheus reaches {rule['ports']}"
        )
