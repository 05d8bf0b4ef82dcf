"""The suggest counters: queued per request, summed and written by a flusher thread."""

from __future__ import annotations

import threading
import time

from serving._metrics import FLUSH_INTERVAL_S, ServingMetrics


def _requests(metrics: ServingMetrics, arm: str, language: str) -> float | None:
    return metrics.registry.get_sample_value("sticker_suggest_requests_total",
                                             {"arm": arm, "language": language})


def _served(metrics: ServingMetrics, arm: str) -> float | None:
    return metrics.registry.get_sample_value("sticker_suggestions_served_total", {"arm": arm})


def test_flush_sums_the_queue_per_label_set() -> None:
    metrics = ServingMetrics()
    metrics._flusher = threading.current_thread()  # no background flusher: flush by hand
    for arm, language, stickers in [("control", "en", 3), ("control", "ja", 5),
                                    ("control", "en", 0), ("treatment", "en", 8)]:
        metrics.count_suggestion(arm, language, stickers)
    assert _requests(metrics, "control", "en") is None  # queued, not written
    metrics.flush()
    assert _requests(metrics, "control", "en") == 2
    assert _requests(metrics, "control", "ja") == 1
    assert _requests(metrics, "treatment", "en") == 1
    assert _served(metrics, "control") == 8
    assert _served(metrics, "treatment") == 8
    metrics.flush()  # an empty queue writes nothing
    assert _served(metrics, "control") == 8


def test_the_flusher_writes_without_an_exposition() -> None:
    metrics = ServingMetrics()
    metrics.count_suggestion("control", "en", 4)
    deadline = time.monotonic() + 40 * FLUSH_INTERVAL_S
    while _requests(metrics, "control", "en") is None and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL_S / 5)
    assert _requests(metrics, "control", "en") == 1
    assert _served(metrics, "control") == 4
    assert metrics._flusher is not None and metrics._flusher.name == "metrics-flush"


def test_exposition_includes_what_is_queued() -> None:
    metrics = ServingMetrics()
    metrics.count_suggestion("control", "en", 2)
    text = metrics.exposition().decode()
    assert 'sticker_suggest_requests_total{arm="control",language="en"} 1.0' in text
    assert 'sticker_suggestions_served_total{arm="control"} 2.0' in text


def test_concurrent_counts_are_neither_lost_nor_doubled() -> None:
    """Request threads append while the flusher and explicit flushes drain."""
    metrics = ServingMetrics()
    threads, per_thread = 8, 2000

    def count(i: int) -> None:
        for j in range(per_thread):
            metrics.count_suggestion("control", "en" if j % 2 else "ja", i % 3)
            if j % 500 == 0:
                metrics.flush()

    workers = [threading.Thread(target=count, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    metrics.flush()
    assert _requests(metrics, "control", "en") == threads * per_thread / 2
    assert _requests(metrics, "control", "ja") == threads * per_thread / 2
    assert _served(metrics, "control") == sum(i % 3 for i in range(threads)) * per_thread
