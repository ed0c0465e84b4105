"""The server's Prometheus metrics, on a registry per app (``lcha_`` names, bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """Request, degradation, admission and drain metrics of one replica."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("lcha_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=registry)
        self.seconds = Histogram("lcha_http_request_seconds", "HTTP request latency",
                                 ["route"], buckets=_BUCKETS, registry=registry)
        self.degraded = Counter("lcha_degraded_answers", "Degraded answers by component",
                                ["component"], registry=registry)
        self.inflight = Gauge("lcha_inflight_requests", "API requests in flight",
                              registry=registry)
        self.rejected = Counter("lcha_admission_rejected", "Requests shed by admission control",
                                registry=registry)
        self.queued = Counter("lcha_admission_queued",
                              "Requests that waited for a slot (predicted to start in time)",
                              registry=registry)
        self.waiting = Gauge("lcha_admission_waiting", "Requests waiting for a slot now",
                             registry=registry)
        self.admission_limit = Gauge("lcha_admission_limit",
                                     "In-flight limit now (adaptive: follows the loop's lag)",
                                     registry=registry)
        self.loop_lag = Histogram("lcha_event_loop_lag_seconds",
                                  "How late the admission sampler's timer fired",
                                  buckets=_LAG_BUCKETS, registry=registry)
        self.idempotency = Counter(
            "lcha_idempotency_requests",
            "Requests with an Idempotency-Key, by where the key was kept (shared: the "
            "database, every replica sees it; local: this replica's memory) and outcome",
            ["store", "outcome"], registry=registry)
        self.draining = Gauge("lcha_draining", "1 while the replica drains", registry=registry)
        self.gc_frozen = Gauge("lcha_gc_frozen_objects",
                               "Start-up objects moved out of the cyclic GC's reach (gc.freeze)",
                               registry=registry)
