"""Prometheus metrics: request counts and latencies per route template (``/v1/collections/{name}/search``,
never the raw path, so cardinality stays bounded) and, at scrape time, index sizes per collection.

Each app gets its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import Engine

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The registry of one app and its request metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "attend_http_requests_total", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "attend_http_request_duration_seconds", "HTTP request latency by method and route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def watch_engine(self, engine_of: Callable[[], Engine | None]) -> None:
        """Report index sizes of the engine ``engine_of()`` returns at each scrape."""
        self.registry.register(IndexSizeCollector(engine_of))


class IndexSizeCollector(Collector):
    """Gauges of documents, chunks and index entries per collection, read at scrape time."""

    def __init__(self, engine_of: Callable[[], Engine | None]) -> None:
        self.engine_of = engine_of

    def describe(self) -> list[Metric]:
        return []  # collected lazily; nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        docs = GaugeMetricFamily("attend_collection_documents", "Documents in the store.", labels=["collection"])
        chunks = GaugeMetricFamily("attend_collection_chunks", "Chunks in the store.", labels=["collection"])
        bm25 = GaugeMetricFamily("attend_index_bm25_chunks", "Chunks in the BM25 index.", labels=["collection"])
        dense = GaugeMetricFamily("attend_index_dense_vectors", "Vectors in the FAISS index.", labels=["collection"])
        engine = self.engine_of()
        if engine is not None:
            try:
                for info in engine.list_collections():
                    st = engine.collection_stats(info.name)
                    docs.add_metric([info.name], st["documents"])
                    chunks.add_metric([info.name], st["chunks"])
                    bm25.add_metric([info.name], st["bm25_chunks"])
                    dense.add_metric([info.name], st["dense_chunks"])
            except Exception:  # a collection deleted mid-scrape; report what we have
                logger.debug("index size scrape incomplete", exc_info=True)
        yield from (docs, chunks, bm25, dense)


class MetricsMiddleware:
    """ASGI middleware that counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - t0)
