"""The OpenAPI 3.1 document of the server.

Request schemas come from the pydantic models that validate them, so the document and
the validation cannot drift; the tests check every route is documented, every documented
route exists, and real responses validate against the documented schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from federated import UPLOAD_FIELDS
from serving._arms import INSTALL_ID_HEADER
from serving._config import ServingConfig
from serving._errors import PROBLEM_JSON
from serving._requests import (
    EMBEDDING_BOUND,
    MAX_DEPTH,
    MAX_HISTORY_PACKAGES,
    MAX_HISTORY_STICKERS,
    MAX_INTEGER_DIGITS,
    AssignRequest,
    SuggestRequest,
)
from serving._secure import secure_openapi_paths

__all__ = ["ServedFacts", "openapi_document"]


@dataclass(frozen=True)
class ServedFacts:
    """What the served models and the open round allow, stated in the document.

    Attributes
    ----------
    languages : list of str
        Served keyboard languages.
    n_clusters : int
        Clusters of the served stage-1 version (ids ``0 .. n_clusters - 1``).
    n_factors : int
        Length of a ``user_embedding``.
    features : dict of str to list of str
        Each cold-start feature's known values, as the stage-1 encoder spells them.
    round : dict, optional
        The open round (``round``, ``model_version``, ``n_parameters``, ``norm_bound``,
        ``max_examples``), if one is open.
    history : bool
        Whether every served reranker is a sticker-row model, which takes a thin client's
        ``history`` (else the field is left out of the document: 422 history_unsupported).
    """

    languages: list[str]
    n_clusters: int
    n_factors: int
    features: dict[str, list[str]]
    round: dict[str, Any] | None = field(default=None)
    history: bool = True


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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": _ref("Problem")}}}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         additional: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "required": required if required is not None else list(properties)}
    if not additional:
        out["additionalProperties"] = False
    return out


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_VERSIONS = _obj({"stage1": _STR, "reranker": _STR})
_INSTALL = {"name": INSTALL_ID_HEADER, "in": "header",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,128}$"},
            "description": "Picks the A/B arm by hash; never stored or logged."}
_ETAG = {"name": "If-None-Match", "in": "header", "required": False, "schema": _STR}


def _schemas(config: ServingConfig, facts: ServedFacts | None) -> dict[str, Any]:
    return {
        "Problem": _obj({"type": _STR, "title": _STR, "status": _INT, "detail": _STR,
                         "instance": _STR,
                         "errors": {"type": "array", "items": _obj({"field": _STR,
                                                                    "problem": _STR})}},
                        ["type", "title", "status", "detail"]),
        "SuggestRequest": _suggest_schema(config, facts),
        "AssignRequest": _assign_schema(facts),
        "Sticker": _obj({"sticker_id": _INT, "package_id": _INT,
                         "labels": {"type": "array", "items": _STR},
                         "emojis": {"type": "array", "items": _STR},
                         "character": _STR, "score": _NUM}),
        "SuggestResponse": _obj({"stickers": {"type": "array", "items": _ref("Sticker")},
                                 "cluster_id": _INT, "versions": _VERSIONS, "arm": _STR,
                                 "experiment": _STR}),
        "AssignResponse": _obj({"cluster_id": _INT, "stage1_version": _STR}),
        "RerankerModel": _obj({
            "arm": _STR, "experiment": _STR, "reranker_version": _STR, "stage1_version": _STR,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": _INT,
            "n_parameters": _INT, "parameters": {"type": "object"},
            "privacy": _obj({"epsilon": {}, "delta": {}}),
            "model_base64": {"type": "string", "contentEncoding": "base64"}}),
        "Upload": _upload_schema(facts),
        "UploadAccepted": _obj({"status": {"type": "string", "enum": ["accepted",
                                                                      "duplicate"]},
                                "round": _INT}),
        "Round": _obj({
            "round": _INT, "model_version": _INT, "reranker_version": _STR,
            "n_parameters": _INT, "clip_norm": _NUM, "noise_multiplier": _NUM,
            "norm_bound": _NUM, "max_examples": _INT, "min_reports": _INT,
            "sampling_rate": _NUM, "opened_at": _NUM, "deadline_at": _NUM,
            "status": _STR, "accepting": _BOOL, "model_url": _STR, "upload_url": _STR}),
        "Health": _obj({"status": _STR}),
        "Ready": _obj({"status": {"type": "string", "enum": ["ready", "degraded"]},
                       "degraded": {"type": "array", "items": _STR},
                       "versions": {"type": "object"}, "loaded_at": _NUM,
                       "pending": {"type": ["object", "null"], "description":
                                   "Versions loaded and waiting until every worker has them"},
                       "last_check": _NUM, "last_reload_error": {"type": ["string", "null"]},
                       "uptime_s": _NUM}),
        "DemoUser": _obj({"user_id": _INT, "language": _STR, "cluster_id": _INT,
                          "label": _STR}),
        "DemoUsers": _obj({"languages": {"type": "array", "items": _STR},
                           "users": {"type": "array", "items": _ref("DemoUser")}}),
    }


def openapi_document(config: ServingConfig, facts: ServedFacts | None = None
                     ) -> dict[str, Any]:
    """The OpenAPI 3.1 document: limits from ``config``, and from ``facts`` (when models
    are loaded) the served languages, clusters, embedding length, feature values and the
    open round, so that every schema-valid request is accepted."""
    bad = {"400": _problem(f"Malformed JSON (UTF-8 only, no duplicate keys, nesting <= "
                           f"{MAX_DEPTH}, integers <= {MAX_INTEGER_DIGITS} digits), or a "
                           "body shorter than its Content-Length"),
           "413": _problem(f"Body larger than {config.max_request_bytes} bytes"),
           "415": _problem("Content-Type is not application/json"),
           "422": _problem("Wrong types or values (each field listed in `errors`)"),
           "503": _problem("No verified models are loaded yet")}
    cluster_schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    language_schema: dict[str, Any] = dict(_STR)
    if facts is not None:
        cluster_schema["maximum"] = facts.n_clusters - 1
        language_schema["enum"] = list(facts.languages)
    paths: dict[str, Any] = {
        "/v1/suggest": {"post": {
            "summary": "Ranked stickers for the text typed so far (text never stored)",
            "operationId": "suggest", "parameters": [{**_INSTALL, "required": False}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("SuggestRequest")}}},
            "responses": {"200": _json(_ref("SuggestResponse"), "The suggestion row"),
                          "404": _problem("Unknown cluster"), **bad}}},
        "/v1/assign": {"post": {
            "summary": "Cold-start cluster from user features", "operationId": "assign",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("AssignRequest")}}},
            "responses": {"200": _json(_ref("AssignResponse"), "The cluster"), **bad}}},
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
                        "headers": {"ETag": {"schema": _STR},
                                    "X-Stage1-Version": {"schema": _STR},
                                    "X-Reranker-Version": {"schema": _STR}},
                        "content": {"application/zip": {"schema": {
                            "type": "string", "contentMediaType": "application/zip"}}}},
                "304": {"description": "Unchanged (ETag matched)"},
                "400": _problem("Missing language"), "404": _problem("Unknown cluster"),
                "422": _problem("Unknown language"), "503": bad["503"]}}},
        "/v1/models/reranker": {"get": {
            "summary": "ONNX reranker of the caller's A/B arm", "operationId": "rerankerModel",
            "parameters": [{**_INSTALL, "required": True}, _ETAG],
            "responses": {"200": _json(_ref("RerankerModel"), "Model, version, sha256"),
                          "304": {"description": "Unchanged (ETag matched)"},
                          "400": _problem("Missing or malformed install id"),
                          "503": bad["503"]}}},
        "/v1/federated/updates": {"post": {
            "summary": "Upload a clipped, noised update for the open round",
            "operationId": "uploadUpdate",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("Upload")}}},
            "responses": {
                "202": _json(_ref("UploadAccepted"),
                             "Stored durably (or an identical retry of a stored update)"),
                "400": bad["400"], "415": bad["415"],
                "409": _problem("No open round, stale round, deadline passed, model "
                                "version mismatch, or nonce replayed with other content"),
                "413": _problem(f"Body larger than {config.max_update_bytes} bytes"),
                "422": _problem("Invalid update: identity fields, shape, non-finite "
                                "values, norm above the bound")}}},
        "/v1/federated/rounds/current": {"get": {
            "summary": "The open round devices should train", "operationId": "currentRound",
            "responses": {"200": _json(_ref("Round"), "The open round"),
                          "404": _problem("No open round (privacy_budget_exhausted: "
                                          "the privacy ledger allows no further round)"),
                          "409": _problem("The federated platform refused to open one "
                                          "(its own errors, e.g. privacy budget)"),
                          "500": _problem("The federated platform failed (its config)"),
                          "503": _problem("A round cannot be opened")}}},
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz",
                             "responses": {"200": _json(_ref("Health"), "Alive")}}},
        "/readyz": {"get": {"summary": "Readiness (verified artifacts loaded)",
                            "operationId": "readyz",
                            "responses": {"200": _json(_ref("Ready"), "Ready"),
                                          "503": bad["503"]}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                             "responses": {"200": {"description": "Text exposition",
                                                   "content": {"text/plain": {
                                                       "schema": _STR}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"},
                                                             "OpenAPI 3.1")}}},
    }
    if config.demo:
        paths["/"] = {"get": {"summary": "Keyboard demo page", "operationId": "demoPage",
                              "responses": {"200": {"description": "HTML", "content": {
                                  "text/html": {"schema": _STR}}}}}}
        paths["/demo/users"] = {"get": {
            "summary": "Simulated users offered by the demo page", "operationId": "demoUsers",
            "responses": {"200": _json(_ref("DemoUsers"), "Users"), "503": bad["503"]}}}
    paths.update(secure_openapi_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "sticker-suggest", "version": "1",
                 "description": "Sticker suggestions, device bundles, reranker models and "
                                "federated update uploads. Errors are RFC 9457 problem "
                                "details (application/problem+json)."},
        "paths": paths,
        "components": {"schemas": _schemas(config, facts)},
    }
