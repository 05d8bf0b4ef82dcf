"""Per-process resources of the app (Flask tutorial's ``db.py`` shape).

One :class:`ServingState` per app (one gunicorn worker): its config, model registry,
metrics and bundle cache; the SQLite update store is opened per request and closed on
teardown. Routes import :func:`state` and :func:`get_store` from here, never from the
factory, so the factory can import the routes without an import circle.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, g

from federated import FederatedConfig
from serving._config import ServingConfig
from serving._errors import ApiError
from serving._metrics import ServingMetrics
from serving._registry import ModelRegistry, ModelSet
from serving._rounds import ensure_open_round, federated_config_for
from serving._store import RoundSpec, UpdateStore

__all__ = ["BundleCache", "ServingState", "freeze_heap", "get_store", "init_app", "state"]

EXTENSION = "sticker_serving"


def freeze_heap() -> None:
    """Collect once, then move every object the process holds out of the collector's sight.

    Each gunicorn worker calls this once its app (with its models) is built, and the app
    again after every model swap when the heap is frozen (a replaced set's cycles are
    collected first). A worker's heap is mostly its models (~300k objects on the tiny
    world) and lives as long as the worker: unfrozen, every full collection traverses all
    of it (0.6 s on the tiny world, one every few thousand requests — a quarter of a
    loaded worker's CPU, and its p99). Frozen objects are still freed by reference
    counting.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class BundleCache:
    """A small thread-safe LRU of built device bundles: key → (etag, body)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[str, bytes] | None:
        """The cached entry (marked most recent), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[Any, ...], value: tuple[str, bytes]) -> None:
        """Insert, evicting the least recently used entry beyond ``size``."""
        if self.size == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass
class ServingState:
    """What the routes share within one app (one gunicorn worker)."""

    config: ServingConfig
    registry: ModelRegistry
    metrics: ServingMetrics
    bundles: BundleCache
    federated: FederatedConfig | None = None
    demo_users: tuple[str, list[dict[str, Any]]] | None = None
    """(stage-1 version, the demo page's simulated users)."""
    started_at: float = field(default_factory=time.time)

    def models(self) -> ModelSet:
        """The served model set, or 503 when nothing verified is loaded yet."""
        current = self.registry.current
        if current is None:
            detail = self.registry.last_error or "models are not loaded yet"
            raise ApiError(503, "not_ready", f"no verified models are loaded: {detail}")
        return current

    def federated_config(self, reranker_version: str) -> FederatedConfig:
        """The platform config of rounds (the configured file, else the model's own)."""
        if self.config.federated_config is not None:
            if self.federated is None:
                self.federated = FederatedConfig.load(self.config.federated_config)
            return self.federated
        return federated_config_for(self.config.var, reranker_version)

    def ensure_open_round(self, store: UpdateStore) -> RoundSpec | None:
        """Open the next round for the served default reranker version if none is open."""
        if not self.config.auto_open_round:
            return None
        models = self.registry.current
        version = None if models is None else models.reranker_version(
            self.config.reranker_version)
        return ensure_open_round(store, self.config.var, version,
                                 config=self.federated_config,
                                 deadline_s=self.config.round_deadline_s,
                                 budget_policy=self.config.budget_policy)


def state() -> ServingState:
    """The current app's :class:`ServingState`."""
    return current_app.extensions[EXTENSION]


def get_store() -> UpdateStore:
    """The request's store connection (opened on first use, closed on teardown)."""
    if "store" not in g:
        g.store = UpdateStore(state().config.resolved_store_path)
    return g.store


def _close_store(exc: BaseException | None = None) -> None:
    store = g.pop("store", None)
    if store is not None:
        store.close()


def init_app(app: Flask, st: ServingState) -> None:
    """Attach ``st`` to ``app`` and close the request's store on teardown."""
    app.extensions[EXTENSION] = st
    app.teardown_appcontext(_close_store)
