"""Span ingestion through OTLP: spans stored per second by the telemetry service.

The service runs as its own process; client threads send OTLP
ExportTraceServiceRequests, exactly what a stock exporter's batch processor
sends (--batch spans each, shaped like an agent's work: one `agent.work`
span carrying tenant and ticket, the rest its children). Export answers
after the spans are stored, so the rate is spans durably stored per second.
Also reported: the export latency p50/p99. On each backend.

    python bench/spans.py [--spans 20000] [--batch 200] [--clients 4] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from swarmcommon.localproc import start_service

sys.path.insert(0, str(Path(__file__).parent))
from claims import LOCAL_POSTGRES, percentile, postgres_schema_url  # noqa: E402

STEPS = ("vm.restore", "git.clone", "llm.generate_code", "file.write", "git.commit", "git.push")


def _attr(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def make_batch(size: int) -> otlp.ExportTraceServiceRequest:
    spans: list[trace_pb2.Span] = []
    now = time.time_ns()
    while len(spans) < size:
        trace_id, root_id = os.urandom(16), os.urandom(8)
        spans.append(
            trace_pb2.Span(
                trace_id=trace_id,
                span_id=root_id,
                name="agent.work",
                kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 40_000_000_000,
                attributes=[_attr("swarm.tenant_id", "bench"), _attr("swarm.ticket_id", str(uuid.uuid4()))],
            )
        )
        for i, name in enumerate(STEPS[: size - len(spans)]):
            spans.append(
                trace_pb2.Span(
                    trace_id=trace_id,
                    span_id=os.urandom(8),
                    parent_span_id=root_id,
                    name=name,
                    start_time_unix_nano=now + i * 1_000_000,
                    end_time_unix_nano=now + (i + 1) * 1_000_000,
                )
            )
    resource = resource_pb2.Resource(
        attributes=[_attr("service.name", "swarm-agent"), _attr("swarm.agent_id", "a")]
    )
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
        ]
    )


def run(url: str, total: int, batch: int, clients: int) -> dict[str, float]:
    proc, target = start_service(
        "swarm_telemetry",
        "SWARM_TELEMETRY_",
        {
            "DATABASE_URL": url,
            "LOG_LEVEL": "WARNING",
            "INSECURE_DEV": "true",
            "RETENTION_INTERVAL_SECONDS": "0",
        },
    )
    try:
        per_client = total // clients // batch
        requests = [[make_batch(batch) for _ in range(per_client)] for _ in range(clients)]
        latencies: list[float] = []
        rejected: list[int] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            with grpc.insecure_channel(target) as ch:
                stub = otlp_grpc.TraceServiceStub(ch)  # type: ignore[no-untyped-call]
                for request in requests[i]:
                    t0 = time.perf_counter()
                    reply = stub.Export(request, timeout=60)
                    with lock:
                        latencies.append((time.perf_counter() - t0) * 1000)
                        rejected.append(reply.partial_success.rejected_spans)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    sent = per_client * clients * batch
    if sum(rejected):  # a rate of refused spans would measure the wrong thing
        raise RuntimeError(f"{sum(rejected)} of {sent} benchmark spans were rejected")
    return {
        "spans": sent,
        "seconds": round(seconds, 2),
        "spans_per_s": round(sent / seconds, 1),
        "export_p50_ms": round(statistics.median(latencies), 1),
        "export_p99_ms": round(percentile(latencies, 0.99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument(
        "--batch", type=int, default=200, help="spans per Export (the SDK's default max is 512)"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    results: dict[str, object] = {"benchmark": "spans", "batch": args.batch, "clients": args.clients}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                results[backend] = run(
                    f"sqlite:///{Path(tmp) / 'telemetry.db'}", args.spans, args.batch, args.clients
                )
            else:
                base = os.environ.get("SWARM_BENCH_POSTGRES_URL") or os.environ.get("SWARM_TEST_POSTGRES_URL")
                url, drop = postgres_schema_url(base or LOCAL_POSTGRES)
                try:
                    results[backend] = run(url, args.spans, args.batch, args.clients)
                finally:
                    drop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
