"""The keyboard demo: a self-contained page at ``/`` and the simulated users it offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from flask import Blueprint, Response, jsonify

from data import StickerSuggestError, open_dataset
from serving._errors import ApiError
from serving._openapi import INT, STR, DocumentContext, Fragment, documents, json_response, obj, ref
from serving._registry import ModelSet
from serving._state import ServingState, state

__all__ = ["demo"]

demo = Blueprint("demo", __name__)

_PAGE = Path(__file__).with_name("demo.html")


@demo.get("/")
def page() -> Response:
    """The demo page (HTML + inline JS, no build step)."""
    return Response(_PAGE.read_bytes(), mimetype="text/html")


def _dataset_path(st: ServingState, models: ModelSet) -> Path:
    if st.config.dataset is not None:
        path = Path(st.config.dataset)
        return path if path.is_dir() else st.config.var / "data" / st.config.dataset
    recorded = models.stage1.manifest.extra.get("dataset", {}).get("path")
    if recorded is None:
        raise ApiError(503, "no_dataset", "the stage-1 artifact does not name its dataset; "
                       "set the serving config's dataset")
    return Path(recorded)


def _simulated_users(st: ServingState, models: ModelSet, languages: list[str]
                     ) -> list[dict[str, Any]]:
    users = open_dataset(_dataset_path(st, models), verify=False).table("users")
    clusters = models.stage1.user_clusters.select("user_id", "cluster_id")
    picked = (users.select("user_id", "language")
              .filter(pl.col("language").is_in(languages))
              .join(clusters, on="user_id", how="inner")
              .sort("language", "user_id")
              .group_by("language", maintain_order=True)
              .head(st.config.demo_users_per_language))
    return [{"user_id": int(r["user_id"]), "language": r["language"],
             "cluster_id": int(r["cluster_id"]),
             "label": f"user {r['user_id']} ({r['language']}, cluster {r['cluster_id']})"}
            for r in picked.iter_rows(named=True)]


@demo.get("/demo/users")
def users() -> Response:
    """Languages and a few simulated users per language (their cluster and language)."""
    st = state()
    models = st.models()
    languages = sorted(models.suggester(st.config.reranker_version).languages)
    key = models.stage1_version
    if st.demo_users is None or st.demo_users[0] != key:
        try:
            st.demo_users = (key, _simulated_users(st, models, languages))
        except StickerSuggestError as exc:
            raise ApiError(503, "no_dataset", f"cannot read the demo users: {exc}") from exc
    return jsonify({"languages": languages, "users": st.demo_users[1]})


@documents(demo)
def _openapi(context: DocumentContext) -> Fragment:
    """The paths and schemas of the demo routes above."""
    paths = {
        "/": {"get": {"summary": "Keyboard demo page", "operationId": "demoPage",
                      "responses": {"200": {"description": "HTML", "content": {
                          "text/html": {"schema": STR}}}}}},
        "/demo/users": {"get": {
            "summary": "Simulated users offered by the demo page", "operationId": "demoUsers",
            "responses": {"200": json_response(ref("DemoUsers"), "Users"),
                          "503": context.json_errors["503"]}}},
    }
    schemas = {
        "DemoUser": obj({"user_id": INT, "language": STR, "cluster_id": INT, "label": STR}),
        "DemoUsers": obj({"languages": {"type": "array", "items": STR},
                          "users": {"type": "array", "items": ref("DemoUser")}}),
    }
    return Fragment(paths, schemas)
