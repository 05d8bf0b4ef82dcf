"""Issue #19 with ``app.test_client()``: each finding that the app itself answers.

Metric cardinality, the inputs that gave 500, invalid JSON in a 200, the contract gaps
(chunked bodies over the limit, UTF-16, strict upload types, duplicate keys, unknown
feature values), the privacy statement of the model endpoint, the reranker-version
setting, and that every serving setting is used.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_serving_support import build_var, fake_app, publish_fake_reranker, upload
from werkzeug.test import TestResponse

import data
from serving import INSTALL_ID_HEADER, PROBLEM_JSON, ServingConfig
from serving.http import privacy_statement


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("hardening-var"))


@pytest.fixture()
def app(var: Path, tmp_path: Path) -> Flask:
    return fake_app(var, store_path=tmp_path / "updates.sqlite3")


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def problem(response: TestResponse, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json()
    assert body["status"] == status and body["detail"]
    if reason is not None:
        assert body["type"] == f"/problems/{reason}", body
    return body


def test_random_methods_leave_metrics_the_same_size(client: FlaskClient) -> None:
    """1,000 requests with random methods (and random paths) do not grow /metrics."""
    rng = random.Random(19)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def burst(n: int) -> None:
        for _ in range(n):
            method = "".join(rng.choice(letters) for _ in range(rng.randint(3, 12)))
            path = rng.choice(["/healthz", "/v1/suggest", f"/x{rng.random()}"])
            assert client.open(path, method=method).status_code in (404, 405)

    def series() -> list[str]:  # every sample's name and labels (values change, of course)
        text = client.get("/metrics").get_data(as_text=True)
        return [line.rpartition(" ")[0] for line in text.splitlines()
                if line and not line.startswith("#")]

    burst(50)  # the first unknown methods and paths create their few series (404, 405)
    series()  # the scrape's own series
    before = series()
    burst(1000)
    after = series()
    assert after == before
    assert any('method="other"' in s for s in after)
    assert any('endpoint="unmatched"' in s for s in after)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


SUGGEST_500S = [  # (body, status, reason): each gave a 500 before #19
    (_deep(2500), 400, "json_too_deep"),
    ('{"language":"en","cluster_id":0,"text":' + _deep(2500) + "}", 400, "json_too_deep"),
    ('{"language":"en","text":"a","cluster_id":0,"user_embedding":[' + "9" * 400
     + ",0,0,0]}", 400, "number_too_large"),
    ('{"language":"en","text":"a","cluster_id":0,"n":' + "1" * 5000 + "}", 400,
     "number_too_large"),
]
UPLOAD_500S = [
    (_deep(2500), 400, "json_too_deep"),
    ("UPLOAD_WITH_HUGE", 400, "number_too_large"),  # one 10**400 in delta
    ('{"round":' + "1" * 5000 + "}", 400, "number_too_large"),
]


@pytest.mark.parametrize(("body", "status", "reason"), SUGGEST_500S)
def test_suggest_inputs_that_gave_500_give_their_4xx(client: FlaskClient, body: str, status: int,
                                                     reason: str) -> None:
    problem(client.post("/v1/suggest", data=body, content_type="application/json"),
            status, reason)


@pytest.mark.parametrize(("body", "status", "reason"), UPLOAD_500S)
def test_upload_inputs_that_gave_500_give_their_4xx(app: Flask, client: FlaskClient, body: str,
                                                    status: int, reason: str) -> None:
    client.get("/v1/federated/rounds/current")
    if body == "UPLOAD_WITH_HUGE":
        payload = upload()
        body = json.dumps(payload).replace(repr(payload["delta"][0]), "1" + "0" * 400, 1)
    problem(client.post("/v1/federated/updates", data=body,
                        content_type="application/json"), status, reason)


def test_no_non_finite_number_in_a_200(client: FlaskClient) -> None:
    """``user_embedding=[3e38]*d`` returned ``"score": NaN``; now it is refused."""
    body = {"language": "en", "text": "thanks", "cluster_id": 0, "user_embedding": [3e38] * 4}
    problem(client.post("/v1/suggest", json=body), 422, "invalid_request")
    ok = client.post("/v1/suggest", json={**body, "user_embedding": [1000.0] * 4})
    assert ok.status_code == 200 and json.loads(ok.data, parse_constant=pytest.fail)


def test_chunked_body_over_the_limit_is_413_not_cut(app: Flask, client: FlaskClient) -> None:
    client.get("/v1/federated/rounds/current")
    limit = app.extensions["sticker_serving"].config.max_update_bytes
    valid = json.dumps(upload())
    padded = valid + " " * (limit + 10 - len(valid))  # valid JSON if cut at the limit
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    response = client.post("/v1/federated/updates", data=padded,
                           content_type="application/json", environ_overrides=chunked)
    problem(response, 413, "payload_too_large")
    ok = client.post("/v1/federated/updates", data=valid, content_type="application/json",
                     environ_overrides=chunked)
    assert ok.status_code == 202


@pytest.mark.parametrize(("case", "raw", "reason"), [
    ("utf-16", json.dumps(upload()).encode("utf-16"), "malformed_json"),
    ("duplicate key", json.dumps(upload())[:-1].encode() + b', "round": 0}', "duplicate_key"),
    ("delta as strings", json.dumps({**upload(), "delta": ["0.01"] * 16}).encode(),
     "invalid_update"),
    ("delta as booleans", json.dumps({**upload(), "delta": [True] * 16}).encode(),
     "invalid_update"),
    ("delta with null", json.dumps({**upload(), "delta": [None] * 16}).encode(),
     "invalid_update"),
])
def test_uploads_are_strict(app: Flask, client: FlaskClient, case: str, raw: bytes,
                            reason: str) -> None:
    client.get("/v1/federated/rounds/current")
    problem(client.post("/v1/federated/updates", data=raw, content_type="application/json"),
            422 if reason == "invalid_update" else 400, reason)
    config = app.extensions["sticker_serving"].config
    from serving import UpdateStore
    with UpdateStore(config.resolved_store_path) as store:
        assert store.count_updates() == 0


def test_unknown_feature_values_are_refused(client: FlaskClient) -> None:
    known = {"language": "th", "region": "TH", "subscriber": True}
    assert client.post("/v1/assign", json={"features": known}).status_code == 200
    for name, value in (("language", "xx"), ("region", "Atlantis"), ("subscriber", 7)):
        body = problem(client.post("/v1/assign", json={"features": {**known, name: value}}),
                       422, "unknown_feature_value")
        assert f"features.{name}" in body["detail"]
        problem(client.post("/v1/suggest", json={"language": "en", "text": "a",
                                                 "features": {name: value}}),
                422, "unknown_feature_value")


def test_reranker_version_setting_picks_what_suggest_serves(var: Path, tmp_path: Path) -> None:
    """The ``reranker_version`` setting had no effect on suggestions."""
    root = tmp_path / "var"
    for kind in ("stage1",):
        source = data.resolve_artifact(var / kind, "latest")
        (root / kind).mkdir(parents=True)
        import shutil
        shutil.copytree(source, root / kind / source.name)
        data.set_latest(root / kind, source.name)
    old = publish_fake_reranker(root, tag="old").name
    new = publish_fake_reranker(root, tag="new").name
    assert data.resolve_artifact(root / "reranker", "latest").name == new
    body = {"language": "en", "text": "hi", "cluster_id": 0}
    for setting, served in (("latest", new), (old, old)):
        client = fake_app(root, store_path=tmp_path / f"{setting}.sqlite3",
                          reranker_version=setting).test_client()
        assert client.post("/v1/suggest", json=body).get_json()["versions"]["reranker"] == served
        model = client.get("/v1/models/reranker", headers={INSTALL_ID_HEADER: "install-1234"})
        assert model.get_json()["reranker_version"] == served


def test_model_endpoint_states_the_headline_and_each_assumption(client: FlaskClient) -> None:
    privacy = client.get("/v1/models/reranker",
                         headers={INSTALL_ID_HEADER: "install-1234"}).get_json()["privacy"]
    # the fake artifact's old-style file: only {"epsilon": {"secure_sum": 1.0}}
    assert privacy["headline"] is None and privacy["epsilon"] is None
    assert privacy["guarantees"] == [{
        "kind": "secure_sum", "epsilon": 1.0, "delta": 1e-6, "assumption": None,
        "assumption_met": False, "label": "if secure aggregation were in place"}]


def test_privacy_statement_of_old_and_new_files() -> None:
    epsilons = {"local": 9.0, "device_local": 300.0, "shuffle": 5.0, "secure_sum": 2.5}
    old: dict[str, Any] = {
        "delta": 1e-6, "epsilon": epsilons,
        "guarantees": {k: {"epsilon": e, "delta": 1e-6, "assumption": f"about {k}"}
                          for k, e in (("local", 9.0), ("device_local", 300.0),
                                       ("shuffle", 5.0), ("secure_sum", 2.5))}}
    statement = privacy_statement(old)
    assert statement["headline"] == "local" and statement["epsilon"] == 9.0
    assert [g["kind"] for g in statement["guarantees"]] == [
        "local", "device_local", "secure_sum", "shuffle"]
    assert [g["assumption_met"] for g in statement["guarantees"]] == [True, True, False, False]
    assert statement["guarantees"][2]["label"] == "if secure aggregation were in place"
    assert statement["guarantees"][3]["label"] == "if anonymous shuffling were in place"
    new = {**old, "headline": "device_local",
           "guarantees": {k: {**g, "assumption_met": k != "shuffle"}
                          for k, g in old["guarantees"].items()}}
    statement = privacy_statement(new)  # secure_sum met: built; the file names its headline
    assert statement["headline"] == "device_local"
    assert statement["guarantees"][0]["kind"] == "device_local"
    assert [g["kind"] for g in statement["guarantees"]] == [
        "device_local", "secure_sum", "local", "shuffle"]
    unbounded = privacy_statement({"epsilon": {"local": float("inf")}})
    assert unbounded["headline"] is None and unbounded["guarantees"][0]["epsilon"] is None
    assert privacy_statement(None) == {"headline": None, "epsilon": None, "delta": None,
                                       "guarantees": []}


def test_every_serving_setting_is_used() -> None:
    """No setting without an effect: each field is read outside the config module."""
    root = Path(__file__).resolve().parents[1] / "serving"
    used: set[str] = set()
    for path in root.glob("*.py"):
        if path.name == "_config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                used.add(node.arg)
    config_module = ast.parse((root / "_config.py").read_text())
    for node in ast.walk(config_module):  # fields read by the config's own accessors
        if isinstance(node, ast.FunctionDef) and node.name in used:
            used |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    unused = sorted(set(ServingConfig.model_fields) - used)
    assert not unused, f"serving settings nothing reads: {unused}"
