"""The HTTP contract with ``app.test_client()``: every endpoint and every error.

Each rejected request must give the right 4xx as problem+json with a ``detail`` and
store nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import numpy as np
import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving_support import (
    FED_CONFIG,
    N_PARAMETERS,
    build_var,
    fake_app,
    publish_fake_reranker,
    upload,
)
from werkzeug.test import TestResponse

from serving import (
    INSTALL_ID_HEADER,
    PROBLEM_JSON,
    ApiError,
    ArmConfig,
    ExperimentConfig,
    ServingConfig,
    UpdateStore,
    aggregate_round,
    assign_arm,
    bucket,
)
from serving.http import NonFiniteScoreError, SuggestEncoder, SuggestRequest, parse_body

SECRET_TEXT = "zq-secret-typed-text-9731"


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("serving-var"))


@pytest.fixture()
def app(var: Path, tmp_path: Path) -> Flask:
    """A fresh app with its own (empty) update store."""
    return fake_app(var, store_path=tmp_path / "updates.sqlite3")


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def store_count(app: Flask) -> int:
    with UpdateStore(app.extensions["sticker_serving"].config.resolved_store_path) as store:
        return store.count_updates()


def assert_problem(response: TestResponse, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["status"] == status and body["detail"]
    if reason is not None:
        assert body["type"] == f"/problems/{reason}"
    return body


# ---------------------------------------------------------------------------- ops


def test_health_and_ready(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.get_json()["versions"]) >= {"stage1", "reranker:latest"}


def test_not_ready_without_artifacts(tmp_path: Path) -> None:
    app = fake_app(tmp_path / "empty-var")
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    body = assert_problem(client.get("/readyz"), 503, "not_ready")
    assert "no published version" in body["detail"]
    assert_problem(client.post("/v1/suggest", json={"language": "en", "text": "",
                                                    "cluster_id": 0}), 503)


def test_unknown_route_and_method_are_problems(client: FlaskClient) -> None:
    assert_problem(client.get("/v1/nothing"), 404)
    assert_problem(client.get("/v1/suggest"), 405)


# ---------------------------------------------------------------------------- suggest


def test_suggest_by_cluster(client: FlaskClient) -> None:
    response = client.post("/v1/suggest", json={"language": "ja", "text": "ありがと",
                                                "cluster_id": 1, "limit": 7})
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["stickers"]) == 7 and body["cluster_id"] == 1
    assert body["arm"] == "control" and set(body["versions"]) == {"stage1", "reranker"}
    scores = [s["score"] for s in body["stickers"]]
    assert scores == sorted(scores, reverse=True)
    assert set(body["stickers"][0]) == {"sticker_id", "package_id", "labels", "emojis",
                                        "character", "score"}


def test_suggest_cold_start_and_embedding(client: FlaskClient, var: Path) -> None:
    features = {"language": "th", "region": "TH", "subscriber": True}
    body = client.post("/v1/suggest", json={"language": "th", "text": "hi",
                                            "features": features, "user_embedding":
                                            [0.1, 0, -0.2, 1]}).get_json()
    assigned = client.post("/v1/assign", json={"features": features}).get_json()
    assert body["cluster_id"] == assigned["cluster_id"]
    assert len(body["stickers"]) == 5  # the default limit


@pytest.mark.parametrize(("payload", "status", "reason"), [
    ({"language": 3, "text": "hi", "cluster_id": 0}, 422, "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": "0"}, 422, "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "limit": 51}, 422, "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "limit": 0}, 422, "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "limit": 2.5}, 422, "invalid_request"),
    ({"language": "en", "text": "hi"}, 422, "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "features": {}}, 422,
     "invalid_request"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "user_id": 7}, 422, "invalid_request"),
    ({"language": "xx", "text": "hi", "cluster_id": 0}, 422, "unknown_language"),
    ({"language": "en", "text": "hi", "cluster_id": 999}, 404, "unknown_cluster"),
    ({"language": "en", "text": "hi", "features": {"shoe_size": "42"}}, 422,
     "unknown_feature"),
    ({"language": "en", "text": "hi", "cluster_id": 0, "user_embedding": [1, 2]}, 422,
     "invalid_request"),
    ({"language": "en", "text": "x" * 300, "cluster_id": 0}, 422, "invalid_request"),
    ([1, 2, 3], 422, "invalid_request"),
])
def test_suggest_rejects(client: FlaskClient, payload: object, status: int, reason: str) -> None:
    assert_problem(client.post("/v1/suggest", json=payload), status, reason)


def test_suggest_rejects_nan_and_infinity_in_embedding(client: FlaskClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = ('{"language": "en", "text": "hi", "cluster_id": 0, '
               f'"user_embedding": [0.1, {literal}, 0.0, 0.0]}}')
        body = assert_problem(client.post("/v1/suggest", data=raw,
                                          content_type="application/json"), 422)
        assert "finite" in body["detail"]


def test_malformed_json_wrong_media_type_and_oversized(client: FlaskClient) -> None:
    body = assert_problem(client.post("/v1/suggest", data='{"language": "en",',
                                      content_type="application/json"), 400, "malformed_json")
    assert "line 1" in body["detail"]
    assert_problem(client.post("/v1/suggest", data="language=en"), 415)
    huge = json.dumps({"language": "en", "text": "a" * 70_000, "cluster_id": 0})
    assert_problem(client.post("/v1/suggest", data=huge, content_type="application/json"),
                   413, "payload_too_large")


def test_body_shorter_than_its_content_length_and_chunked_bodies(client: FlaskClient) -> None:
    raw = b'{"language":"en","text":"thank","cluster_id":0}'
    body = assert_problem(client.post("/v1/suggest", data=raw, content_type="application/json",
                                      environ_overrides={"CONTENT_LENGTH": str(len(raw) + 5)}),
                          400, "incomplete_body")
    assert f"after {len(raw)} of the {len(raw) + 5} bytes" in body["detail"]
    # chunked: the length header is ignored and Werkzeug reads the terminated stream
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True,
               "CONTENT_LENGTH": "3"}
    response = client.post("/v1/suggest", data=raw, content_type="application/json",
                           environ_overrides=chunked)
    assert response.status_code == 200, response.get_json()
    plain = client.post("/v1/suggest", data=raw, content_type="application/json")
    assert response.get_json()["stickers"] == plain.get_json()["stickers"]
    # a length that is not a plain number also goes through Werkzeug (it reads it as 0)
    assert_problem(client.post("/v1/suggest", data=raw, content_type="application/json",
                               environ_overrides={"CONTENT_LENGTH": "+48"}),
                   400, "malformed_json")


Problem = tuple[int, str, str, dict[str, Any]]
"""An ApiError as (status, reason, detail, extra)."""


def _outcome(app: Flask, parse: Callable[[], SuggestRequest], raw: bytes
             ) -> SuggestRequest | Problem:
    """What a request-body parser makes of ``raw``: the model, or the problem it raises."""
    with app.test_request_context("/v1/suggest", method="POST", data=raw,
                                  content_type="application/json"):
        try:
            return parse()
        except ApiError as exc:
            return (exc.status, exc.reason, exc.detail, exc.extra)


def _parse(app: Flask, raw: bytes) -> SuggestRequest | Problem:
    outcome = _outcome(app, lambda: parse_body(SuggestRequest, 64 * 1024), raw)
    # every body is a valid request or a 4xx problem, never another exception (a 500)
    assert isinstance(outcome, SuggestRequest) or 400 <= outcome[0] < 500, outcome
    return outcome


TRICKY_BODIES: list[tuple[bytes, object]] = [
    (b'{"language":"en","text":"hi","cluster_id":0}', "ok"),
    (b' {"language":"en","text":"hi","cluster_id":0}\n', "ok"),
    (b'\xef\xbb\xbf{"language":"en","text":"hi","cluster_id":0}', "malformed_json"),  # BOM
    ('{"language":"en","text":"hi","cluster_id":0}'.encode("utf-16"), "malformed_json"),
    ('{"language":"en","text":"hi","cluster_id":0}'.encode("utf-16-le"), "malformed_json"),
    (b'{"language":"en","text":"\\ud800","cluster_id":0}', "invalid_request"),  # surrogate
    (b'{"language":"en","text":"\\u00e9\\u0000","cluster_id":0}', "ok"),
    (b'{"language":"en","text":"a","cluster_id":0,"cluster_id":1}', "duplicate_key"),
    (b'{"language":"en","text":"a","features":{"x":1,"x":1}}', "duplicate_key"),
    (b'{"language":"en","text":"a","cluster_id":1.0}', "ok"),  # JSON: 1.0 is the integer 1
    (b'{"language":"en","text":"a","cluster_id":1.5}', "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":-0}', "ok"),
    (b'{"language":"en","text":"a","cluster_id":100000000000000000000000000}',
     "number_too_large"),
    (b'{"language":"en","text":"a","cluster_id":0,"limit":5.0}', "ok"),
    (b'{"language":"en","text":"a","cluster_id":0,"limit":"5"}', "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[NaN,0,0,0]}',
     "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[1e999,0,0,0]}',
     "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[3e38,0,0,0]}',
     "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[true,0,0,0]}',
     "invalid_request"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[5e-324,-0.0,1E2,3]}',
     "ok"),
    (b'{"language":"en","text":"a","cluster_id":0,"user_embedding":[' + b"9" * 400 + b"]}",
     "number_too_large"),
    (b'{"language":"en","text":"a","cluster_id":0,"x":' + b"7" * 5000 + b"}",
     "number_too_large"),
    (b'{"language":"en","text":"a","cluster_id":0,"x":0.' + b"7" * 5000 + b"}",
     "number_too_large"),
    (b'{"language":"en","text":"a","features":{"age":1.5}}', "invalid_request"),
    (b'{"language":"en","text":"a","features":{"subscriber":true,"n":10000000000000000000000}}',
     "number_too_large"),
    (b'{"language":"en","text":"a","cluster_id":0,"extra":null}', "invalid_request"),
    (b'[{"language":"en","text":"a","cluster_id":0}]', "invalid_request"),
    (b'"text"', "invalid_request"), (b"null", "invalid_request"), (b"", "malformed_json"),
    (b"{", "malformed_json"), (b'{"language":"en",}', "malformed_json"),
    (b"\xff\xfe\xfd", "malformed_json"),
    # issue #19: nesting 2,000+ deep gave 500, in the body or inside ``text``'s place
    (b"[" * 2500 + b"]" * 2500, "json_too_deep"),
    (b'{"language":"en","cluster_id":0,"text":' + b"[" * 3000 + b"]" * 3000 + b"}",
     "json_too_deep"),
    (b"[" * 60_000, "json_too_deep"),
    (b'{"language":"en","cluster_id":0,"text":"' + b"[" * 3000 + b'"}', "ok"),  # in a string
]


@pytest.mark.parametrize(("raw", "expected"), TRICKY_BODIES)
def test_every_body_is_a_request_or_its_4xx(app: Flask, raw: bytes, expected: str) -> None:
    outcome = _parse(app, raw)
    got = "ok" if isinstance(outcome, SuggestRequest) else outcome[1]
    assert got == expected, outcome


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(
    st.sampled_from(["language", "text", "cluster_id", "features", "user_embedding",
                     "limit", "other"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                 max_leaves=8)))
def test_generated_bodies_are_requests_or_4xx(app: Flask, document: dict) -> None:
    _parse(app, json.dumps(document).encode())


_NUMBER = st.integers(-(2**70), 2**70) | st.floats()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries(
    {"language": st.sampled_from(["en", "ja"]) | st.text(max_size=20) | _NUMBER,
     "text": st.text(max_size=40)},
    optional={"cluster_id": st.integers(-3, 2**65) | st.floats() | st.none(),
              "limit": st.integers(-1, 60) | st.floats(),
              "features": st.dictionaries(st.text(max_size=70), st.booleans() | _NUMBER
                                          | st.text(max_size=5), max_size=3),
              "user_embedding": st.lists(_NUMBER | st.booleans(), max_size=5)}),
       st.booleans(), st.sampled_from(["utf-8", "utf-16", "utf-32"]))
def test_suggest_like_bodies_are_requests_or_4xx(app: Flask, document: dict,
                                                 ascii_only: bool, encoding: str) -> None:
    text = json.dumps(document, ensure_ascii=ascii_only)
    outcome = _parse(app, text.encode(encoding))
    if encoding != "utf-8":
        assert not isinstance(outcome, SuggestRequest) and outcome[1] == "malformed_json"


def test_suggest_response_is_compact_json_as_jsonify_writes_it(var: Path, tmp_path: Path
                                                               ) -> None:
    payload = {"language": "ja", "text": "ありがと", "cluster_id": 1, "limit": 4}
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    response = app.test_client().post("/v1/suggest", json=payload)
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    with app.test_request_context():
        assert response.get_data() == jsonify(document).get_data()  # ASCII escapes, compact
    assert response.get_data().endswith(b"}\n") and b" " not in response.get_data()
    debug = fake_app(var, store_path=tmp_path / "updates.sqlite3", debug=True)
    pretty = debug.test_client().post("/v1/suggest", json=payload)
    assert pretty.get_json() == document and b'\n  "stickers": [' in pretty.get_data()


class _Described:
    def __init__(self, labels: list[str], emojis: list[str], character: str) -> None:
        self.labels, self.emojis, self.character = labels, emojis, character


class _Describer:
    def __init__(self) -> None:
        self.calls = 0

    def describe(self, sticker_id: int, package_id: int) -> _Described:
        self.calls += 1
        return _Described([f"l{sticker_id}", 'q"uote\\'], ["🙏", "é"],
                          f"Char «{package_id}» </script>")


def test_suggest_encoder_writes_what_json_dumps_writes_and_describes_once() -> None:
    describer = _Describer()
    # the encoder reads only describe(); its parameter names the concrete Suggester
    encoder = SuggestEncoder(describer,  # type: ignore[arg-type]
                             {"stage1": "s1", "reranker": "r\u00e9"})
    rows = ([7, 8, 7], [1, 2, 1], [0.1 + 0.2, 1e-300, -3.5e38])
    for _ in range(2):
        text = encoder.encode(*rows, cluster_id=3, arm="control", experiment="ab")
        expected = {"stickers": [
            {"sticker_id": s, "package_id": p, "labels": [f"l{s}", 'q"uote\\'],
             "emojis": ["🙏", "é"], "character": f"Char «{p}» </script>", "score": x}
            for s, p, x in zip(*rows, strict=True)],
            "cluster_id": 3, "versions": {"stage1": "s1", "reranker": "r\u00e9"},
            "arm": "control", "experiment": "ab"}
        assert text == json.dumps(expected, separators=(",", ":")) + "\n"
    assert describer.calls == 2  # once per (sticker, package), across responses
    assert encoder.encode([], [], [], cluster_id=0, arm="a", experiment="b").startswith(
        '{"stickers":[],"cluster_id":0,')
    one = json.loads(encoder.encode([7], [1], [2.5], cluster_id=0, arm="a", experiment="b"))
    assert [(x["sticker_id"], x["score"]) for x in one["stickers"]] == [(7, 2.5)]
    for ids, scores in (([7, 8], [1.0]), ([7], [1.0, 2.0]), ([], [1.0]), ([7], [])):
        with pytest.raises(ValueError):
            encoder.encode(ids, ids, scores, cluster_id=0, arm="a", experiment="b")
    for bad in (float("nan"), float("inf"), -float("inf")):  # issue #19: NaN in a 200
        with pytest.raises(NonFiniteScoreError):
            encoder.encode([7], [1], [bad], cluster_id=0, arm="a", experiment="b")


def test_typed_text_is_never_logged_or_stored(app: Flask, client: FlaskClient,
                                              caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/suggest", json={"language": "en", "text": SECRET_TEXT, "cluster_id": 0})
    client.post("/v1/suggest", json={"language": "en", "text": SECRET_TEXT, "cluster_id": 999})
    client.post("/v1/suggest", json={"language": "en", "text": SECRET_TEXT * 20,
                                     "cluster_id": 0})
    client.post("/v1/suggest", data='{"text": "' + SECRET_TEXT,
                content_type="application/json")
    out = capsys.readouterr()
    assert SECRET_TEXT not in caplog.text + out.out + out.err
    store = app.extensions["sticker_serving"].config.resolved_store_path
    for path in store.parent.glob(store.name + "*"):
        assert SECRET_TEXT.encode() not in path.read_bytes()
    assert SECRET_TEXT not in client.get("/metrics").get_data(as_text=True)


# ---------------------------------------------------------------------------- assign


def test_assign(client: FlaskClient) -> None:
    body = client.post("/v1/assign", json={"features": {"language": "ja", "region": "JP"}}
                       ).get_json()
    assert isinstance(body["cluster_id"], int) and body["stage1_version"]
    assert_problem(client.post("/v1/assign", json={"features": {"language": ["ja"]}}), 422)
    assert_problem(client.post("/v1/assign", json={}), 422)
    assert_problem(client.post("/v1/assign", json={"features": {"email": "a@b"}}), 422,
                   "unknown_feature")


# ---------------------------------------------------------------------------- bundle


def test_bundle_etag_and_304(client: FlaskClient) -> None:
    response = client.get("/v1/clusters/2/bundle?language=ja")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    etag = response.headers["ETag"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    manifest = json.loads(archive.read("bundle-index.json"))
    assert manifest["cluster_id"] == 2 and manifest["language"] == "ja"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    assert "keywords-ja.kwi" in archive.namelist()
    again = client.get("/v1/clusters/2/bundle?language=ja", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag and not again.data
    other = client.get("/v1/clusters/2/bundle?language=en")
    assert other.headers["ETag"] != etag
    assert client.get("/v1/clusters/2/bundle?language=ja").data == response.data


def test_bundle_errors(client: FlaskClient) -> None:
    assert_problem(client.get("/v1/clusters/999/bundle?language=ja"), 404, "unknown_cluster")
    assert_problem(client.get("/v1/clusters/-1/bundle?language=ja"), 404)
    assert_problem(client.get("/v1/clusters/1/bundle"), 400, "missing_language")
    assert_problem(client.get("/v1/clusters/1/bundle?language=xx"), 422, "unknown_language")


# ---------------------------------------------------------------------------- models, arms


def test_reranker_model_needs_install_id(client: FlaskClient) -> None:
    assert_problem(client.get("/v1/models/reranker"), 400, "missing_install_id")
    assert_problem(client.get("/v1/models/reranker", headers={INSTALL_ID_HEADER: "x y"}),
                   400, "invalid_install_id")


def test_reranker_model_sha_and_etag(client: FlaskClient) -> None:
    headers = {INSTALL_ID_HEADER: "install-0001"}
    response = client.get("/v1/models/reranker", headers=headers)
    body = response.get_json()
    model = base64.b64decode(body["model_base64"])
    assert hashlib.sha256(model).hexdigest() == body["sha256"] and body["bytes"] == len(model)
    assert body["n_parameters"] == N_PARAMETERS and body["arm"] == "control"
    again = client.get("/v1/models/reranker",
                       headers={**headers, "If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_arms_are_stable_split_and_serve_their_versions(var: Path, tmp_path: Path) -> None:
    pinned = publish_fake_reranker(var, tag="treatment").name
    # The fake publisher moved LATEST; pin the control to the older version.
    versions = sorted(p.name for p in (var / "reranker").iterdir()
                      if p.is_dir() and not p.name.startswith("."))
    control = versions[0]
    experiment = ExperimentConfig(salt="s1", arms=(
        ArmConfig(name="control", weight=3, reranker_version=control),
        ArmConfig(name="treatment", weight=1, reranker_version=pinned,
                  parameters={"row_size": 8})))
    ids = [f"install-{i:05d}" for i in range(4000)]
    counts = Counter(assign_arm(experiment, i).name for i in ids)
    assert abs(counts["treatment"] / len(ids) - 0.25) < 0.03
    assert all(assign_arm(experiment, i) == assign_arm(experiment, i) for i in ids[:50])
    assert 0 <= bucket("s1", "install-00001") < 1
    reshuffled = ExperimentConfig(salt="s2", arms=experiment.arms)
    assert any(assign_arm(reshuffled, i) != assign_arm(experiment, i) for i in ids[:50])

    app = fake_app(var, store_path=tmp_path / "u.sqlite3", experiment=experiment)
    client = app.test_client()
    seen = {}
    for install in ids[:40]:
        body = client.get("/v1/models/reranker", headers={INSTALL_ID_HEADER: install}
                          ).get_json()
        seen[body["arm"]] = (body["reranker_version"], body["parameters"])
        row = client.post("/v1/suggest", json={"language": "en", "text": "", "cluster_id": 0},
                          headers={INSTALL_ID_HEADER: install}).get_json()
        assert row["arm"] == body["arm"]
        assert row["versions"]["reranker"] == body["reranker_version"]
    assert seen == {"control": (control, {}), "treatment": (pinned, {"row_size": 8})}


# ---------------------------------------------------------------------------- federated


def current_round(client: FlaskClient) -> dict:
    response = client.get("/v1/federated/rounds/current")
    assert response.status_code == 200
    return response.get_json()


def test_round_announces_the_platform_plan(client: FlaskClient) -> None:
    spec = current_round(client)
    assert spec["round"] == 0 and spec["model_version"] == 0 and spec["accepting"]
    assert spec["n_parameters"] == N_PARAMETERS
    assert spec["clip_norm"] == FED_CONFIG.privacy.clip_norm
    assert spec["noise_multiplier"] == FED_CONFIG.privacy.noise_multiplier
    assert spec["min_reports"] == FED_CONFIG.rounds.min_reports
    assert spec["norm_bound"] > spec["clip_norm"]


def test_update_accepted_durably_and_idempotent(app: Flask, client: FlaskClient) -> None:
    payload = upload()
    first = client.post("/v1/federated/updates", json=payload)
    assert first.status_code == 202 and first.get_json() == {"status": "accepted", "round": 0}
    retry = client.post("/v1/federated/updates", json=payload)
    assert retry.status_code == 202 and retry.get_json()["status"] == "duplicate"
    assert store_count(app) == 1


def _rejections() -> list[tuple[str, object, int, str]]:
    nan = upload()
    nan_raw = json.dumps(nan).replace(str(nan["delta"][3]), "NaN", 1)
    return [
        ("malformed JSON", '{"round": 0, "delta": [', 400, "malformed_json"),
        ("not an object", [1, 2], 422, "invalid_update"),
        ("wrong type", upload(round_="0"), 422, "invalid_update"),  # type: ignore[arg-type]
        ("wrong shape", upload(n=N_PARAMETERS + 1), 422, "invalid_update"),
        ("NaN in delta", nan_raw, 422, "invalid_update"),
        ("identity field", upload(device_id="abc"), 422, "identity_field"),
        ("identity field 2", upload(user="u1"), 422, "identity_field"),
        ("unknown field", upload(colour="red"), 422, "invalid_update"),
        ("bad nonce", {**upload(), "nonce": "xyz"}, 422, "invalid_update"),
        ("too many examples", {**upload(), "n_examples": 10_000}, 422, "invalid_update"),
        ("norm above bound", upload(scale=100.0), 422, "norm_exceeded"),
        ("stale round", upload(round_=5), 409, "stale_round"),
        ("version mismatch", upload(model_version=3), 409, "version_mismatch"),
        ("oversized", {**upload(), "padding": "x" * 5_000_000}, 413, "payload_too_large"),
    ]


@pytest.mark.parametrize(("case", "payload", "status", "reason"), _rejections(),
                         ids=[c[0] for c in _rejections()])
def test_update_rejections_store_nothing(app: Flask, client: FlaskClient, case: str,
                                         payload: object, status: int, reason: str) -> None:
    current_round(client)
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    body = assert_problem(client.post("/v1/federated/updates", data=raw,
                                      content_type="application/json"), status, reason)
    if reason == "identity_field":
        assert "identif" in body["detail"]
    assert store_count(app) == 0
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'reason="{reason}"' in metrics


def test_replayed_nonce_with_other_content_is_refused(app: Flask, client: FlaskClient) -> None:
    first = upload(seed=1)
    assert client.post("/v1/federated/updates", json=first).status_code == 202
    replay = {**upload(seed=2), "nonce": first["nonce"]}
    assert_problem(client.post("/v1/federated/updates", json=replay), 409, "nonce_replayed")
    assert store_count(app) == 1


def test_deadline_and_closed_rounds(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    spec = current_round(client)
    config = app.extensions["sticker_serving"].config
    with UpdateStore(config.resolved_store_path) as store:
        store._conn.execute("UPDATE rounds SET deadline_at = opened_at - 1")
    assert_problem(client.post("/v1/federated/updates", json=upload()), 409, "deadline_passed")
    with UpdateStore(config.resolved_store_path) as store:
        store.close_round(spec["round"], "abandoned", 0.0, {})
    no_auto = fake_app(config.var, store_path=config.resolved_store_path,
                       auto_open_round=False)
    assert_problem(no_auto.test_client().post("/v1/federated/updates", json=upload()), 409,
                   "no_open_round")
    assert_problem(no_auto.test_client().get("/v1/federated/rounds/current"), 404,
                   "no_open_round")
    assert store_count(app) == 0


def test_aggregate_round_from_the_store(app: Flask, client: FlaskClient, var: Path) -> None:
    spec = current_round(client)
    config = app.extensions["sticker_serving"].config
    payloads = [upload(seed=s) for s in range(3)]
    for p in payloads:
        assert client.post("/v1/federated/updates", json=p).status_code == 202
    published: list[tuple[np.ndarray, dict[str, Any]]] = []

    def publish(parameters: np.ndarray, base: Path, kind_dir: Path,
                record: dict[str, Any]) -> Path:
        published.append((parameters, record))
        return base

    with UpdateStore(config.resolved_store_path) as store:
        result = aggregate_round(store, var, spec["round"], config=FED_CONFIG, publish=publish)
        assert result.outcome.status == "aggregated" and result.outcome.accepted == 3
        closed = store.get_round(spec["round"])
        assert closed is not None and closed.status == "aggregated"
        assert closed.outcome["accepted"] == 3
    parameters, record = published[0]
    # FedAvg under DP: uniform mean of the deltas, server learning rate 1, from zeros.
    import numpy as np
    expected = np.mean([np.asarray(p["delta"], np.float32) for p in payloads], axis=0)
    np.testing.assert_allclose(parameters, expected, rtol=1e-5, atol=1e-6)
    assert record["model_version"] == 1
    # The closed round accepts nothing more; a new round opens on the next announcement.
    assert_problem(client.post("/v1/federated/updates", json=upload(seed=9)), 409)
    assert current_round(client)["round"] == spec["round"] + 1


def test_too_few_reports_abandon_the_round(app: Flask, client: FlaskClient, var: Path) -> None:
    spec = current_round(client)
    assert client.post("/v1/federated/updates", json=upload()).status_code == 202
    config = app.extensions["sticker_serving"].config
    with UpdateStore(config.resolved_store_path) as store:
        result = aggregate_round(store, var, spec["round"], config=FED_CONFIG, publish=None)
    assert result.outcome.status == "abandoned" and "min_reports" in result.outcome.message


# ---------------------------------------------------------------------------- metrics, openapi


def test_metrics_exposition(client: FlaskClient) -> None:
    client.post("/v1/suggest", json={"language": "en", "text": "", "cluster_id": 0, "limit": 3})
    client.post("/v1/federated/updates", json=upload())
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sticker_http_request_duration_seconds_bucket{endpoint="/v1/suggest"' in text
    assert 'sticker_suggestions_served_total{arm="control"} 3.0' in text
    assert 'sticker_suggest_requests_total{arm="control",language="en"} 1.0' in text
    assert 'sticker_federated_updates_total{outcome="accepted",reason=""} 1.0' in text
    assert 'sticker_artifact_info{kind="stage1"' in text


def test_openapi_documents_every_route_and_only_those(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<int:cluster_id>", "{cluster_id}")
        assert rule.methods is not None, rule.rule  # Flask gives every rule its methods
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


def _validate(doc: dict, path: str, method: str, response: TestResponse) -> None:
    spec = doc["paths"][path][method]["responses"][str(response.status_code)]
    content = spec["content"]
    assert response.mimetype in content, (response.mimetype, list(content))
    schema = {**content[response.mimetype]["schema"], "components": doc["components"]}
    jsonschema.validate(response.get_json(force=True), schema)


def test_real_responses_match_the_openapi_schemas(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    headers = {INSTALL_ID_HEADER: "install-42abc"}
    cases = [
        ("/v1/suggest", "post", client.post("/v1/suggest", json={
            "language": "en", "text": "ok", "cluster_id": 0})),
        ("/v1/suggest", "post", client.post("/v1/suggest", json={"language": 1})),
        ("/v1/suggest", "post", client.post("/v1/suggest", json={
            "language": "en", "text": "ok", "cluster_id": 99})),
        ("/v1/assign", "post", client.post("/v1/assign", json={"features": {}})),
        ("/v1/models/reranker", "get", client.get("/v1/models/reranker", headers=headers)),
        ("/v1/models/reranker", "get", client.get("/v1/models/reranker")),
        ("/v1/federated/rounds/current", "get", client.get("/v1/federated/rounds/current")),
        ("/v1/federated/updates", "post", client.post("/v1/federated/updates", json=upload())),
        ("/v1/federated/updates", "post", client.post("/v1/federated/updates",
                                                      json=upload(user_id=1))),
        ("/healthz", "get", client.get("/healthz")),
        ("/readyz", "get", client.get("/readyz")),
    ]
    for path, method, response in cases:
        _validate(doc, path, method, response)
    # The request schema is the validator's own: a documented example validates.
    jsonschema.validate({"language": "en", "text": "", "cluster_id": 0},
                        {**doc["components"]["schemas"]["SuggestRequest"]})


def test_demo_only_in_explicit_demo_mode(client: FlaskClient) -> None:
    """Issue #19: /demo/users listed dataset user ids with their cluster by default."""
    assert ServingConfig.load(environ={}).demo is False
    assert_problem(client.get("/demo/users"), 404)
    assert_problem(client.get("/"), 404)
    assert "/demo/users" not in client.get("/openapi.json").get_json()["paths"]


def test_demo_page_and_users(var: Path, tmp_path: Path) -> None:
    client = fake_app(var, store_path=tmp_path / "u.sqlite3", demo=True).test_client()
    page = client.get("/")
    assert page.status_code == 200 and b'id="text"' in page.data
    users = client.get("/demo/users").get_json()
    assert users["languages"] and users["users"]
    assert {u["language"] for u in users["users"]} <= set(users["languages"])


# ---------------------------------------------------------------------------- config


def test_config_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('port = 9001\nworkers = 3\nstage1_version = "v1"\n'
                    '[experiment]\nsalt = "abc"\n')
    env = {"STICKERS_SERVE_WORKERS": "4", "STICKERS_SERVE_RERANKER_VERSION": "123",
           "STICKERS_SERVE_CONFIG": str(path)}
    config = ServingConfig.load(environ=env, var=tmp_path, port=9002)
    assert (config.port, config.workers, config.stage1_version) == (9002, 4, "v1")
    assert config.reranker_version == "123" and config.experiment.salt == "abc"
    assert config.host == "127.0.0.1"
    assert ServingConfig.load(environ={}, **json.loads(config.to_json())) == config
    from data import ConfigError
    with pytest.raises(ConfigError, match="STICKERS_SERVE_PORTT"):
        ServingConfig.load(environ={"STICKERS_SERVE_PORTT": "1"})
    with pytest.raises(ConfigError, match="workers"):
        ServingConfig.load(environ={}, workers=0)
    for field in ServingConfig.model_fields.values():
        assert field.description, "every config field has a docstring"


def test_history_needs_a_sticker_row_model(client: FlaskClient) -> None:
    """A package model has no history features: a thin client's history is refused (not
    silently ignored), and the served document leaves the field out."""
    response = client.post("/v1/suggest", json={
        "language": "en", "text": "hi", "cluster_id": 0,
        "history": {"stickers": [{"sticker_id": 100, "count": 1.0, "last_sent_at": 5.0}]}})
    assert_problem(response, 422, "history_unsupported")
    document = client.get("/openapi.json").get_json()
    assert "history" not in document["components"]["schemas"]["SuggestRequest"]["properties"]


def test_federated_platform_errors_are_mapped_first(app: Flask, client: FlaskClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #14 item 7: the platform's errors derive from its own FederatedError; serving
    maps them to their problem (not 503 round_unavailable, not an unexplained 500)."""
    from federated import FederatedError, PrivacyBudgetError

    st = app.extensions["sticker_serving"]

    def refuse(store: UpdateStore) -> NoReturn:
        raise PrivacyBudgetError("20 rounds would spend epsilon=9 over the target 8")

    monkeypatch.setattr(st, "ensure_open_round", refuse)
    body = assert_problem(client.get("/v1/federated/rounds/current"), 409,
                          "privacy_budget_exhausted")
    assert "epsilon=9" in body["detail"]

    class PlatformFailureError(FederatedError):
        pass

    def fail(store: UpdateStore) -> NoReturn:
        raise PlatformFailureError("strategy state at /srv/var/ckpt/state.npz is unreadable")

    monkeypatch.setattr(st, "ensure_open_round", fail)
    body = assert_problem(client.get("/v1/federated/rounds/current"), 500, "federated_error")
    assert "/srv/var" not in body["detail"]
