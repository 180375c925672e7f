"""Liveness and readiness for Kubernetes probes (no auth, not in the API docs)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from swarm_gateway.deps import BackendsDep

router = APIRouter(include_in_schema=False)

# Without these no route works; the others (events, telemetry, vmhost) only
# take their own routes down with them, so they are reported, not required.
REQUIRED = ("ticketing", "quota")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(b: BackendsDep) -> JSONResponse:
    """Ready when the required backends' gRPC health services say SERVING;
    every backend's state is listed."""
    results = b.health()
    ready = all(results[name] == "SERVING" for name in REQUIRED)
    return JSONResponse({"ready": ready, "backends": results}, status_code=200 if ready else 503)
