"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from serving import _openapi as doc
from serving._errors import ApiError, public_detail
from serving._state import get_store, state

__all__ = ["ops"]

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers (also the benchmark's trivial JSON endpoint)."""
    return jsonify({"status": "ok"})


@ops.get("/readyz")
def readyz() -> Response:
    """Readiness: verified stage-1 and reranker versions are loaded (200).

    ``status`` is ``degraded`` (still 200: it serves) when ``LATEST`` of a kind is missing
    or corrupt and an older promoted version is served instead; ``degraded`` says which.
    """
    st = state()
    models = st.registry.current
    if models is None:
        detail = st.registry.last_error or "models are not loaded yet"
        raise ApiError(503, "not_ready", f"no verified models are loaded: {detail}")
    degraded = list(st.registry.degraded)
    return jsonify({"status": "degraded" if degraded else "ready", "degraded": degraded,
                    "versions": models.versions(),
                    "pending": (None if st.registry.pending is None
                                else st.registry.pending.versions()),
                    "loaded_at": models.loaded_at,
                    "last_check": st.registry.last_check,
                    "last_reload_error": (None if st.registry.last_error is None
                                          else public_detail(st.registry.last_error)),
                    "uptime_s": round(time.time() - st.started_at, 3)})


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition (all gunicorn workers under ``stickers serve``)."""
    return Response(state().metrics.exposition(),
                    mimetype="text/plain; version=0.0.4; charset=utf-8")


@ops.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this server."""
    st = state()
    models = st.registry.current
    facts = None
    if models is not None:
        suggester = models.suggester(st.config.reranker_version)
        encoder = models.stage1.encoder
        round_ = get_store().current_round()
        facts = doc.ServedFacts(
            languages=sorted(suggester.languages), n_clusters=int(models.stage1.n_clusters),
            n_factors=int(suggester.n_factors),
            features={f: list(encoder.categories_[f]) for f in encoder.features},
            round=None if round_ is None else round_.to_dict(),
            history=all(getattr(s, "is_row", False) for s in models.suggesters.values()))
    return jsonify(doc.openapi_document(st.config, facts,
                                        registered=list(current_app.blueprints)))


@doc.documents(ops)
def _openapi(context: doc.DocumentContext) -> doc.Fragment:
    """The paths and schemas of the operations routes above."""
    paths = {
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz",
                             "responses": {"200": doc.json_response(doc.ref("Health"),
                                                                    "Alive")}}},
        "/readyz": {"get": {"summary": "Readiness (verified artifacts loaded)",
                            "operationId": "readyz",
                            "responses": {"200": doc.json_response(doc.ref("Ready"), "Ready"),
                                          "503": context.json_errors["503"]}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                             "responses": {"200": {"description": "Text exposition",
                                                   "content": {"text/plain": {
                                                       "schema": doc.STR}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": doc.json_response({"type": "object"},
                                                                         "OpenAPI 3.1")}}},
    }
    schemas = {
        "Health": doc.obj({"status": doc.STR}),
        "Ready": doc.obj({"status": {"type": "string", "enum": ["ready", "degraded"]},
                          "degraded": {"type": "array", "items": doc.STR},
                          "versions": {"type": "object"}, "loaded_at": doc.NUM,
                          "pending": {"type": ["object", "null"], "description":
                                      "Versions loaded and waiting until every worker has "
                                      "them"},
                          "last_check": doc.NUM,
                          "last_reload_error": {"type": ["string", "null"]},
                          "uptime_s": doc.NUM}),
    }
    return doc.Fragment(paths, schemas)
