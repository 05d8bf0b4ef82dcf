"""Shared fixtures: the real catalog, a tiny generated world, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import data
from data import generate_world, world_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def catalog() -> data.Catalog:
    """The full CLDR catalog (fetched once by `make test` into var/; built if absent)."""
    return data.load_catalog(data.ensure_catalog(data.var_root()))


@pytest.fixture(scope="session")
def catalog_excerpt() -> data.Catalog:
    """30 real CLDR labels with their keywords in en, ja, zh-hant, th, ko (committed)."""
    raw = json.loads((FIXTURES / "catalog_excerpt.json").read_text())
    labels = data.validate_frame(
        pl.DataFrame(raw["labels"], schema=data.SCHEMAS["labels"]), "labels", "excerpt")
    keywords = data.validate_frame(
        pl.DataFrame(raw["keywords"], schema=data.SCHEMAS["keywords"]), "keywords", "excerpt")
    return data.Catalog(labels, keywords, raw["source"])


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory, catalog: data.Catalog) -> Path:
    """A generated ``tiny`` world (600 users, 120 packages); returns its dataset directory.

    Session-scoped and shared: tests must not modify it.
    """
    var = tmp_path_factory.mktemp("tiny-var")
    return generate_world(world_config("tiny"), catalog, var, show_progress=False)


@pytest.fixture()
def runner() -> CliRunner:
    """A click runner for ``stickers`` commands."""
    return CliRunner()


@pytest.fixture(scope="session")
def tiny_var(tmp_path_factory: pytest.TempPathFactory, catalog: data.Catalog) -> Path:
    """An artifact root holding the ``tiny`` world and a stage-1 artifact built from it.

    Stage 1 here is small and fast (8 factors, 6 clusters, 40 candidates). Shared by the
    reranker, federated-task and serving tests: they must not modify it.
    """
    from candidate_gen import Stage1Config, build_stage1

    var = tmp_path_factory.mktemp("tiny-stage1-var")
    dataset = generate_world(world_config("tiny"), catalog, var, show_progress=False)
    config = Stage1Config().with_overrides([
        "als.factors=8", "clusters.n_clusters=6", "candidates.n_candidates=40",
        # Lists by the centroid score alone: test_reranker_task picks a character from the
        # end of a cluster's list and needs stage 1 not to rank that character first.
        "candidates.popularity_blend=0.0",
    ])
    build_stage1(dataset, config, var)
    return var
