"""Issue #19: promotion history drives rollback; a corrupt or missing LATEST degrades.

- ``models rollback`` follows the promotion history, never version names: from V5, with a
  corrupt V4 and a never-promoted V3, it goes to V2.
- After a rollback the open round (training V5) is abandoned and the next one trains the
  live version; an aggregation whose base is no longer live publishes nothing and leaves
  ``LATEST`` where the operator put it.
- A corrupt or missing ``LATEST`` makes start-up and hot-swap serve the newest verified
  promoted version, /readyz says ``degraded``, and no response carries a filesystem path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from test_serving_support import FED_CONFIG, build_var, fake_app, publish_fake_reranker, upload

import data
from serving import UpdateStore, aggregate_round, promote, rollback
from serving.versions import history, live_stack


@pytest.fixture()
def var(tiny_world: Path, tmp_path: Path) -> Path:
    root = build_var(tiny_world, tmp_path / "var")  # holds one reranker, V1 (never promoted)
    for tag in ("v2", "v3", "v4", "v5"):
        publish_fake_reranker(root, tag=tag)
    return root


def versions(var: Path) -> list[str]:
    return data.list_versions(var / "reranker")


def latest(var: Path) -> str:
    return data.resolve_artifact(var / "reranker", "latest").name


def test_history_replay() -> None:
    entries = [{"action": a, "version": v} for a, v in (
        ("found", "a"), ("promote", "b"), ("promote", "c"), ("rollback", "a"),
        ("promote", "d"), ("publish", "e"), ("promote", "e"))]
    assert live_stack(entries) == ["a", "d", "e"]


def test_rollback_follows_promotions_not_names(var: Path) -> None:
    _v1, v2, _v3, v4, v5 = versions(var)
    for version in (v2, v4, v5):
        promote(var, "reranker", version)
    (var / "reranker" / v4 / "model.onnx").write_bytes(b"corrupt")
    assert rollback(var, "reranker") == (v5, v2)  # skips corrupt V4, never V3
    assert latest(var) == v2
    assert [e["action"] for e in history(var / "reranker")] == [
        "found", "promote", "promote", "promote", "rollback"]
    # further back in the history: V5 was live (found) before V2 was promoted
    assert rollback(var, "reranker") == (v2, v5)
    with pytest.raises(data.ArtifactError, match="never promoted"):
        rollback(var, "reranker")  # nothing was live before; V1 and V3 never were
    assert latest(var) == v5


def test_rollback_abandons_the_open_round_and_aggregation_never_moves_latest(
        var: Path, tmp_path: Path) -> None:
    _v1, v2, *_ , v5 = versions(var)
    promote(var, "reranker", v2)
    promote(var, "reranker", v5)
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    client = app.test_client()
    st = app.extensions["sticker_serving"]
    spec = client.get("/v1/federated/rounds/current").get_json()
    assert spec["reranker_version"] == v5
    for seed in range(3):
        assert client.post("/v1/federated/updates", json=upload(seed=seed)).status_code == 202

    rollback(var, "reranker")
    published: list[str] = []

    def publish(parameters: np.ndarray, base: Path, kind_dir: Path,
                record: dict[str, Any]) -> Path:
        published.append(base.name)
        return base

    with UpdateStore(st.config.resolved_store_path) as store:  # base V5 is not live: no-op
        result = aggregate_round(store, var, spec["round"], config=FED_CONFIG,
                                 publish=publish)
    assert result.outcome.status == "abandoned" and "not applied" in result.outcome.message
    assert published == [] and latest(var) == v2

    # the server swaps to V2 and the next round trains it
    assert st.registry.refresh() is True
    spec2 = client.get("/v1/federated/rounds/current").get_json()
    assert (spec2["round"], spec2["reranker_version"]) == (spec["round"] + 1, v2)


def test_a_round_open_when_the_served_version_changes_is_abandoned(var: Path,
                                                                   tmp_path: Path) -> None:
    _v1, v2, *_ , v5 = versions(var)
    promote(var, "reranker", v2)
    promote(var, "reranker", v5)
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    client = app.test_client()
    st = app.extensions["sticker_serving"]
    first = client.get("/v1/federated/rounds/current").get_json()
    rollback(var, "reranker")
    st.registry.refresh()
    second = client.get("/v1/federated/rounds/current").get_json()
    assert second["reranker_version"] == v2 and second["round"] == first["round"] + 1
    with UpdateStore(st.config.resolved_store_path) as store:
        closed = store.get_round(first["round"])
    assert closed is not None and closed.status == "abandoned"
    stale = client.post("/v1/federated/updates", json=upload(round_=first["round"]))
    assert stale.status_code == 409


def _no_path_anywhere(client: FlaskClient, var: Path) -> None:
    requests: list[tuple[str, str, dict[str, Any]]] = [  # method, path, client.open kwargs
            ("GET", "/readyz", {}), ("GET", "/healthz", {}),
            ("POST", "/v1/suggest", {"json": {"language": "en", "text": "hi",
                                              "cluster_id": 0}}),
            ("GET", "/v1/clusters/0/bundle?language=en", {}),
            ("GET", "/v1/models/reranker", {"headers": {"X-Install-Id": "install-1234"}}),
            ("GET", "/v1/federated/rounds/current", {})]
    for method, path, kwargs in requests:
        response = client.open(path, method=method, **kwargs)
        text = response.get_data().decode("utf-8", "replace")
        assert str(var) not in text and "/tmp" not in text, (path, text[:300])


@pytest.mark.parametrize("damage", ["corrupt", "missing", "dangling"])
def test_corrupt_or_missing_latest_falls_back_to_the_newest_verified_promotion(
        var: Path, tmp_path: Path, damage: str) -> None:
    v1, v2, v3, *_ = versions(var)
    promote(var, "reranker", v1)
    promote(var, "reranker", v2)
    promote(var, "reranker", v3)
    (var / "reranker" / v2 / "model.onnx").write_bytes(b"corrupt")
    pointer = var / "reranker" / "LATEST"
    if damage == "corrupt":
        (var / "reranker" / v3 / "global_weights.npy").write_bytes(b"corrupt")
    elif damage == "missing":
        pointer.unlink()
    else:
        pointer.write_text("20990101T000000000000Z-gone\n")
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    expected = v1 if damage == "corrupt" else v3  # V2 is corrupt; V3 is fine unless damaged
    assert body["status"] == "degraded" and body["versions"]["reranker:latest"] == expected
    assert "newest verified promoted version" in body["degraded"][0]
    row = client.post("/v1/suggest", json={"language": "en", "text": "hi", "cluster_id": 0})
    assert row.status_code == 200 and row.get_json()["versions"]["reranker"] == expected
    _no_path_anywhere(client, var)


def test_hot_swap_to_a_corrupt_latest_keeps_serving_and_reports_it(var: Path,
                                                                   tmp_path: Path) -> None:
    v1, v2, v3, *_ = versions(var)
    promote(var, "reranker", v1)
    promote(var, "reranker", v2)
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    client = app.test_client()
    st = app.extensions["sticker_serving"]
    assert client.get("/readyz").get_json()["status"] == "ready"
    (var / "reranker" / v3 / "model.onnx").write_bytes(b"corrupt")
    data.set_latest(var / "reranker", v3)  # behind the registry's back, and corrupt
    st.registry.refresh()
    body = client.get("/readyz").get_json()
    assert body["status"] == "degraded" and body["versions"]["reranker:latest"] == v2
    _no_path_anywhere(client, var)


def test_nothing_verified_is_a_503_without_paths(var: Path, tmp_path: Path) -> None:
    stage1 = data.resolve_artifact(var / "stage1", "latest")
    (stage1 / "candidates.parquet").write_bytes(b"corrupt")
    client = fake_app(var, store_path=tmp_path / "updates.sqlite3").test_client()
    for response in (client.get("/readyz"), client.post(
            "/v1/suggest", json={"language": "en", "text": "hi", "cluster_id": 0})):
        assert response.status_code == 503
        assert str(var) not in response.get_data(as_text=True)
    body = json.loads(client.get("/readyz").data)
    assert "stage1" in body["detail"]
