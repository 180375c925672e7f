"""Liveness and readiness for Kubernetes probes (no auth, not in the API docs)."""

from __future__ import annotations

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm_gateway.auth import Backend

router = APIRouter(include_in_schema=False)

# Without these no route works; the others (events, telemetry, vmhost) only
# take their own routes down with them, so they are reported, not required.
REQUIRED = ("ticketing", "quota")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(b: Backend) -> JSONResponse:
    """Ready when the required backends' gRPC health services say SERVING;
    every backend's state is listed."""
    # All at once: an unreachable backend takes its retries' backoff to fail.
    checks = {
        name: health_pb2_grpc.HealthStub(ch).Check.future(health_pb2.HealthCheckRequest(), timeout=2)
        for name, ch in b.channels.items()
    }
    results: dict[str, str] = {}
    for name, call in checks.items():
        try:
            results[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(call.result().status)
        except grpc.RpcError as exc:
            results[name] = exc.code().name
    ready = all(results[name] == "SERVING" for name in REQUIRED)
    return JSONResponse({"ready": ready, "backends": results}, status_code=200 if ready else 503)
