"""Webhook delivery throughput and latency through the real events service.

The events service runs as its own process (SQLite, 8 dispatcher threads, of
which one endpoint may hold half: the benchmark has a single endpoint); a
local HTTP receiver counts deliveries. Two phases against the same service:

- throughput: N events published in one burst (batches of --batch); rate is
  deliveries per second from the first Publish to the last delivery;
- latency: events published one at a time at a steady --rate for --seconds;
  latency is from the Publish call to the receiver seeing the delivery.

Prints JSON with deliveries/s and event->delivery latency p50/p99 (and the
burst's latency, which is mostly queueing).

    python bench/webhooks.py [--events 2000] [--batch 100] [--workers 8] [--workers-per-endpoint 0]
                             [--rate 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarmcommon.localproc import start_service


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--workers-per-endpoint",
        type=int,
        default=0,
        help="dispatcher workers one endpoint may hold; 0: the service's default (half)",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase")
    args = parser.parse_args()

    received: dict[str, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                received.setdefault(self.headers["webhook-id"], time.perf_counter())
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}/hook"

    with tempfile.TemporaryDirectory() as tmp:
        proc, target = start_service(
            "swarm_events",
            "SWARM_EVENTS_",
            {
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'events.db'}",
                "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
                "DISPATCHER_WORKERS": str(args.workers),
                "DISPATCHER_POLL_SECONDS": "0.01",
                "DISPATCHER_WORKERS_PER_ENDPOINT": str(args.workers_per_endpoint),
                "LOG_LEVEL": "WARNING",
                "INSECURE_DEV": "true",
            },
        )
        try:
            with grpc.insecure_channel(target) as ch:
                stub = pb_grpc.EventsServiceStub(ch)
                stub.CreateWebhook(pb.CreateWebhookRequest(tenant_id="bench", url=url, event_types=["*"]))
                sent: dict[str, float] = {}
                start = time.perf_counter()
                for offset in range(0, args.events, args.batch):
                    batch = [
                        pb.Event(
                            id=str(uuid.uuid4()), tenant_id="bench", type="ticket.completed", source="bench"
                        )
                        for _ in range(min(args.batch, args.events - offset))
                    ]
                    t0 = time.perf_counter()
                    stub.Publish(pb.PublishRequest(events=batch))
                    sent.update({e.id: t0 for e in batch})
                deadline = time.monotonic() + 300
                while len(received) < args.events and time.monotonic() < deadline:
                    time.sleep(0.01)
                end = max(received.values()) if received else time.perf_counter()
                burst = dict(received)

                paced: dict[str, float] = {}
                interval, next_at = 1.0 / args.rate, time.perf_counter()
                for _ in range(int(args.rate * args.seconds)):
                    next_at += interval
                    event = pb.Event(
                        id=str(uuid.uuid4()), tenant_id="bench", type="ticket.completed", source="bench"
                    )
                    paced[event.id] = time.perf_counter()
                    stub.Publish(pb.PublishRequest(events=[event]))
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                deadline = time.monotonic() + 60
                while any(i not in received for i in paced) and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    http.shutdown()

    burst_latencies = [(burst[i] - sent[i]) * 1000 for i in sent if i in burst]
    latencies = [(received[i] - paced[i]) * 1000 for i in paced if i in received]
    print(
        json.dumps(
            {
                "benchmark": "webhooks",
                "dispatcher_workers": args.workers,
                "workers_per_endpoint": args.workers_per_endpoint or max(1, args.workers // 2),
                "throughput": {
                    "events": args.events,
                    "delivered": len(burst),
                    "deliveries_per_s": round(len(burst) / (end - start), 1),
                    "burst_latency_p50_ms": round(percentile(burst_latencies, 0.5), 1),
                },
                "latency": {
                    "rate_per_s": args.rate,
                    "events": len(paced),
                    "delivered": sum(1 for i in paced if i in received),
                    "p50_ms": round(percentile(latencies, 0.5), 1),
                    "p99_ms": round(percentile(latencies, 0.99), 1),
                    "mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
