"""The Flask application factory (Flask tutorial style) and the per-app state.

``create_app(config=None)`` builds an app from a :class:`ServingConfig` (or a mapping of
its fields, or the file + environment when None). Each app owns its model registry,
metrics and bundle cache; the SQLite store is opened per request and closed on teardown.
Under gunicorn every worker calls the factory after the fork (no ``--preload``), so
each worker has its own registry and polling thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from flask import Flask, Response, current_app, g, request

from data import StickerSuggestError
from federated import FederatedConfig
from serving._config import ServingConfig
from serving._errors import ApiError, register_error_handlers
from serving._metrics import ServingMetrics
from serving._registry import INITIAL, ModelRegistry, ModelSet
from serving._rounds import federated_config_for, open_next_round
from serving._store import StoreRejectedError, UpdateStore

__all__ = ["BundleCache", "ServingState", "create_app", "get_store", "state"]

log = structlog.get_logger(__name__)

EXTENSION = "sticker_serving"


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


def ensure_open_round(st: ServingState, store: UpdateStore) -> None:
    """Open the next round for the default reranker version if none is open."""
    if not st.config.auto_open_round or store.current_round() is not None:
        return
    models = st.registry.current
    if models is None:
        return
    version = models.reranker_version(st.config.reranker_version)
    if version == INITIAL:
        return  # rounds train a published model (its global weights)
    with contextlib.suppress(StoreRejectedError):  # another worker opened it first
        open_next_round(store, st.config.var, version,
                        config=st.federated_config(version),
                        deadline_s=st.config.round_deadline_s)


def create_app(config: ServingConfig | Mapping[str, Any] | None = None, *,
               registry: ModelRegistry | None = None) -> Flask:
    """Build the app.

    Parameters
    ----------
    config : ServingConfig or mapping, optional
        None: :meth:`ServingConfig.load` (``STICKERS_SERVE_CONFIG`` file + environment).
    registry : ModelRegistry, optional
        Injected for tests; default: a registry over ``config.var``.
    """
    if config is None:
        config = ServingConfig.load()
    elif not isinstance(config, ServingConfig):
        config = ServingConfig.load(environ={}, **dict(config))
    app = Flask(__name__)
    app.config.update(DEBUG=config.debug, JSON_SORT_KEYS=False,
                      MAX_CONTENT_LENGTH=max(config.max_request_bytes, config.max_update_bytes))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = ServingMetrics()
    if registry is None:
        requested = [config.reranker_version, *(a.reranker_version
                                                 for a in config.experiment.arms)]
        registry = ModelRegistry(config.var, config.stage1_version, requested, config.dataset)

    def on_swap(models: ModelSet) -> None:
        metrics.set_versions(models.versions())
        metrics.reloads.labels("swap").inc()

    registry.on_swap = on_swap
    st = ServingState(config=config, registry=registry, metrics=metrics,
                      bundles=BundleCache(config.bundle_cache_size))
    app.extensions[EXTENSION] = st
    register_error_handlers(app)

    from serving._api import api
    from serving._demo import demo
    from serving._ops import ops

    app.register_blueprint(ops)
    app.register_blueprint(api)
    if config.demo:
        app.register_blueprint(demo)
    app.teardown_appcontext(_close_store)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            rule = request.url_rule
            metrics.observe_request(rule.rule if rule is not None else "unmatched",
                                    request.method, response.status_code,
                                    time.perf_counter() - started)
        return response

    try:
        registry.refresh()
    except StickerSuggestError as exc:
        # Start anyway: /healthz answers, /readyz says why, polling retries.
        metrics.reloads.labels("failed").inc()
        log.error("models not loaded at start", error=str(exc))
    if registry.current is not None:
        metrics.set_versions(registry.current.versions())
        with UpdateStore(config.resolved_store_path) as store:
            try:
                ensure_open_round(st, store)
            except StickerSuggestError as exc:
                log.error("could not open a federated round", error=str(exc))
    if config.reload_interval_s > 0 and not app.testing:
        registry.start_polling(config.reload_interval_s)
    return app
