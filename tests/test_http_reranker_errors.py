"""The reranker's input errors become HTTP 422 in one place (issue #14 item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_serving_support import (
    FakeContext,
    FakeSuggester,
    build_var,
    fake_registry,
)

from candidate_gen import Stage1Artifact
from reranker import RerankerInputError
from serving import ModelRegistry, ServingConfig, create_app


class _RejectingSuggester(FakeSuggester):
    """Rejects one text as the real reranker rejects a bad input, fails on another."""

    def rank(self, *, language: str, text: str, cluster_id: int,
             user_embedding: np.ndarray | None, limit: int
             ) -> tuple[list[int], list[int], list[float]]:
        if text == "reject":
            raise RerankerInputError("user_embedding has shape (3,), expected (4,)")
        if text == "boom":
            raise ValueError("not a reranker input error")
        return super().rank(language=language, text=text, cluster_id=cluster_id,
                            user_embedding=user_embedding, limit=limit)


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("errors"))


def _app(var: Path, tmp_path: Path) -> Any:
    config = ServingConfig.load(environ={}, var=var, reload_interval_s=0,
                                store_path=tmp_path / "updates.sqlite3")
    base = fake_registry(config)

    def loader(var: Path, *, stage1_version: str, reranker_version: str | None,
               dataset: str | None) -> _RejectingSuggester:
        return _RejectingSuggester(FakeContext(Stage1Artifact.load(var, stage1_version)),
                                   reranker_version)

    registry = ModelRegistry(config.var, config.stage1_version, [config.reranker_version],
                             # a structural double of Suggester (test_serving_support)
                             config.dataset, suggester_loader=loader,  # type: ignore[arg-type]
                             reranker_loader=base.reranker_loader)
    app = create_app(config, registry=registry)
    app.testing = True
    return app


def test_a_reranker_input_error_is_a_422_problem(var: Path, tmp_path: Path) -> None:
    client = _app(var, tmp_path).test_client()
    response = client.post("/v1/suggest", json={"language": "en", "text": "reject",
                                                 "cluster_id": 0})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "/problems/invalid_request"
    assert problem["detail"] == "user_embedding has shape (3,), expected (4,)"
    ok = client.post("/v1/suggest", json={"language": "en", "text": "hi", "cluster_id": 0})
    assert ok.status_code == 200


def test_other_errors_are_not_reported_as_the_client_s(var: Path, tmp_path: Path) -> None:
    app = _app(var, tmp_path)
    app.testing = False  # let the 500 handler answer instead of raising
    response = app.test_client().post("/v1/suggest", json={"language": "en", "text": "boom",
                                                            "cluster_id": 0})
    assert response.status_code == 500
    assert "not a reranker input error" not in response.get_data(as_text=True)
