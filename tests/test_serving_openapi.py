"""An HTTP endpoint is one file (issue #14): its route and its OpenAPI entry together.

A blueprint's module declares the paths and schemas of its routes with
``@serving.http.documents(blueprint)``, next to the view functions; ``/openapi.json``
merges the fragments of the blueprints the app registered. Here a blueprint written in
this file alone — a route and its fragment — is served and documented, and the document
still lists every route and only those.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
from flask import Blueprint, Flask, Response, jsonify
from test_serving_support import build_var, fake_app

import serving._openapi as openapi_module
from serving import ServingConfig
from serving.http import DocumentContext, Fragment, documents, openapi_document


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("openapi-var"))


@pytest.fixture()
def fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the fragment registry, so this file's blueprint does not outlive the test
    (the registry is a private module's dict: the only place to isolate it)."""
    monkeypatch.setattr(openapi_module, "_FRAGMENTS", dict(openapi_module._FRAGMENTS))


def _routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # <int:x> -> {x}
        assert rule.methods is not None, rule.rule  # Flask gives every rule its methods
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_a_blueprint_module_documents_its_own_routes(var: Path, tmp_path: Path,
                                                     fragments: None) -> None:
    # --- what one new endpoint file holds: the blueprint, its route, its fragment
    echo = Blueprint("echo", __name__, url_prefix="/v1")

    @echo.get("/echo/<int:times>")
    def repeat(times: int) -> Response:
        return jsonify({"times": times, "text": "hi " * times})

    @documents(echo)
    def _openapi(context: DocumentContext) -> Fragment:
        return Fragment(
            paths={"/v1/echo/{times}": {"get": {
                "summary": "Echo", "operationId": "echo",
                "parameters": [{"name": "times", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0,
                                           "maximum": context.config.max_limit}}],
                "responses": {"200": {"description": "The echo", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Echo"}}}}}}}},
            schemas={"Echo": {"type": "object", "required": ["times", "text"],
                              "properties": {"times": {"type": "integer"},
                                             "text": {"type": "string"}}}})
    # ---
    app = fake_app(var, store_path=tmp_path / "u.sqlite3")
    app.register_blueprint(echo)
    client = app.test_client()
    doc = client.get("/openapi.json").get_json()
    operation = doc["paths"]["/v1/echo/{times}"]["get"]
    assert operation["parameters"][0]["schema"]["maximum"] == ServingConfig.load(
        environ={}).max_limit
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert _routes(app) == documented
    response = client.get("/v1/echo/2")
    assert response.status_code == 200
    jsonschema.validate(response.get_json(), {**doc["components"]["schemas"]["Echo"]})
    # the other blueprints' paths are where they were: /v1 first, then operations
    paths = list(doc["paths"])
    assert paths.index("/v1/suggest") < paths.index("/healthz") < paths.index(
        "/v1/echo/{times}")


def test_a_registered_blueprint_without_a_fragment_is_named(var: Path) -> None:
    config = ServingConfig.load(environ={}, var=var)
    with pytest.raises(LookupError, match=r"\['undocumented'\] have no OpenAPI fragment"):
        openapi_document(config, registered=["api", "undocumented"])
    # an unregistered blueprint's paths stay out; its schemas are the API's vocabulary
    doc = openapi_document(config, registered=["ops"])
    assert set(doc["paths"]) == {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    assert {"Problem", "SuggestRequest", "Health", "DemoUsers"} <= set(
        doc["components"]["schemas"])
