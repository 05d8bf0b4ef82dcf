"""The Flask application factory (Flask tutorial style): it only assembles.

``create_app(config=None)`` builds an app from a :class:`ServingConfig` (or a mapping of
its fields, or the file + environment when None): the per-process resources
(:mod:`serving._state`), the error handlers, the blueprints and the request metrics.
Under gunicorn every worker calls the factory after the fork (no ``--preload``), so
each worker has its own registry and polling thread.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from flask import Flask, Response, g, request

from data import StickerSuggestError
from federated import FederatedError
from serving._api import api
from serving._board import BOARD_ENV, VersionBoard
from serving._config import ServingConfig
from serving._demo import demo
from serving._errors import FiniteJSONProvider, register_error_handlers
from serving._ledger import BudgetExhaustedError
from serving._metrics import ServingMetrics
from serving._ops import ops
from serving._registry import ModelRegistry, ModelSet
from serving._secure import EXTENSION as SECURE_EXTENSION
from serving._secure import register_secure_rounds
from serving._state import BundleCache, ServingState, freeze_heap, init_app
from serving._store import UpdateStore

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


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
    app.json = FiniteJSONProvider(app)
    app.json.sort_keys = False
    metrics = ServingMetrics()
    if registry is None:
        requested = [config.reranker_version, *(config.arm_version(a)
                                                 for a in config.experiment.arms)]
        board = os.environ.get(BOARD_ENV)  # set by stickers serve for its workers
        registry = ModelRegistry(config.var, config.stage1_version, requested, config.dataset,
                                 board=VersionBoard(Path(board)) if board else None)

    def on_swap(models: ModelSet) -> None:
        metrics.set_versions(models.versions())
        metrics.reloads.labels("swap").inc()
        if gc.get_freeze_count():  # a gunicorn worker froze its heap: the new set joins it
            freeze_heap()

    registry.on_swap = on_swap
    st = ServingState(config=config, registry=registry, metrics=metrics,
                      bundles=BundleCache(config.bundle_cache_size))
    init_app(app, st)
    register_error_handlers(app)
    app.register_blueprint(api)  # registration order is the document's path order
    app.register_blueprint(ops)
    if config.demo:
        app.register_blueprint(demo)
    register_secure_rounds(app, config)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()
        registry.sync()  # every worker serves what the board says (one stat)

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
        if SECURE_EXTENSION in app.extensions:
            # devices train through the secure rounds; a plain round (every upload seen,
            # charged device_local) opens only if a device asks /v1/federated/rounds/current
            log.info("plain federated round not opened at start: secure rounds are "
                     "configured")
        else:
            _open_plain_round_at_start(st, config)
    if config.reload_interval_s > 0 and not app.testing:
        registry.start_polling(config.reload_interval_s)
    return app


def _open_plain_round_at_start(st: ServingState, config: ServingConfig) -> None:
    """Open the served version's next plain round if none is open; a refusal by the
    privacy budget is logged as such (a warning, not an error: nothing is broken)."""
    with UpdateStore(config.resolved_store_path) as store:
        try:
            st.ensure_open_round(store)
        except BudgetExhaustedError as exc:
            log.warning("no plain federated round opened: the lineage's privacy budget "
                        "allows none", lineage=exc.lineage, epsilon=exc.epsilon,
                        target=exc.target, detail=str(exc))
        except (FederatedError, StickerSuggestError) as exc:  # the platform's root first
            log.error("could not open a federated round", error=str(exc))
