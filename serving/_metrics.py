"""Prometheus metrics of the server.

Each app owns its :class:`prometheus_client.CollectorRegistry` (several apps in one test
process do not collide). Under gunicorn, ``stickers serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` so every worker writes its samples to shared files and
``/metrics`` aggregates all workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["METHODS", "MULTIPROC_ENV", "ServingMetrics"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods that are label values as they are; any other method is counted as ``other``
(a client chooses the method, and a label copied from a client grows without bound)."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Sub-millisecond to a second: suggestions should sit in the first few buckets.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The server's metric families, registered in a fresh registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "sticker_http_request_duration_seconds", "Request latency per endpoint",
            ["endpoint", "method", "status"], buckets=_LATENCY_BUCKETS,
            registry=self.registry)
        self.suggestions_served = Counter(
            "sticker_suggestions_served", "Stickers returned by /v1/suggest", ["arm"],
            registry=self.registry)
        self.suggest_requests = Counter(
            "sticker_suggest_requests", "Successful suggest requests", ["arm", "language"],
            registry=self.registry)
        self.updates = Counter(
            "sticker_federated_updates", "Federated update uploads by outcome and reason",
            ["outcome", "reason"], registry=self.registry)
        self.artifact_info = Gauge(
            "sticker_artifact_info", "Artifact versions loaded (1 = served now)",
            ["kind", "version"], registry=self.registry, multiprocess_mode="liveall")
        self.reloads = Counter(
            "sticker_registry_reloads", "Model registry swaps and failed reloads",
            ["result"], registry=self.registry)
        self._served: dict[str, str] = {}
        # Labelled children by label values: ``labels()`` costs a lock and a tuple
        # normalisation per call; the label sets are small (routes, arms, languages).
        self._latency: dict[tuple[str, str, int], Any] = {}
        self._suggest: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One request's latency in ``sticker_http_request_duration_seconds``.

        Parameters
        ----------
        endpoint : str
            The matched route rule (``unmatched`` for 404s), never the raw path.
        method : str
            HTTP method (outside :data:`METHODS`: counted as ``other``).
        status : int
            Response status.
        seconds : float
            Time from the start of the request to its response.
        """
        if method not in METHODS:
            method = "other"
        key = (endpoint, method, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.request_latency.labels(endpoint, method,
                                                                     str(status))
        child.observe(seconds)

    def count_suggestion(self, arm: str, language: str, stickers: int) -> None:
        """A successful suggest request of ``arm`` in ``language`` that returned ``stickers``.

        Parameters
        ----------
        arm : str
            The A/B arm.
        language : str
            A served keyboard language (validated before it becomes a label value).
        stickers : int
            Stickers in the row.
        """
        key = (arm, language)
        children = self._suggest.get(key)
        if children is None:
            children = self._suggest[key] = (self.suggestions_served.labels(arm),
                                             self.suggest_requests.labels(arm, language))
        children[0].inc(stickers)
        children[1].inc()

    def set_versions(self, versions: dict[str, str]) -> None:
        """Mark ``{kind: version}`` as served (1) and what they replace as retired (0)."""
        for kind, version in versions.items():
            old = self._served.get(kind)
            if old is not None and old != version:
                self.artifact_info.labels(kind, old).set(0)
            self.artifact_info.labels(kind, version).set(1)
            self._served[kind] = version

    def exposition(self) -> bytes:
        """The text exposition: all gunicorn workers' samples in multiprocess mode."""
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and os.path.isdir(directory):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)
