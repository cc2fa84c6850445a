"""Prometheus metrics of one server (GET /metrics), with prometheus-client.

Each app has its own registry (several servers in one process, as in tests, do not mix). With
``--workers N`` every worker process writes its values to PROMETHEUS_MULTIPROC_DIR (set by
``fvt serve`` before the workers start) and /metrics adds up all workers, whichever answers."""

from __future__ import annotations

import os
import time
from typing import Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTES = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/predict")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def route_label(path: str) -> str:
    """A bounded set of labels: any other path (scanners, typos) counts as "other"."""
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"


class ServeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("fvt_requests", "HTTP requests answered, by route and status code "
                                "(499: the client left before the answer)", ["route", "status"], registry=r)
        self.latency = Histogram("fvt_request_seconds", "Time from the request's start to its answer",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("fvt_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("fvt_inference_seconds", "Time of one forward pass", buckets=LATENCY_BUCKETS,
                                   registry=r)
        self.images = Counter("fvt_images", "Images predicted", registry=r)
        self.queue_depth = Gauge("fvt_queue_depth", "Images waiting for a forward pass", registry=r,
                                 multiprocess_mode="livesum")

    def observe_request(self, path: str, status: int, started: float) -> None:
        route = route_label(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(time.perf_counter() - started)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)

    def render(self) -> Tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
