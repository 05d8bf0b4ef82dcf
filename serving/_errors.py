"""HTTP errors as RFC 9457 problem details (``application/problem+json``).

Every error response, ours or Werkzeug's (404 route, 405, 413 body too large), goes out
as ``{"type", "title", "status", "detail", "instance"}`` with a ``detail`` a client can
act on. Errors are raised as :class:`ApiError` at the HTTP edge and rendered in one place.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

from flask import Flask, Response, json, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from data import InputError, StickerSuggestError
from federated import (
    FederatedConfigError,
    FederatedError,
    PrivacyBudgetError,
    SecAggProtocolError,
    TokenError,
    UploadError,
)

__all__ = ["PROBLEM_JSON", "ApiError", "FiniteJSONProvider", "federated_problem",
           "problem_response", "public_detail", "register_error_handlers"]

PROBLEM_JSON = "application/problem+json"

_INPUT_STATUS = {"unknown_cluster": 404}
"""HTTP status of an input error by its ``reason`` (any other: 422)."""


class ApiError(StickerSuggestError):
    """An error with an HTTP status, a short machine-readable ``reason`` and a ``detail``.

    Parameters
    ----------
    status : int
        HTTP status (4xx for the caller's mistakes, 503 for "not ready").
    reason : str
        Stable slug (``malformed_json``, ``stale_round`` ...); also the metrics label.
    detail : str
        One sentence stating the value and what was expected.
    extra : dict, optional
        More members of the problem object (e.g. ``errors`` from validation).
    """

    def __init__(self, status: int, reason: str, detail: str,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.extra = extra or {}


_TITLES = {
    400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    500: "Internal Server Error", 503: "Service Unavailable",
}


# an absolute path (not one of this API's own URL paths, which details may cite)
_PATH = re.compile(r"(?<![\w.])(?!/v1/|/demo/|/problems/)(?:/[^\s/'\":,;()]+)+/?")


def public_detail(detail: str) -> str:
    """``detail`` with every absolute filesystem path cut to its last component.

    Artifact and store errors name the files they failed on, which is what an operator's
    log needs and no client may see (it maps the server's disk).
    """
    return _PATH.sub(lambda m: m.group().rstrip("/").rpartition("/")[2] or "/", detail)


def problem_response(status: int, reason: str, detail: str,
                     extra: dict[str, Any] | None = None) -> Response:
    """A problem-details response (``detail`` through :func:`public_detail`)."""
    body = {"type": f"/problems/{reason}", "title": _TITLES.get(status, "Error"),
            "status": status, "detail": public_detail(detail), "instance": request.path,
            **(extra or {})}
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, refusing NaN and infinities (they are not JSON): a response
    that would carry one fails as a 500 problem instead of going out invalid."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``json.dumps`` with ``allow_nan=False``."""
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


# The federated platform's errors, most specific first: (class, status, reason). Its
# root, FederatedError, is its own (not the project's StickerSuggestError): callers catch
# it first and map it here.
_FEDERATED: list[tuple[type[FederatedError], int, str]] = [
    (UploadError, 422, "invalid_update"),
    (TokenError, 403, "invalid_token"),
    (SecAggProtocolError, 409, "protocol_error"),
    (PrivacyBudgetError, 409, "privacy_budget_exhausted"),
    (FederatedConfigError, 500, "federated_config_error"),
]


def federated_problem(exc: FederatedError) -> ApiError:
    """The problem of an error of the federated platform (status by its class; any other
    ``FederatedError``: 500 ``federated_error``). Its message is the platform's, about
    the round, config or protocol, never request content; paths are cut as everywhere."""
    for cls, status, reason in _FEDERATED:
        if isinstance(exc, cls):
            return ApiError(status, reason, str(exc))
    return ApiError(500, "federated_error", f"the federated platform failed: {exc}")


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    """Render :class:`ApiError`, the reranker's input errors and every Werkzeug HTTP error
    as problem details.

    :class:`data.InputError` — ``reranker.RerankerInputError`` and its subclasses, the
    reranker's own validation of a request's language, cluster, embedding and limit — is
    translated here and nowhere else: its ``reason`` is the problem type, the status 422
    (404 for ``unknown_cluster``); its message names the input, never the typed text.
    (The base lives in ``data`` so that building the app does not import the reranker:
    its import takes seconds of CPU.)
    """

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return problem_response(exc.status, exc.reason, exc.detail, exc.extra)

    @app.errorhandler(FederatedError)
    def _federated_error(exc: FederatedError) -> Response:
        problem = federated_problem(exc)
        if problem.status >= 500:
            app.logger.error("federated platform error on %s: %s", request.path,
                             type(exc).__name__)
        return problem_response(problem.status, problem.reason, problem.detail)

    @app.errorhandler(InputError)
    def _input_error(exc: InputError) -> Response:
        return problem_response(_INPUT_STATUS.get(exc.reason, 422), exc.reason, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            limit = request.max_content_length
            detail = (f"request body is larger than the limit of {limit} bytes for "
                      f"{request.path}" if limit else "request body is too large")
            return problem_response(413, "payload_too_large", detail)
        detail = exc.description or exc.name
        response = problem_response(status, _slug(exc.name), detail)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Never echo the exception: it could hold request content (typed text).
        # The frames without the message, which could quote request content.
        app.logger.error("unhandled %s on %s:\n%s", type(exc).__name__, request.path,
                         "".join(traceback.format_tb(exc.__traceback__)))
        return problem_response(500, "internal_error",
                                "the server failed to handle this request; it was logged")
