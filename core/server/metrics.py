"""The service's Prometheus metrics, and the instrument that feeds them engine stages and spans."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COSINE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(-4, 21))
# "signals": both lists in one call to a store that keeps the keyword signal (Qdrant), instead of dense + keyword.
QUERY_STAGES = ("encode", "dense", "keyword", "signals", "fuse")


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self, prometheus: Any) -> None:
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.query_seconds = prometheus.Histogram(
            "vecguard_query_duration_seconds",
            "Search latency by stage (encode, dense, keyword, fuse, total) and mode",
            ["stage", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_encode_seconds = prometheus.Histogram(
            "vecguard_ingest_encode_duration_seconds",
            "Encoder time per ingested batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.top1_cosine = prometheus.Histogram(
            "vecguard_top1_cosine",
            "Best dense cosine of each query (its shift is the earliest sign of drift)",
            ["mode"],
            buckets=COSINE_BUCKETS,
            registry=r,
        )
        self.queries = prometheus.Counter("vecguard_queries", "Searches answered", ["mode"], registry=r)
        self.empty_results = prometheus.Counter(
            "vecguard_empty_results",
            "Searches that returned nothing (min_score left no hit, or no match)",
            ["mode"],
            registry=r,
        )
        self.guard_refusals = prometheus.Counter(
            "vecguard_guard_refusals", "Collections the version guard refused to serve", registry=r
        )
        self.errors = prometheus.Counter("vecguard_errors", "Requests that failed, by error type", ["type"], registry=r)
        self.ready = prometheus.Gauge("vecguard_ready", "1 when /readyz answers 200", registry=r)
        self.documents = prometheus.Gauge("vecguard_documents", "Documents in the collection", registry=r)
        self.chunks = prometheus.Gauge("vecguard_chunks", "Chunks (vectors) in the collection", registry=r)
        self.index_bytes = prometheus.Gauge(
            "vecguard_index_bytes", "Bytes the collection's folder holds on disk", registry=r
        )
        self.recall = prometheus.Gauge(
            "vecguard_recall_at_k",
            "Last measured recall@10 of the ANN index against exact search: on the queries it served, else by "
            "vecguard eval --exact",
            registry=r,
        )
        self.recall_queries = prometheus.Gauge(
            "vecguard_recall_queries", "How many queries vecguard_recall_at_k was measured on", registry=r
        )


class StageInstrument:
    """Turns engine stages into histogram observations and child spans of the request's span."""

    def __init__(self, metrics: Metrics, tracer: Any) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._local = threading.local()

    @contextmanager
    def query(self, mode: str) -> Iterator[None]:
        self._local.mode = mode
        started = time.perf_counter()
        try:
            yield
        finally:
            self._metrics.query_seconds.labels("total", mode).observe(time.perf_counter() - started)
            self._local.mode = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(f"vecguard.{name}"):
            yield
        elapsed = time.perf_counter() - started
        if name == "ingest_encode":
            self._metrics.ingest_encode_seconds.observe(elapsed)
        else:
            self._metrics.query_seconds.labels(name, getattr(self._local, "mode", None) or "unknown").observe(elapsed)

    def observe(self, name: str, value: float) -> None:
        if name == "top1_cosine":
            self._metrics.top1_cosine.labels(getattr(self._local, "mode", None) or "unknown").observe(value)
