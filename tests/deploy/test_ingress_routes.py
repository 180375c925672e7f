"""The gateway's Ingress opens exactly what the outside needs: every page of
the web dashboard and the REST API (/api, /admin), and none of what stays
in the cluster (/metrics, probes, the API docs). The page list is read from
the gateway app itself, so a new page without an Ingress path fails here."""

from __future__ import annotations

from swarm_gateway.config import Settings
from swarm_gateway.main import create_app
from tests.deploy.test_rendered import OVERLAYS, of_kind, render
from tests.support.mesh import api_routes

INTERNAL = ("/metrics", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json")


def _ingress_paths() -> list[tuple[str, str]]:
    (ingress,) = of_kind(render(OVERLAYS[0], ()), "Ingress")
    return [(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


def _exposed(path: str, paths: list[tuple[str, str]]) -> bool:
    """As Kubernetes matches: Exact by equality, Prefix by whole path segments."""
    for prefix, kind in paths:
        if kind == "Exact" and path == prefix:
            return True
        if kind == "Prefix" and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return True
    return False


def test_every_dashboard_page_and_api_route_is_exposed_and_nothing_internal_is() -> None:
    app = create_app(Settings(insecure_dev=True, admin_token="x" * 32))
    paths = _ingress_paths()
    public = [r.path for r in api_routes(app) if r.path not in INTERNAL and not r.path.startswith("/docs")]
    assert len(public) > 40 and "/" in public and "/login" in public
    missing = [p for p in public if not _exposed(p.split("{", 1)[0].rstrip("/") or "/", paths)]
    assert missing == [], f"pages or routes the Ingress does not reach: {missing}"
    assert _exposed("/static/dashboard.css", paths)
    leaked = [p for p in INTERNAL if _exposed(p, paths)]
    assert leaked == [], f"in-cluster routes the Ingress opens: {leaked}"
    assert not any(prefix == "/" and kind == "Prefix" for prefix, kind in paths), "a catch-all opens /metrics"
