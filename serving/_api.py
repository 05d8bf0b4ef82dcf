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
from federated import FederatedError, UploadError, parse_upload
from serving._arms import INSTALL_ID_HEADER, INSTALL_ID_PATTERN, assign_arm
from serving._bundle import bundle_etag, pack_bundle
from serving._config import ArmConfig
from serving._encode import NonFiniteScoreError
from serving._errors import ApiError, federated_problem
from serving._ledger import BudgetExhaustedError
from serving._privacy import privacy_statement
from serving._registry import INITIAL, ModelSet
from serving._requests import AssignRequest, SuggestRequest, integral, json_body, parse_body
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
    body = parse_body(SuggestRequest, config.max_request_bytes)
    if body.limit > config.max_limit:
        raise ApiError(422, "invalid_request",
                       f"limit={body.limit} should be <= {config.max_limit}")
    if len(body.text) > config.max_text_chars:
        raise ApiError(422, "invalid_request", f"text should have at most "
                       f"{config.max_text_chars} characters, got {len(body.text)}")
    models = st.models()
    arm = _arm(st)
    suggester = models.suggester(st.config.arm_version(arm))
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
                           f"reranker {models.reranker_version(st.config.arm_version(arm))} "
                           "is a package model, which has no history features; omit history")
        options = {"history": body.history.reranker_summary(),
                   "now": body.history.now if body.history.now is not None else time.time()}
    # reranker.RerankerInputError (a data.InputError) -> 422 in serving._errors
    stickers, packages, scores = suggester.rank(
        language=body.language, text=body.text, cluster_id=cluster_id,
        user_embedding=embedding, limit=body.limit, **options)
    try:
        document = models.encoder(st.config.arm_version(arm)).encode(
            stickers, packages, scores, cluster_id=cluster_id, arm=arm.name,
            experiment=config.experiment.name)
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
