"""Request bodies: size limit, JSON parsing and typed validation at the HTTP edge.

Validation errors list each field and problem but never the offending *value*: a
value could be the typed text, which must not be echoed into logs or caches.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec
import numpy as np
from flask import Request, request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from serving._errors import ApiError

__all__ = ["AssignRequest", "HistorySummary", "SentSticker", "SuggestFields", "SuggestRequest",
           "integral", "json_body", "parse_body", "parse_suggest", "validate"]

def integral(value: Any) -> Any:
    """A float with no fraction as the integer it is (JSON does not tell ``9`` from
    ``9.0``, and JSON Schema's ``integer`` accepts both); anything else unchanged."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Integer = Annotated[StrictInt, BeforeValidator(integral)]
"""An integer field: a JSON integer, or a number with no fraction (``9.0``)."""
Identifier = Annotated[StrictInt, BeforeValidator(integral), Field(ge=0)]
"""A non-negative integer id (as :data:`Integer`)."""
FeatureValue = Annotated[StrictStr, Field(max_length=64)] | StrictBool | Integer
EMBEDDING_BOUND = 1000.0
"""Largest magnitude of a ``user_embedding`` entry (stage-1 factors are of order 1)."""
EmbeddingEntry = Annotated[float, Field(strict=True, allow_inf_nan=False,
                                        ge=-EMBEDDING_BOUND, le=EMBEDDING_BOUND)]
_Model = TypeVar("_Model", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class AssignRequest(_Body):
    """``POST /v1/assign``: cold start from user features."""

    features: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(
        min_length=1, max_length=32)
    """Columns of the ``users`` table (``language``, ``region``, ``age_bucket`` ...)."""


MAX_HISTORY_STICKERS = 1000
"""Most sent stickers a thin client's history summary may list (the 64 KiB body limit
holds about this many)."""
MAX_HISTORY_PACKAGES = 1000
"""Most held packages a thin client's history summary may list."""
Timestamp = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e11)]
"""Seconds since the epoch (a JSON number, finite, before the year 5138)."""


class SentSticker(_Body):
    """One sticker the device has sent: its decayed send count and its last send."""

    sticker_id: Integer = Field(ge=0)
    """The sticker (ids the served catalogue does not know are ignored)."""
    count: float = Field(strict=True, allow_inf_nan=False, ge=0, le=1e9)
    """The device's decayed send count of the sticker as of ``last_sent_at``."""
    last_sent_at: Timestamp
    """When the device last sent it (seconds since the epoch, the device's clock)."""


class HistorySummary(_Body):
    """A thin client's own history, sent only by explicit choice (``history`` of suggest).

    By default the history stays on the phone and the phone ranks; a client that cannot
    run the model may send this summary with each request instead. It is used for that
    one ranking only: never logged, stored or echoed in an error.
    """

    stickers: list[SentSticker] = Field(default_factory=list,
                                        max_length=MAX_HISTORY_STICKERS)
    """The stickers the device has sent (package and label counts follow from these)."""
    held_packages: list[Identifier] = Field(default_factory=list,
                                         max_length=MAX_HISTORY_PACKAGES)
    """Packages the device holds (bought, downloaded, subscription)."""
    subscriber: StrictBool = False
    """Whether the device has the sticker subscription."""
    now: Timestamp | None = None
    """The device's clock for the decays (seconds since the epoch); omitted: the
    server's clock."""

    def reranker_summary(self) -> dict[str, Any]:
        """The summary in ``reranker``'s form (``DeviceHistory.summary``)."""
        return {"stickers": [[s.sticker_id, s.count, s.last_sent_at] for s in self.stickers],
                "held": list(self.held_packages), "subscriber": self.subscriber}


class SuggestRequest(_Body):
    """``POST /v1/suggest``: one keystroke's suggestion row."""

    language: StrictStr = Field(min_length=1, max_length=16)
    """Keyboard language (one of the served keyword indexes)."""
    text: StrictStr = Field(max_length=4096)
    """What the user has typed so far (never logged or stored)."""
    cluster_id: Integer | None = Field(default=None, ge=0)
    """The user's stage-1 cluster; or give ``features`` for a cold start."""
    features: dict[Annotated[str, Field(max_length=64)], FeatureValue] | None = Field(
        default=None, min_length=1, max_length=32)
    """User features for a cold-start cluster when ``cluster_id`` is unknown."""
    user_embedding: list[EmbeddingEntry] | None = Field(default=None, max_length=1024)
    """The device's personal embedding (d finite numbers, each within ±1000); omitted:
    no personal term."""
    limit: Integer = Field(default=5, ge=1, le=50)
    """Stickers to return (at most 50)."""
    history: HistorySummary | None = None
    """Thin clients only, by explicit choice: the device's own history summary, used for
    this ranking and dropped (never logged or stored). Omitted (the default, and what the
    keyboard app does): no history reaches the server; the row is the cluster's, as for a
    device with no history. Needs a sticker-row reranker (else 422 history_unsupported)."""

    @model_validator(mode="after")
    def _cluster_or_features(self) -> SuggestRequest:
        if (self.cluster_id is None) == (self.features is None):
            raise ValueError("give exactly one of cluster_id or features")
        return self


def _raw_body(max_bytes: int) -> bytes:
    """The request's body bytes, refusing bodies above ``max_bytes`` (413).

    A body with a plain ``Content-Length`` (the keyboard's case) is read straight from
    ``wsgi.input``: exactly that many bytes, which PEP 3333 lets an application read.
    A chunked body (``wsgi.input_terminated``: the server de-chunks it and marks its end)
    is read up to one byte past the limit, so a body over the limit is refused with 413
    rather than cut. Anything else — no or malformed length — goes through Werkzeug.
    """
    # The request itself, not the context-local proxy: one lookup instead of one per use.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    header = environ.get("CONTENT_LENGTH")
    chunked = "HTTP_TRANSFER_ENCODING" in environ
    simple = (header is not None and header.isascii() and header.isdigit() and not chunked)
    length = (int(header) if simple  # type: ignore[arg-type]
              else None if chunked else req.content_length)
    if length is not None and length > max_bytes:
        raise ApiError(413, "payload_too_large",
                       f"request body is {length} bytes, larger than the limit of "
                       f"{max_bytes} bytes for {req.path}")
    # The exact header needs no parsing; anything else (parameters, case) is parsed.
    if environ.get("CONTENT_TYPE") != "application/json" and (
            mimetype := req.mimetype) != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type should be application/json, got {mimetype or 'none'}")
    if simple:
        raw: bytes = environ["wsgi.input"].read(length)
        if len(raw) != length:
            raise ApiError(400, "incomplete_body",
                           f"request body ended after {len(raw)} of the {length} bytes its "
                           "Content-Length announced")
        return raw
    if chunked and environ.get("wsgi.input_terminated"):
        stream = environ["wsgi.input"]
        pieces: list[bytes] = []
        size = 0
        while size <= max_bytes:
            try:
                piece = stream.read(max_bytes + 1 - size)
            except Exception as exc:  # the server's de-chunking refused the framing
                raise ApiError(400, "malformed_body", "the chunked request body is "
                               f"malformed ({type(exc).__name__})") from exc
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
        if size > max_bytes:
            raise ApiError(413, "payload_too_large",
                           f"chunked request body is larger than the limit of {max_bytes} "
                           f"bytes for {req.path}")
        return b"".join(pieces)
    req.max_content_length = max_bytes  # Werkzeug enforces it while reading, too
    return req.get_data(cache=False)


MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have."""
MAX_INTEGER_DIGITS = 19
"""Longest integer literal (digits) a request body may hold: every int64 fits."""
MAX_NUMBER_CHARS = 64
"""Longest number literal with a fraction or exponent a request body may hold."""
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


class _LimitError(ValueError):
    """A JSON document beyond the parser's limits (a 400 with ``reason``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (an upper bound for bad JSON)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan (every keyboard body)
    codes = np.frombuffer(_STRING.sub(b"", raw), dtype=np.uint8)
    step = (np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE))
    return int(np.cumsum(step).max(initial=0))


_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _LimitError("number_too_large",
                          f"an integer has {len(literal.lstrip('-'))} digits; at most "
                          f"{MAX_INTEGER_DIGITS} are accepted")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _LimitError("number_too_large",
                          f"a number is written with {len(literal)} characters; at most "
                          f"{MAX_NUMBER_CHARS} are accepted")
    return float(literal)  # 1e999 is inf: the field validators refuse non-finite numbers


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _LimitError("duplicate_key", f"an object repeats the key {repeated[:64]!r}; "
                          "each key may appear once")
    return document


# One decoder for every body: ``json.loads`` with hooks builds a decoder and its scanner
# per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_parse_int,
                            parse_float=_parse_float)


def _loads(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, bounded depth and number sizes.

    Raises
    ------
    ApiError
        400 with reason ``malformed_json``, ``json_too_deep``, ``number_too_large`` or
        ``duplicate_key``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not UTF-8 ({exc.reason} at byte "
                       f"{exc.start}); send JSON as UTF-8") from exc
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise ApiError(400, "json_too_deep", f"body nests arrays/objects {depth} deep; at "
                       f"most {MAX_DEPTH} levels are accepted")
    try:
        return _DECODER.decode(text)
    except _LimitError as exc:
        raise ApiError(400, exc.reason, exc.detail) from exc
    except RecursionError as exc:  # the depth scan bounds this; kept as a last guard
        raise ApiError(400, "json_too_deep", "body nests arrays/objects too deeply") from exc
    except json.JSONDecodeError as exc:
        # The message holds a position, never the document's content.
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc.msg} at line "
                       f"{exc.lineno} column {exc.colno}") from exc


def json_body(max_bytes: int) -> Any:
    """The request's JSON document (strict, see :func:`_loads`), refusing bodies above
    ``max_bytes`` (413).

    Raises
    ------
    ApiError
        413 too large, 415 not JSON, 400 malformed JSON or beyond the parser's limits.
    """
    return _loads(_raw_body(max_bytes))


def parse_body(model: type[_Model], max_bytes: int) -> _Model:
    """The request's JSON body validated into ``model``: :func:`json_body` + :func:`validate`.

    Raises
    ------
    ApiError
        413 too large, 415 not JSON, 400 malformed JSON or beyond the parser's limits,
        422 invalid fields.
    """
    return validate(model, _loads(_raw_body(max_bytes)))


def validate(model: type[_Model], payload: Any) -> _Model:
    """Validate a parsed body into ``model``; 422 listing each field's problem."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request",
                       f"body should be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
                  for e in exc.errors(include_input=False, include_url=False)]
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        raise ApiError(422, "invalid_request", f"invalid request: {summary}",
                       {"errors": errors}) from exc


# ------------------------------------------------------------- suggest's one-pass path


class SuggestFields(NamedTuple):
    """A valid suggest body's fields, as :class:`SuggestRequest` names and types them."""

    language: str
    text: str
    cluster_id: int | None
    features: dict[str, str | bool | int] | None
    user_embedding: list[float] | None
    limit: int
    history: HistorySummary | None


_MAX_INT = 2**63 - 1  # msgspec's bounds are int64; larger integers take the general path
_Key = Annotated[str, msgspec.Meta(max_length=64)]
_FeatureValues = Annotated[
    dict[_Key, Annotated[str, msgspec.Meta(max_length=64)] | bool
         | Annotated[int, msgspec.Meta(ge=-_MAX_INT, le=_MAX_INT)]],
    msgspec.Meta(min_length=1, max_length=32)]


class _KeyboardSuggest(msgspec.Struct, forbid_unknown_fields=True):
    """The keyboard's suggest body — no embedding, no history — as one msgspec pass.

    Only a *subset* of what :class:`SuggestRequest` accepts: every field constraint is the
    same or narrower (integers only as JSON integers within int64, no floats anywhere,
    nesting two deep), so whatever this accepts the general path accepts with the same
    values; what it refuses goes to the general path, which gives today's error.
    ``UNSET`` marks an absent key (the duplicate-key check counts the keys present).
    """

    language: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    text: Annotated[str, msgspec.Meta(max_length=4096)]
    cluster_id: Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)] | msgspec.UnsetType | None = (
        msgspec.UNSET)
    features: _FeatureValues | msgspec.UnsetType | None = msgspec.UNSET
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] | msgspec.UnsetType = msgspec.UNSET
    user_embedding: msgspec.UnsetType | None = msgspec.UNSET
    history: msgspec.UnsetType | None = msgspec.UNSET


_KEYBOARD = msgspec.json.Decoder(_KeyboardSuggest)
_UNSET = msgspec.UNSET
_DEFAULT_LIMIT: int = SuggestRequest.model_fields["limit"].default  # one source of truth


def _keyboard_fields(raw: bytes) -> SuggestFields | None:
    """``raw`` as :class:`SuggestFields` if the one-pass decoder proves it valid, else None.

    msgspec checks UTF-8, JSON syntax, types and bounds in C but keeps the last of
    repeated keys, so the body must also prove it has none: every key is followed by a
    ``:`` outside strings, so a body with as many ``:`` bytes as keys decoded (distinct
    fields present plus feature names) repeats no key. A ``:`` in the text, a repeated
    key or anything outside the subset: None (the general path decides).
    """
    try:
        body = _KEYBOARD.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return None
    cluster_id, features, limit = body.cluster_id, body.features, body.limit
    keys = 2 + (cluster_id is not _UNSET) + (limit is not _UNSET) + (
        body.user_embedding is not _UNSET) + (body.history is not _UNSET)
    if features is not _UNSET:
        keys += 1 + (0 if features is None else len(features))
        features_value = features
    else:
        features_value = None
    if raw.count(b":") != keys:
        return None
    cluster = None if cluster_id is _UNSET else cluster_id
    if (cluster is None) == (features_value is None):
        return None  # the general path names the problem
    return SuggestFields(body.language, body.text, cluster, features_value, None,
                         _DEFAULT_LIMIT if limit is _UNSET else limit, None)


def parse_suggest(max_bytes: int) -> SuggestFields | SuggestRequest:
    """The request's suggest body, valid: :func:`parse_body` of :class:`SuggestRequest`.

    The keyboard's body (no embedding, no history) is decided in one msgspec pass when
    it is provably valid (:func:`_keyboard_fields`); every other body — and every invalid
    one, so each error is the general path's — goes through the strict JSON parser and
    the pydantic model. Both give the same field values for a body both accept.

    Raises
    ------
    ApiError
        As :func:`parse_body`.
    """
    raw = _raw_body(max_bytes)
    fields = _keyboard_fields(raw)
    if fields is not None:
        return fields
    return validate(SuggestRequest, _loads(raw))
