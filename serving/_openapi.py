"""The OpenAPI 3.1 document of the server, assembled from its blueprints' fragments.

Each blueprint module documents its own routes next to their view functions: a function
``(DocumentContext) -> Fragment`` decorated ``@documents(blueprint)`` returns the routes'
paths and the component schemas they refer to. :func:`openapi_document` merges the paths
of the blueprints the app registered, in registration order, and the schemas of every
documented blueprint (the API's vocabulary), after the shared ``Problem`` schema of the
error responses. Request schemas come from the pydantic models that validate them, so the
document and the validation cannot drift; the tests check every route is documented, every
documented route exists, and real responses validate against the documented schemas.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint

from serving._config import ServingConfig
from serving._errors import PROBLEM_JSON
from serving._requests import MAX_DEPTH, MAX_INTEGER_DIGITS

__all__ = [
    "BOOL",
    "INT",
    "NUM",
    "STR",
    "DocumentContext",
    "Fragment",
    "ServedFacts",
    "documents",
    "json_response",
    "obj",
    "openapi_document",
    "problem",
    "ref",
]


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


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A JSON response whose body follows ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def problem(description: str) -> dict[str, Any]:
    """An RFC 9457 problem-details response (the ``Problem`` schema)."""
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": ref("Problem")}}}


def obj(properties: dict[str, Any], required: list[str] | None = None,
        additional: bool = True) -> dict[str, Any]:
    """An object schema; every property required unless ``required`` says otherwise."""
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "required": required if required is not None else list(properties)}
    if not additional:
        out["additionalProperties"] = False
    return out


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}


@dataclass(frozen=True)
class DocumentContext:
    """What a fragment may state: the limits of the config and the served facts.

    Attributes
    ----------
    config : ServingConfig
    facts : ServedFacts, optional
        None while no models are loaded.
    """

    config: ServingConfig
    facts: ServedFacts | None = None

    @property
    def json_errors(self) -> dict[str, Any]:
        """The problem responses every JSON endpoint shares: 400, 413, 415, 422, 503."""
        return {"400": problem(f"Malformed JSON (UTF-8 only, no duplicate keys, nesting <= "
                               f"{MAX_DEPTH}, integers <= {MAX_INTEGER_DIGITS} digits), or a "
                               "body shorter than its Content-Length"),
                "413": problem(f"Body larger than {self.config.max_request_bytes} bytes"),
                "415": problem("Content-Type is not application/json"),
                "422": problem("Wrong types or values (each field listed in `errors`)"),
                "503": problem("No verified models are loaded yet")}


@dataclass(frozen=True)
class Fragment:
    """A blueprint's part of the document.

    Attributes
    ----------
    paths : dict
        OpenAPI path items of the blueprint's routes, keyed by path (``{name}`` for a path
        parameter).
    schemas : dict
        Component schemas the paths refer to (``ref(name)``).
    """

    paths: dict[str, Any] = field(default_factory=dict)
    schemas: dict[str, Any] = field(default_factory=dict)


FragmentFunction = Callable[[DocumentContext], Fragment]
_FRAGMENTS: dict[str, FragmentFunction] = {}


def documents(blueprint: Blueprint) -> Callable[[FragmentFunction], FragmentFunction]:
    """Decorator: the decorated function is the OpenAPI fragment of ``blueprint``'s routes.

    Written in the blueprint's module, next to the view functions it documents.
    """
    def decorate(function: FragmentFunction) -> FragmentFunction:
        _FRAGMENTS[blueprint.name] = function
        return function

    return decorate


def openapi_document(config: ServingConfig, facts: ServedFacts | None = None, *,
                     registered: Collection[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document: limits from ``config``, and from ``facts`` (when models
    are loaded) the served languages, clusters, embedding length, feature values and the
    open round, so that every schema-valid request is accepted.

    Parameters
    ----------
    config : ServingConfig
    facts : ServedFacts, optional
    registered : collection of str
        Names of the blueprints the app registered, in registration order (an app's
        ``app.blueprints``): their paths are documented.

    Raises
    ------
    LookupError
        If a registered blueprint has no fragment (``@documents(blueprint)``).
    """
    missing = [name for name in registered if name not in _FRAGMENTS]
    if missing:
        raise LookupError(f"blueprint(s) {missing} have no OpenAPI fragment: decorate a "
                          "function (DocumentContext) -> Fragment with @documents(blueprint) "
                          "next to their routes")
    context = DocumentContext(config, facts)
    order = [*registered, *(name for name in _FRAGMENTS if name not in registered)]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Problem": obj({"type": STR, "title": STR, "status": INT, "detail": STR,
                        "instance": STR,
                        "errors": {"type": "array", "items": obj({"field": STR,
                                                                  "problem": STR})}},
                       ["type", "title", "status", "detail"])}
    for name in order:
        fragment = _FRAGMENTS[name](context)
        if name in registered:
            paths.update(fragment.paths)
        schemas.update(fragment.schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sticker-suggest", "version": "1",
                 "description": "Sticker suggestions, device bundles, reranker models and "
                                "federated update uploads. Errors are RFC 9457 problem "
                                "details (application/problem+json)."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
