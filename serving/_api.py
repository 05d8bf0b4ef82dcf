"""The ``/v1`` blueprint: suggest, bundle, assign, reranker model, federated updates.

Routes validate at the edge and delegate: ranking to ``reranker.Suggester``, cold start to
the stage-1 artifact, upload validation to ``federated.parse_upload``, persistence to the
store. The typed text is passed to the suggester and dropped; it is never logged, stored
or echoed in an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from data import StickerSuggestError
from federated import UPLOAD_FIELDS, FederatedError, UploadError, parse_upload
from serving._arms import INSTALL_ID_HEADER, INSTALL_ID_PATTERN, assign_arm
from serving._bundle import bundle_etag, pack_bundle
from serving._config import ArmConfig, ServingConfig
from serving._encode import NonFiniteScoreError
from serving._errors import ApiError, federated_problem
from serving._ledger import BudgetExhaustedError
from serving._openapi import (
    BOOL,
    INT,
    NUM,
    STR,
    DocumentContext,
    Fragment,
    ServedFacts,
    documents,
    json_response,
    obj,
    problem,
    ref,
)
from serving._privacy import privacy_statement
from serving._registry import INITIAL, ModelSet
from serving._requests import (
    EMBEDDING_BOUND,
    MAX_HISTORY_PACKAGES,
    MAX_HISTORY_STICKERS,
    MAX_INTEGER_DIGITS,
    AssignRequest,
    SuggestRequest,
    integral,
    json_body,
    parse_body,
    parse_suggest,
)
from serving._state import ServingState, get_store, state
from serving._store import StoreRejectedError

if TYPE_CHECKING:
    pass

__all__ = ["api"]

api = Blueprint("api", __name__, url_prefix="/v1")

_INSTALL_ID_ENVIRON = "HTTP_" + INSTALL_ID_HEADER.upper().replace("-", "_")  # WSGI's key


def _install_id(required: bool) -> str | None:
    value = request.environ.get(_INSTALL_ID_ENVIRON)
    if value is None:
        if required:
            raise ApiError(400, "missing_install_id",
                           f"send the {INSTALL_ID_HEADER} header (8-128 characters of "
                           "A-Z a-z 0-9 _ -); it picks your A/B arm and is not stored")
        return None
    if not INSTALL_ID_PATTERN.match(value):
        raise ApiError(400, "invalid_install_id",
                       f"{INSTALL_ID_HEADER} should be 8-128 characters of A-Z a-z 0-9 _ -")
    return value


def _arm(st: ServingState, required: bool = False) -> ArmConfig:
    return assign_arm(st.config.experiment, _install_id(required))


def _feature_value(value: Any) -> str:
    """A feature value as the stage-1 encoder spells its categories."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_features(models: ModelSet, features: dict[str, Any]) -> None:
    encoder = models.stage1.encoder
    known = list(encoder.features)
    unknown = sorted(set(features) - set(known))
    if unknown:
        raise ApiError(422, "unknown_feature",
                       f"unknown user feature(s) {unknown}; known features: {known}")
    for name, value in features.items():
        categories = encoder.categories_[name]
        if _feature_value(value) not in categories:
            shown = ", ".join(map(repr, categories[:20])) + (
                ", ..." if len(categories) > 20 else "")
            raise ApiError(422, "unknown_feature_value",
                           f"features.{name} has a value stage 1 never saw; known values: "
                           f"{shown}")


def _versions(st: ServingState, models: ModelSet, arm: ArmConfig) -> dict[str, str]:
    return {"stage1": models.stage1_version,
            "reranker": models.reranker_version(st.config.arm_version(arm))}


@api.post("/suggest")
def suggest() -> Response:
    """Ranked stickers for the text typed so far."""
    st = state()
    config = st.config
    body = parse_suggest(config.max_request_bytes)
    if body.limit > config.max_limit:
        raise ApiError(422, "invalid_request",
                       f"limit={body.limit} should be <= {config.max_limit}")
    if len(body.text) > config.max_text_chars:
        raise ApiError(422, "invalid_request", f"text should have at most "
                       f"{config.max_text_chars} characters, got {len(body.text)}")
    models = st.models()
    arm = _arm(st)
    suggester, encoder = models.route(config.arm_version(arm))
    # the reranker validates language and cluster (UnknownLanguageError/UnknownClusterError,
    # translated in serving._errors); the language first, before stage 1 reads the features
    suggester.context.check_language(body.language)
    if body.cluster_id is not None:
        cluster_id = body.cluster_id
        suggester.context.check_cluster(cluster_id)
    else:
        assert body.features is not None
        _check_features(models, body.features)
        cluster_id = int(models.stage1.assign(body.features))
    embedding = None
    if body.user_embedding is not None:
        if len(body.user_embedding) != suggester.n_factors:
            raise ApiError(422, "invalid_request",
                           f"user_embedding has {len(body.user_embedding)} numbers, expected "
                           f"{suggester.n_factors}")
        embedding = np.asarray(body.user_embedding, dtype=np.float32)
    options: dict[str, Any] = {}
    if body.history is not None:  # the explicit thin-client option (see SuggestRequest)
        if not getattr(suggester, "is_row", False):
            raise ApiError(422, "history_unsupported",
                           f"reranker {models.reranker_version(config.arm_version(arm))} "
                           "is a package model, which has no history features; omit history")
        options = {"history": body.history.reranker_summary(),
                   "now": body.history.now if body.history.now is not None else time.time()}
    # reranker.RerankerInputError (a data.InputError) -> 422 in serving._errors
    stickers, packages, scores = suggester.rank(
        language=body.language, text=body.text, cluster_id=cluster_id,
        user_embedding=embedding, limit=body.limit, **options)
    try:
        document = encoder.encode(stickers, packages, scores, cluster_id=cluster_id,
                                  arm=arm.name, experiment=config.experiment.name)
    except NonFiniteScoreError as exc:
        raise ApiError(422, "non_finite_score",
                       "the scores for this user_embedding are not finite numbers; send an "
                       "embedding of moderate magnitude") from exc
    st.metrics.count_suggestion(arm.name, body.language, len(stickers))
    return _json_response(document)


def _json_response(document: str) -> Response:
    """A JSON document already encoded compactly, pretty-printed when Flask would indent."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    compact = getattr(app.json, "compact", None)
    if compact is False or (compact is None and app.debug):
        return jsonify(json.loads(document))
    return Response(document, mimetype="application/json")


@api.post("/assign")
def assign() -> Response:
    """Cold start: the stage-1 cluster of a user with no history, from their features."""
    st = state()
    body = parse_body(AssignRequest, st.config.max_request_bytes)
    models = st.models()
    _check_features(models, body.features)
    cluster_id = int(models.stage1.assign(body.features))
    return jsonify({"cluster_id": cluster_id, "stage1_version": models.stage1_version})


def _etag_matches(etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


def _not_modified(etag: str, headers: dict[str, str]) -> Response:
    response = Response(status=304)
    response.headers["ETag"] = etag
    response.headers.update(headers)
    return response


@api.get("/clusters/<int:cluster_id>/bundle")
def bundle(cluster_id: int) -> Response:
    """The device bundle of a cluster for one keyboard language, as a zip; ETag/304."""
    st = state()
    models = st.models()
    arm = _arm(st)
    suggester = models.suggester(st.config.arm_version(arm))
    # checked before the ETag: a made-up cluster or language never gets a 304
    suggester.context.check_cluster(cluster_id)
    language = request.args.get("language")
    if language is None:
        raise ApiError(400, "missing_language",
                       f"give ?language=; served languages: {list(suggester.languages)}")
    suggester.context.check_language(language)
    versions = _versions(st, models, arm)
    key = (versions["stage1"], versions["reranker"], cluster_id, language)
    etag = bundle_etag(key)
    headers = {"X-Stage1-Version": versions["stage1"],
               "X-Reranker-Version": versions["reranker"], "X-Arm": arm.name,
               "Vary": INSTALL_ID_HEADER, "Cache-Control": "private, max-age=0"}
    if _etag_matches(etag):
        return _not_modified(etag, headers)
    cached = st.bundles.get(key)
    if cached is None:
        body = pack_bundle(suggester.bundle(cluster_id, language),
                           {"cluster_id": cluster_id, "language": language, **versions})
        cached = (etag, body)
        st.bundles.put(key, cached)
    response = Response(cached[1], status=200, mimetype="application/zip")
    response.headers["ETag"] = etag
    response.headers["Content-Disposition"] = (
        f'attachment; filename="bundle-{cluster_id}-{language}.zip"')
    response.headers.update(headers)
    return response


@api.get("/models/reranker")
def reranker_model() -> Response:
    """The ONNX reranker of the caller's A/B arm, with version, sha256 and parameters."""
    st = state()
    models = st.models()
    arm = _arm(st, required=True)
    artifact = models.reranker(st.config.arm_version(arm))
    suggester = models.suggester(st.config.arm_version(arm))
    if artifact is not None:
        version, sha256, n_parameters = (artifact.version, artifact.sha256,
                                         int(artifact.n_parameters))
        model_bytes: bytes = artifact.model_bytes
        privacy = privacy_statement(artifact.privacy)
    else:  # nothing published yet: the initial weights the suggester serves
        model_bytes = suggester.model_bytes
        version, sha256 = INITIAL, hashlib.sha256(model_bytes).hexdigest()
        n_parameters = int(suggester.layout.n_parameters)  # the row's, not stage 1's
        privacy = privacy_statement(None)
    parameters = dict(arm.parameters)
    tag_source = f"{sha256}/{arm.name}/{json.dumps(parameters, sort_keys=True)}"
    etag = '"' + hashlib.sha256(tag_source.encode()).hexdigest()[:32] + '"'
    headers = {"X-Reranker-Version": version, "X-Arm": arm.name,
               "Vary": INSTALL_ID_HEADER, "Cache-Control": "private, max-age=0"}
    if _etag_matches(etag):
        return _not_modified(etag, headers)
    response = jsonify({
        "arm": arm.name, "experiment": st.config.experiment.name,
        "reranker_version": version, "stage1_version": models.stage1_version,
        "sha256": sha256, "bytes": len(model_bytes),
        "n_parameters": n_parameters, "parameters": parameters,
        "privacy": privacy,
        "model_base64": base64.b64encode(model_bytes).decode("ascii"),
    })
    response.headers["ETag"] = etag
    response.headers.update(headers)
    return response


def _reject(reason: str, status: int, detail: str) -> ApiError:
    state().metrics.updates.labels("rejected", reason).inc()
    return ApiError(status, reason, detail)


@api.post("/federated/updates")
def federated_update() -> Response:
    """Store a device's noisy update for the open round (202), idempotently per nonce."""
    st = state()
    try:
        payload = json_body(st.config.max_update_bytes)
    except ApiError as exc:
        raise _reject(exc.reason, exc.status, exc.detail) from exc
    store = get_store()
    current = store.current_round()
    if current is None:
        raise _reject("no_open_round", 409, "no federated round is open; ask GET "
                      "/v1/federated/rounds/current later")
    if isinstance(payload, dict):
        payload = {k: integral(v) if k in ("round", "model_version", "n_examples") else v
                   for k, v in payload.items()}
    try:
        upload = parse_upload(payload, n_parameters=current.n_parameters,
                              max_examples=current.max_examples)
    except UploadError as exc:
        reason = "identity_field" if "identifying" in str(exc) else "invalid_update"
        raise _reject(reason, 422, str(exc)) from exc
    # parse_upload converts what numpy can; the wire format is JSON numbers only
    if not all(type(x) is float or type(x) is int for x in payload["delta"]):
        raise _reject("invalid_update", 422, "delta should hold JSON numbers only (no "
                      "strings, booleans or nulls)")
    norm = float(np.linalg.norm(upload.delta.astype(np.float64)))
    if norm > current.norm_bound:
        raise _reject("norm_exceeded", 422,
                      f"delta has L2 norm {norm:.6g}, above the round's bound "
                      f"{current.norm_bound:.6g} for a clipped, noised update")
    try:
        outcome = store.add_update(upload, time.time())
    except StoreRejectedError as exc:
        raise _reject(exc.reason, exc.status, exc.detail) from exc
    st.metrics.updates.labels(outcome, "").inc()
    return Response(json.dumps({"status": outcome, "round": upload.round}), status=202,
                    mimetype="application/json")


@api.get("/federated/rounds/current")
def current_round() -> Response:
    """What devices should train now: the open round's plan."""
    st = state()
    store = get_store()
    try:
        st.ensure_open_round(store)
    except BudgetExhaustedError as exc:  # the ledger refused it: no round to train
        raise ApiError(404, exc.reason, "no federated round is open: the model's privacy "
                       "budget allows no further round") from exc
    except FederatedError as exc:  # the platform's own root: mapped first
        raise federated_problem(exc) from exc
    except StickerSuggestError as exc:
        raise ApiError(503, "round_unavailable", f"cannot open a round: {exc}") from exc
    spec = store.current_round()
    if spec is None:
        raise ApiError(404, "no_open_round", "no federated round is open")
    body = {k: v for k, v in spec.to_dict().items() if k not in ("closed_at", "outcome")}
    body["accepting"] = time.time() <= spec.deadline_at
    body["model_url"] = "/v1/models/reranker"
    body["upload_url"] = "/v1/federated/updates"
    return jsonify(body)


# ---------------------------------------------------------------------------- OpenAPI


def _feature_values(values: list[str]) -> list[Any]:
    """The JSON values a request may send for a feature: each category as a string, and
    as a boolean or an integer where it spells one."""
    out: list[Any] = list(values)
    for v in values:
        if v in ("true", "false"):
            out.append(v == "true")
        elif v.lstrip("-").isdigit() and len(v.lstrip("-")) <= MAX_INTEGER_DIGITS:
            out.append(int(v))
    return out


def _features_schema(facts: ServedFacts | None) -> dict[str, Any]:
    base = AssignRequest.model_json_schema()["properties"]["features"]
    if facts is None:
        return base
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "description": base.get("description", "") + " Known features and values only "
            "(others: 422 unknown_feature / unknown_feature_value).",
            "properties": {name: {"enum": _feature_values(values)}
                           for name, values in facts.features.items()}}


def _suggest_schema(config: ServingConfig, facts: ServedFacts | None) -> dict[str, Any]:
    schema = SuggestRequest.model_json_schema()
    props = schema["properties"]
    props["text"]["maxLength"] = min(props["text"]["maxLength"], config.max_text_chars)
    props["limit"]["maximum"] = min(props["limit"]["maximum"], config.max_limit)
    props["cluster_id"] = {"type": "integer", "minimum": 0,
                           "description": props["cluster_id"].get("description", "")}
    props["features"] = _features_schema(facts)
    props["user_embedding"] = {
        "type": "array", "description": props["user_embedding"].get("description", ""),
        "items": {"type": "number", "minimum": -EMBEDDING_BOUND, "maximum": EMBEDDING_BOUND},
        "maxItems": 1024}
    if facts is not None:
        props["language"] = {"type": "string", "enum": list(facts.languages),
                             "description": props["language"].get("description", "")}
        props["cluster_id"]["maximum"] = facts.n_clusters - 1
        props["user_embedding"]["minItems"] = props["user_embedding"]["maxItems"] = (
            facts.n_factors)
    props["history"] = _history_schema(props["history"].get("description", ""))
    if facts is not None and not facts.history:
        del props["history"]
    schema.pop("$defs", None)  # the history's nested models are inlined above
    schema["oneOf"] = [{"required": ["cluster_id"], "not": {"required": ["features"]}},
                       {"required": ["features"], "not": {"required": ["cluster_id"]}}]
    return schema


def _history_schema(description: str) -> dict[str, Any]:
    """The thin-client history summary, inlined (pydantic puts nested models in ``$defs``,
    which an OpenAPI components entry cannot hold)."""
    models = SuggestRequest.model_json_schema()["$defs"]
    sent, summary = models["SentSticker"], models["HistorySummary"]
    time = {"type": "number", "minimum": 0, "maximum": 1e11}
    sent_props = {
        "sticker_id": {"type": "integer", "minimum": 0},
        "count": {"type": "number", "minimum": 0, "maximum": 1e9},
        "last_sent_at": dict(time)}
    for name, prop in sent_props.items():
        prop["description"] = sent["properties"][name].get("description", "")
    props: dict[str, Any] = {
        "stickers": {"type": "array", "maxItems": MAX_HISTORY_STICKERS,
                     "items": {"type": "object", "properties": sent_props,
                               "required": list(sent_props), "additionalProperties": False,
                               "description": sent.get("description", "")}},
        "held_packages": {"type": "array", "maxItems": MAX_HISTORY_PACKAGES,
                          "items": {"type": "integer", "minimum": 0}},
        "subscriber": {"type": "boolean"},
        "now": {"type": ["number", "null"], "minimum": 0, "maximum": 1e11}}
    for name, prop in props.items():
        prop["description"] = summary["properties"][name].get("description", "")
    return {"type": "object", "properties": props, "additionalProperties": False,
            "description": description}


def _assign_schema(facts: ServedFacts | None) -> dict[str, Any]:
    schema = AssignRequest.model_json_schema()
    schema["properties"]["features"] = _features_schema(facts)
    return schema


def _upload_schema(facts: ServedFacts | None) -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0, "maximum": 10**MAX_INTEGER_DIGITS - 1}
    delta: dict[str, Any] = {
        "type": "array", "items": {"type": "number"},
        "description": "Clipped, noised delta of n_parameters finite numbers whose L2 norm "
                       "is within the round's norm_bound"}
    properties: dict[str, Any] = {
        "round": dict(count), "model_version": dict(count), "delta": delta,
        "n_examples": dict(count), "nonce": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                                             "description": "Fresh for every upload"}}
    round_ = None if facts is None else facts.round
    if round_ is not None:
        n = int(round_["n_parameters"])
        bound = float(round_["norm_bound"])
        properties["round"] = {"type": "integer", "const": int(round_["round"])}
        properties["model_version"] = {"type": "integer",
                                       "const": int(round_["model_version"])}
        properties["n_examples"]["maximum"] = int(round_["max_examples"])
        # JSON Schema cannot state an L2 norm: each entry is within the bound (which the
        # norm implies), and the norm itself is stated in the extension and the text
        delta.update(minItems=n, maxItems=n, items={"type": "number", "minimum": -bound,
                                                    "maximum": bound})
        delta["x-l2-norm-maximum"] = bound
        delta["description"] += f" ({bound:.6g}; larger: 422 norm_exceeded)"
    return {"type": "object", "properties": properties, "required": list(UPLOAD_FIELDS),
            "additionalProperties": False}

_VERSIONS = obj({"stage1": STR, "reranker": STR})
_INSTALL = {"name": INSTALL_ID_HEADER, "in": "header",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,128}$"},
            "description": "Picks the A/B arm by hash; never stored or logged."}
_ETAG = {"name": "If-None-Match", "in": "header", "required": False, "schema": STR}


@documents(api)
def _openapi(context: DocumentContext) -> Fragment:
    """The paths and schemas of the ``/v1`` routes above."""
    config, facts, bad = context.config, context.facts, context.json_errors
    cluster_schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    language_schema: dict[str, Any] = dict(STR)
    if facts is not None:
        cluster_schema["maximum"] = facts.n_clusters - 1
        language_schema["enum"] = list(facts.languages)
    paths: dict[str, Any] = {
        "/v1/suggest": {"post": {
            "summary": "Ranked stickers for the text typed so far (text never stored)",
            "operationId": "suggest", "parameters": [{**_INSTALL, "required": False}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("SuggestRequest")}}},
            "responses": {"200": json_response(ref("SuggestResponse"), "The suggestion row"),
                          "404": problem("Unknown cluster"), **bad}}},
        "/v1/assign": {"post": {
            "summary": "Cold-start cluster from user features", "operationId": "assign",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("AssignRequest")}}},
            "responses": {"200": json_response(ref("AssignResponse"), "The cluster"), **bad}}},
        "/v1/clusters/{cluster_id}/bundle": {"get": {
            "summary": "Device bundle (zip) of a cluster for one language",
            "operationId": "bundle",
            "parameters": [
                {"name": "cluster_id", "in": "path", "required": True,
                 "schema": cluster_schema},
                {"name": "language", "in": "query", "required": True,
                 "schema": language_schema},
                {**_INSTALL, "required": False}, _ETAG],
            "responses": {
                "200": {"description": "Zip of the bundle files and bundle-index.json",
                        "headers": {"ETag": {"schema": STR},
                                    "X-Stage1-Version": {"schema": STR},
                                    "X-Reranker-Version": {"schema": STR}},
                        "content": {"application/zip": {"schema": {
                            "type": "string", "contentMediaType": "application/zip"}}}},
                "304": {"description": "Unchanged (ETag matched)"},
                "400": problem("Missing language"), "404": problem("Unknown cluster"),
                "422": problem("Unknown language"), "503": bad["503"]}}},
        "/v1/models/reranker": {"get": {
            "summary": "ONNX reranker of the caller's A/B arm", "operationId": "rerankerModel",
            "parameters": [{**_INSTALL, "required": True}, _ETAG],
            "responses": {"200": json_response(ref("RerankerModel"), "Model, version, sha256"),
                          "304": {"description": "Unchanged (ETag matched)"},
                          "400": problem("Missing or malformed install id"),
                          "503": bad["503"]}}},
        "/v1/federated/updates": {"post": {
            "summary": "Upload a clipped, noised update for the open round",
            "operationId": "uploadUpdate",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("Upload")}}},
            "responses": {
                "202": json_response(ref("UploadAccepted"),
                                     "Stored durably (or an identical retry of a stored "
                                     "update)"),
                "400": bad["400"], "415": bad["415"],
                "409": problem("No open round, stale round, deadline passed, model "
                               "version mismatch, or nonce replayed with other content"),
                "413": problem(f"Body larger than {config.max_update_bytes} bytes"),
                "422": problem("Invalid update: identity fields, shape, non-finite "
                               "values, norm above the bound")}}},
        "/v1/federated/rounds/current": {"get": {
            "summary": "The open round devices should train", "operationId": "currentRound",
            "responses": {"200": json_response(ref("Round"), "The open round"),
                          "404": problem("No open round (privacy_budget_exhausted: "
                                         "the privacy ledger allows no further round)"),
                          "409": problem("The federated platform refused to open one "
                                         "(its own errors, e.g. privacy budget)"),
                          "500": problem("The federated platform failed (its config)"),
                          "503": problem("A round cannot be opened")}}},
    }
    schemas: dict[str, Any] = {
        "SuggestRequest": _suggest_schema(config, facts),
        "AssignRequest": _assign_schema(facts),
        "Sticker": obj({"sticker_id": INT, "package_id": INT,
                        "labels": {"type": "array", "items": STR},
                        "emojis": {"type": "array", "items": STR},
                        "character": STR, "score": NUM}),
        "SuggestResponse": obj({"stickers": {"type": "array", "items": ref("Sticker")},
                                "cluster_id": INT, "versions": _VERSIONS, "arm": STR,
                                "experiment": STR}),
        "AssignResponse": obj({"cluster_id": INT, "stage1_version": STR}),
        "RerankerModel": obj({
            "arm": STR, "experiment": STR, "reranker_version": STR, "stage1_version": STR,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": INT,
            "n_parameters": INT, "parameters": {"type": "object"},
            "privacy": obj({"epsilon": {}, "delta": {}}),
            "model_base64": {"type": "string", "contentEncoding": "base64"}}),
        "Upload": _upload_schema(facts),
        "UploadAccepted": obj({"status": {"type": "string", "enum": ["accepted",
                                                                     "duplicate"]},
                               "round": INT}),
        "Round": obj({
            "round": INT, "model_version": INT, "reranker_version": STR,
            "n_parameters": INT, "clip_norm": NUM, "noise_multiplier": NUM,
            "norm_bound": NUM, "max_examples": INT, "min_reports": INT,
            "sampling_rate": NUM, "opened_at": NUM, "deadline_at": NUM,
            "status": STR, "accepting": BOOL, "model_url": STR, "upload_url": STR}),
    }
    return Fragment(paths, schemas)
