"""Prometheus metrics of the server.

Each app owns its :class:`prometheus_client.CollectorRegistry` (several apps in one test
process do not collide). Under gunicorn, ``stickers serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` so every worker writes its samples to shared files and
``/metrics`` aggregates all workers (prometheus_client's multiprocess mode).

In that mode every counter increment is a locked write into a memory-mapped file. The
suggest path's two counters are therefore not written per request: each request appends
to an in-memory queue, and the queue is summed per label set and written by a background
thread every :data:`FLUSH_INTERVAL_S` (a few writes per interval, whatever the request
rate), before each exposition, and at the process's exit. A process that is killed loses
at most the last interval's suggest counts; a scrape of one worker sees the others'
counts up to one interval late. The request-latency histogram is observed per request (an
observation cannot be summed without prometheus_client's internals).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["FLUSH_INTERVAL_S", "METHODS", "MULTIPROC_ENV", "ServingMetrics"]

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.25
"""Seconds between two writes of the queued suggest counts (see the module doc)."""

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
        # (arm, language, stickers) of each counted suggest request, not yet written;
        # deque appends and poplefts are atomic, so request threads and the flusher share
        # it without a lock
        self._pending: deque[tuple[str, str, int]] = deque()
        self._flusher: threading.Thread | None = None
        self._flusher_lock = threading.Lock()
        _LIVE.add(self)

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

        Queued: written by :meth:`flush` (every :data:`FLUSH_INTERVAL_S` in a background
        thread started by the first call, before each :meth:`exposition`, at exit).

        Parameters
        ----------
        arm : str
            The A/B arm.
        language : str
            A served keyboard language (validated before it becomes a label value).
        stickers : int
            Stickers in the row.
        """
        self._pending.append((arm, language, stickers))
        if self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        """Write the queued suggest counts: one increment per counter and label set."""
        pending = self._pending
        if not pending:
            return
        sums: dict[tuple[str, str], list[int]] = {}
        while True:
            try:
                arm, language, stickers = pending.popleft()
            except IndexError:
                break
            total = sums.get((arm, language))
            if total is None:
                sums[(arm, language)] = [1, stickers]
            else:
                total[0] += 1
                total[1] += stickers
        served: dict[str, int] = {}
        for (arm, language), (requests, stickers) in sums.items():
            self.suggest_requests.labels(arm, language).inc(requests)
            served[arm] = served.get(arm, 0) + stickers
        for arm, stickers in served.items():
            self.suggestions_served.labels(arm).inc(stickers)

    def _start_flusher(self) -> None:
        with self._flusher_lock:
            if self._flusher is not None:
                return
            thread = threading.Thread(target=_flush_every, args=(weakref.ref(self),),
                                      name="metrics-flush", daemon=True)
            thread.start()
            self._flusher = thread

    def _after_fork(self) -> None:
        """In a forked child: the queue is the parent's (it writes it) and the flusher
        thread did not follow the fork."""
        self._pending.clear()
        self._flusher = None
        self._flusher_lock = threading.Lock()

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
        self.flush()
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and os.path.isdir(directory):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


_LIVE: weakref.WeakSet[ServingMetrics] = weakref.WeakSet()


def _flush_every(ref: weakref.ref[ServingMetrics]) -> None:
    """The flusher thread: write ``ref``'s queue every interval until it is collected."""
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        metrics = ref()
        if metrics is None:
            return
        try:
            metrics.flush()
        except Exception:  # keep counting; the next interval retries what is queued next
            log.exception("failed to write the suggest counters")
        del metrics


def _flush_all() -> None:
    for metrics in list(_LIVE):
        try:
            metrics.flush()
        except Exception:
            log.exception("failed to write the suggest counters at exit")


def _after_fork_in_child() -> None:
    for metrics in list(_LIVE):
        metrics._after_fork()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
