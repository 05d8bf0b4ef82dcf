"""The ``/v1/secure`` blueprint: enrolment, anonymous tokens and SecAgg+ rounds over HTTP.

Endpoints (JSON in and out; binary values base64; errors RFC 9457 problem details):

``POST /v1/secure/enrolments``
    A fresh enrolment credential (201). No identity is asked for or stored.
``POST /v1/secure/tokens``
    ``Authorization: Bearer <credential>``; ``{"blinded": [...]}`` → the day's
    evaluations and public key. At most ``tokens_per_day`` per enrolment per day (429).
``GET /v1/secure/tokens/key``
    The day's public key, for devices to check every issuance against.
``GET /v1/secure/model``
    The newest global parameters (float32, base64) with an ETag (304 on a match).
``GET /v1/secure/round``
    The open round: stage, model version, the devices' encoding and rotation seed.
``GET /v1/secure/rounds/<r>``
    A round's state and, once closed, its outcome (the modular sum, survivors).
``POST /v1/secure/rounds/<r>/checkins``
    ``{"token": {"input", "authenticator"}}`` → a round ticket (201). No token: 401;
    invalid: 403; replayed: 409.
``GET /v1/secure/rounds/<r>/message``
    ``Authorization: Bearer <ticket>`` → 200 ``{"stage", "message"}`` (the protocol
    message waiting for this client), 202 with ``Retry-After`` (wait), 410 (dropped
    out or round closed).
``POST /v1/secure/rounds/<r>/messages``
    ``Authorization: Bearer <ticket>``; ``{"message"}`` (the client's reply) → 202.
``POST /v1/secure/rounds/<r>/leave``
    ``Authorization: Bearer <ticket>``: a clean drop-out; later stages stop waiting for
    this client (a silent drop-out costs the stage's deadline instead).

The blueprint registers only when :class:`SecureRoundsConfig` ``enabled`` is set
(``STICKERS_SECURE_CONFIG``); every request first lets the engine do what is due, and a
background thread per process does the same between requests.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from data import StickerSuggestError
from federated.secagg import Token
from serving._config import ServingConfig
from serving._errors import ApiError
from serving._openapi import DocumentContext, Fragment, documents
from serving._secure_rounds import SecureRounds, SecureRoundsConfig

__all__ = ["register_secure_rounds", "secure"]

EXTENSION = "sticker_secure_rounds"
secure = Blueprint("secure", __name__, url_prefix="/v1/secure")


def _engine() -> SecureRounds:
    return current_app.extensions[EXTENSION]


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "bad_field", f"{what} should be a base64 string, got "
                       f"{type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "bad_field", f"{what} is not valid base64") from exc


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body should be a JSON object")
    return body


def _bearer(what: str) -> bytes:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise ApiError(401, "missing_credential", f"send the {what} as "
                       "'Authorization: Bearer <base64>'")
    raw = _unb64(value.strip(), what)
    if len(raw) != 32:
        raise ApiError(401, "missing_credential", f"the {what} should be 32 bytes")
    return raw


@secure.before_request
def _tick() -> None:
    _engine().tick(decide=False)


@secure.post("/enrolments")
def enrol() -> tuple[Response, int]:
    """A new enrolment credential (no identity asked, none stored)."""
    return jsonify({"credential": base64.b64encode(_engine().enrol()).decode()}), 201


@secure.post("/tokens")
def tokens() -> Response:
    """Evaluate blinded token requests under the enrolment's daily allowance."""
    credential = _bearer("enrolment credential")
    body = _body()
    blinded = body.get("blinded")
    if not isinstance(blinded, list) or not blinded or len(blinded) > 64:
        raise ApiError(422, "bad_field", "blinded should be a list of 1..64 base64 elements")
    return jsonify(_engine().issue(credential, [_unb64(b, "blinded element")
                                                for b in blinded]))


@secure.get("/tokens/key")
def token_key() -> Response:
    """The public key of today's tokens."""
    engine = _engine()
    day = engine.current_token_day()
    return jsonify({"day": day, "public_key": base64.b64encode(
        engine.issuer().public_key(day)).decode()})


@secure.get("/model")
def model() -> Response:
    """The newest global parameters (ETag: the model version)."""
    version, params = _engine().model()
    etag = f'"secure-model-{version}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = Response(status=304)
    else:
        response = jsonify({"model_version": version, "n_parameters": int(params.shape[0]),
                            "parameters": base64.b64encode(
                                np.ascontiguousarray(params, "<f4").tobytes()).decode()})
    response.headers["ETag"] = etag
    return response


@secure.get("/round")
def current_round() -> Response:
    """The open round."""
    return jsonify(_engine().current())


@secure.get("/rounds/<int:round_>")
def round_info(round_: int) -> Response:
    """A round's state and outcome."""
    return jsonify(_engine().round_info(round_))


@secure.post("/rounds/<int:round_>/checkins")
def checkin(round_: int) -> tuple[Response, int]:
    """Redeem one token for a place in the round's cohort."""
    body = _body()
    raw = body.get("token")
    if raw is None:
        raise ApiError(401, "missing_token", "a check-in needs an admission token "
                       "({'token': {'input', 'authenticator'}}); get tokens from "
                       "POST /v1/secure/tokens")
    if not isinstance(raw, dict):
        raise ApiError(422, "bad_field", "token should be an object")
    token = Token(_unb64(raw.get("input"), "token input"),
                  _unb64(raw.get("authenticator"), "token authenticator"))
    ticket = _engine().checkin(round_, token)
    return jsonify({"round": round_, "ticket": base64.b64encode(ticket).decode()}), 201


@secure.get("/rounds/<int:round_>/message")
def poll(round_: int) -> Response:
    """The protocol message waiting for the ticket's client, or 202 to wait."""
    ticket = _bearer("round ticket")
    engine = _engine()
    stage, body = engine.poll(round_, ticket)
    if body is None:
        response = jsonify({"round": round_, "stage": stage, "waiting": True})
        response.status_code = 202
        response.headers["Retry-After"] = "1"
        return response
    return jsonify({"round": round_, "stage": stage,
                    "message": base64.b64encode(body).decode()})


@secure.post("/rounds/<int:round_>/leave")
def leave(round_: int) -> tuple[Response, int]:
    """The client leaves the round cleanly (later stages stop waiting for it)."""
    _engine().leave(round_, _bearer("round ticket"))
    return jsonify({"round": round_, "left": True}), 202


@secure.post("/rounds/<int:round_>/messages")
def reply(round_: int) -> tuple[Response, int]:
    """The client's reply to the current stage."""
    ticket = _bearer("round ticket")
    body = _unb64(_body().get("message"), "message")
    stage = _engine().reply(round_, ticket, body)
    return jsonify({"round": round_, "stage": stage, "accepted": True}), 202


def _initial_parameters(config: ServingConfig, secure_config: SecureRoundsConfig
                        ) -> Any:
    def load() -> np.ndarray:
        if secure_config.model == "zeros":
            return np.zeros(secure_config.n_parameters, np.float32)
        from serving._rounds import live_reranker, reranker_base

        live = live_reranker(config.var)
        if live is None:
            raise ApiError(503, "not_ready", "no reranker is published; secure rounds "
                           "start from the live reranker's global weights")
        return reranker_base(config.var, live)[1]
    return load


def register_secure_rounds(app: Flask, config: ServingConfig,
                           secure_config: SecureRoundsConfig | None = None) -> None:
    """Register the blueprint and its engine if secure rounds are enabled.

    Parameters
    ----------
    app : Flask
    config : ServingConfig
        Its ``var`` holds the stores (``var/secure/``).
    secure_config : SecureRoundsConfig, optional
        Default: :meth:`SecureRoundsConfig.from_environ`.
    """
    secure_config = secure_config or SecureRoundsConfig.from_environ()
    if not secure_config.enabled:
        return
    engine = SecureRounds(secure_config, config.var / "secure",
                          _initial_parameters(config, secure_config), var=config.var,
                          ledger_path=config.resolved_ledger_path,
                          budget_policy=config.budget_policy,
                          serving_promotion=config.promotion,
                          promotion_tolerance=config.promotion_tolerance)
    app.extensions[EXTENSION] = engine
    app.register_blueprint(secure)
    if not app.testing:
        try:
            engine.tick(decide=False)
        except StickerSuggestError as exc:  # no model yet: the thread retries
            app.logger.warning("secure rounds not started: %s", exc)
        engine.start_background()


# ------------------------------------------------------------------- OpenAPI

_B64 = {"type": "string", "contentEncoding": "base64"}
_BEARER = {"name": "Authorization", "in": "header", "required": True,
           "schema": {"type": "string", "pattern": "^Bearer [A-Za-z0-9+/]{43}=$"}}
_ROUND = {"name": "round_", "in": "path", "required": True,
          "schema": {"type": "integer", "minimum": 0}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _json(description: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if properties:
        schema["properties"] = properties
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}


@documents(secure)
def _openapi(context: DocumentContext) -> Fragment:
    """The blueprint's OpenAPI paths (documented when secure rounds are registered)."""
    gone = _problem("Round closed, or this client dropped out (missed a stage deadline)")
    return Fragment(paths={
        "/v1/secure/enrolments": {"post": {
            "summary": "Enrol a device (no identity asked or stored)", "operationId":
            "secureEnrol", "responses": {"201": _json("The enrolment credential", {
                "credential": _B64})}}},
        "/v1/secure/tokens": {"post": {
            "summary": "Anonymous admission tokens (RFC 9497 VOPRF evaluations)",
            "operationId": "secureTokens", "parameters": [_BEARER],
            "requestBody": _body_schema({"blinded": {"type": "array", "items": _B64,
                                                     "minItems": 1, "maxItems": 64}},
                                        ["blinded"]),
            "responses": {"200": _json("Evaluations and the day's public key"),
                          "400": _problem("Malformed JSON"),
                          "401": _problem("Missing enrolment credential"),
                          "403": _problem("Unknown enrolment"),
                          "415": _problem("Not JSON"),
                          "422": _problem("Bad blinded element"),
                          "429": _problem("Daily token allowance spent")}}},
        "/v1/secure/tokens/key": {"get": {
            "summary": "Today's token public key", "operationId": "secureTokenKey",
            "responses": {"200": _json("Day and public key")}}},
        "/v1/secure/model": {"get": {
            "summary": "The newest global parameters of the secure lineage",
            "operationId": "secureModel",
            "responses": {"200": _json("Model version and parameters (float32)"),
                          "304": {"description": "Unchanged (ETag matched)"},
                          "503": _problem("No model to start from")}}},
        "/v1/secure/round": {"get": {
            "summary": "The open secure round", "operationId": "secureRound",
            "responses": {"200": _json("Stage, model version, encoding, rotation seed"),
                          "404": _problem("No open round")}}},
        "/v1/secure/rounds/{round_}": {"get": {
            "summary": "A round's state and outcome", "operationId": "secureRoundInfo",
            "parameters": [_ROUND],
            "responses": {"200": _json("State and outcome"),
                          "404": _problem("Unknown round")}}},
        "/v1/secure/rounds/{round_}/checkins": {"post": {
            "summary": "Redeem one token to join the round", "operationId": "secureCheckin",
            "parameters": [_ROUND],
            "requestBody": _body_schema({"token": {"type": "object", "properties": {
                "input": _B64, "authenticator": _B64}, "required": ["input",
                                                                    "authenticator"]}},
                ["token"]),
            "responses": {"201": _json("The round ticket", {"ticket": _B64}),
                          "400": _problem("Malformed JSON"),
                          "401": _problem("No token"),
                          "403": _problem("Invalid token"),
                          "409": _problem("Token replayed, check-in closed, cohort full"),
                          "415": _problem("Not JSON"),
                          "422": _problem("Malformed token fields")}}},
        "/v1/secure/rounds/{round_}/message": {"get": {
            "summary": "The protocol message waiting for this client",
            "operationId": "securePoll", "parameters": [_ROUND, _BEARER],
            "responses": {"200": _json("Stage and message"),
                          "202": _json("Nothing yet: retry after Retry-After seconds"),
                          "401": _problem("Missing ticket"),
                          "403": _problem("Unknown ticket"),
                          "404": _problem("Unknown round"), "410": gone}}},
        "/v1/secure/rounds/{round_}/leave": {"post": {
            "summary": "Leave the round cleanly", "operationId": "secureLeave",
            "parameters": [_ROUND, _BEARER],
            "responses": {"202": _json("Left"), "401": _problem("Missing ticket"),
                          "403": _problem("Unknown ticket"),
                          "404": _problem("Unknown round"), "410": gone}}},
        "/v1/secure/rounds/{round_}/messages": {"post": {
            "summary": "The client's reply to the current stage",
            "operationId": "secureReply", "parameters": [_ROUND, _BEARER],
            "requestBody": _body_schema({"message": _B64}, ["message"]),
            "responses": {"202": _json("Stored"),
                          "400": _problem("Malformed JSON"),
                          "401": _problem("Missing ticket"),
                          "403": _problem("Unknown ticket or wrong sender"),
                          "404": _problem("Unknown round"),
                          "409": _problem("Wrong stage or round, replayed reply"),
                          "410": gone, "415": _problem("Not JSON"),
                          "422": _problem("Unreadable protocol message")}}},
    })
