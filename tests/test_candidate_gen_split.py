"""Stage 1 across the split: a hand-computed best list, no peeking after the split, the
validation phase apart from the test window, tune → build, and a log without demographics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from test_candidate_gen_build import two_group_tables, write_dataset

import data
from candidate_gen import (
    CandidateConfig,
    Stage1Artifact,
    Stage1Config,
    build_stage1,
    load_stage1_data,
    popularity_overrides,
    tune_stage1,
)
from candidate_gen.clusters import cluster_scores, estimate_shrinkage
from data.cli import main as stickers

T0 = datetime(2025, 6, 1, tzinfo=UTC)
TS = pl.Datetime("ms", "UTC")
SPLIT = data.TimeSplit(validation_start=(T0 - timedelta(days=5)).timestamp(),
                       test_start=T0.timestamp(), validation_share=0.1,
                       salt="sticker-suggest/validation-devices")

# Clusters follow the language (a heavy feature block); lists are the clusters' own
# holder counts (popularity_blend = 1, no shrinkage): every number below is by hand.
KNOWN = Stage1Config().with_overrides([
    "als.factors=4", "als.iterations=5", "clusters.n_clusters=2",
    "clusters.min_cluster_size=50", "clusters.feature_weight=20.0",
    "candidates.n_candidates=2", "candidates.top_labels=0",
    "candidates.popularity_blend=1.0", "candidates.shrinkage=0.0", "evaluation.k=2",
])


def known_tables() -> dict[str, pl.DataFrame]:
    """100 ja users (ids 0-99), 100 th users (100-199), packages 0-7.

    Before the split: every ja user holds 0, ja 0-59 hold 1, ja 0-29 hold 2; every th user
    holds 5, th 100-179 hold 6, th 100-119 hold 7. After it: ja 60-99 acquire 1 and th
    180-199 acquire 6 (new to them), ja 0-9 acquire 0 again (not new).
    """
    n = 200
    lang = np.where(np.arange(n) < 100, "ja", "th")
    users = pl.DataFrame({
        "user_id": pl.Series(np.arange(n), dtype=pl.Int32),
        "language": lang.tolist(), "region": np.where(lang == "ja", "JP", "TH").tolist(),
        "age_bucket": ["20-29"] * n, "gender": ["f"] * n, "subscriber": [False] * n,
    })
    packages = pl.DataFrame({
        "package_id": pl.Series(np.arange(8), dtype=pl.Int32),
        "creator_id": pl.Series(np.arange(8), dtype=pl.Int32),
        "character": [f"c{p}" for p in range(8)],
        "n_stickers": pl.Series([8] * 8, dtype=pl.Int16), "premium": [False] * 8,
        "released_at": pl.Series([T0 - timedelta(days=400)] * 8, dtype=TS),
        "available": [True] * 8,
    })
    before, after = T0 - timedelta(days=10), T0 + timedelta(days=1)
    rows = ([(u, 0, before) for u in range(100)] + [(u, 1, before) for u in range(60)]
            + [(u, 2, before) for u in range(30)] + [(u, 5, before) for u in range(100, 200)]
            + [(u, 6, before) for u in range(100, 180)] + [(u, 7, before) for u in range(100, 120)]
            + [(u, 1, after) for u in range(60, 100)] + [(u, 6, after) for u in range(180, 200)]
            + [(u, 0, after) for u in range(10)])
    rows.sort(key=lambda r: (r[0], r[2]))
    user, package, ts = zip(*rows, strict=True)
    interactions = pl.DataFrame({
        "user_id": pl.Series(user, dtype=pl.Int32),
        "package_id": pl.Series(package, dtype=pl.Int32),
        "event": ["download"] * len(user), "weight": pl.Series([1.0] * len(user),
                                                             dtype=pl.Float32),
        "ts": pl.Series(ts, dtype=TS),
    })
    return {"users": users, "packages": packages, "interactions": interactions}


def test_tiny_log_with_a_hand_computed_best_list(tmp_path):
    dataset = write_dataset(tmp_path / "data" / "known", known_tables(), SPLIT)
    artifact = Stage1Artifact.load(build_stage1(dataset, KNOWN, tmp_path))
    ja, th = artifact.cluster_of(0), artifact.cluster_of(150)
    assert ja != th
    # ja cluster: holders 0 → 100, 1 → 60, 2 → 30; th cluster: 5 → 100, 6 → 80, 7 → 20.
    assert artifact.candidates(ja).tolist() == [0, 1]
    assert artifact.candidates(th).tolist() == [5, 6]
    np.testing.assert_allclose(
        artifact.candidate_table.filter(cluster_id=ja)["score"].to_numpy(), [1.0, 0.6])
    ev = artifact.metrics["evaluation"]
    validation = SPLIT.is_validation_device(np.arange(200))
    # Evaluated: ja 60-99 and th 180-199 (a new package each), never validation devices;
    # ja 0-9 only re-acquire a package they held, which is not new.
    expected_users = int((~validation[60:100]).sum() + (~validation[180:200]).sum())
    assert ev["eval_users"] == expected_users == ev["held_out_pairs"]
    assert ev["window"][0] == SPLIT.test_start
    assert ev["recall"] == {
        "cluster_lists": 1.0,
        "global_popularity": 0.0,  # [0, 5]: the two packages every user of a side holds
        "language_popularity": 1.0, "segment_popularity": 1.0,
        "demographics_assignment": 1.0,
        "own_factorisation_top_k": ev["recall"]["own_factorisation_top_k"],
    }
    assert ev["cluster_vs_best_baseline"] == 1.0
    assert artifact.metrics["matrix"]["fit_interactions"] == 390


def test_the_fit_never_sees_an_interaction_after_the_split(tmp_path):
    tables = known_tables()
    # The same log, plus a flood after the split: every user acquires everything.
    flood = pl.DataFrame({
        "user_id": pl.Series(np.repeat(np.arange(200), 8), dtype=pl.Int32),
        "package_id": pl.Series(np.tile(np.arange(8), 200), dtype=pl.Int32),
        "event": ["purchase"] * 1600, "weight": pl.Series([5.0] * 1600, dtype=pl.Float32),
        "ts": pl.Series([T0 + timedelta(days=2)] * 1600, dtype=TS),
    })
    flooded = dict(tables)
    flooded["interactions"] = pl.concat([tables["interactions"], flood]).sort("user_id", "ts")
    config = KNOWN.with_overrides(["candidates.popularity_blend=0.5",
                                   "candidates.shrinkage=10.0"])
    a = Stage1Artifact.load(build_stage1(
        write_dataset(tmp_path / "data" / "plain", tables, SPLIT), config, tmp_path))
    b = Stage1Artifact.load(build_stage1(
        write_dataset(tmp_path / "data" / "flooded", flooded, SPLIT), config, tmp_path))
    np.testing.assert_array_equal(a.package_factors, b.package_factors)
    np.testing.assert_array_equal(a.item_centroids, b.item_centroids)
    assert a.user_clusters.equals(b.user_clusters)
    assert a.candidate_table.equals(b.candidate_table)
    assert a.metrics["matrix"]["fit_interactions"] == b.metrics["matrix"]["fit_interactions"]
    assert b.metrics["matrix"]["interactions"] == a.metrics["matrix"]["interactions"] + 1600
    # Only the evaluation reads the flood.
    assert b.metrics["evaluation"]["held_out_pairs"] > a.metrics["evaluation"]["held_out_pairs"]


def test_validation_phase_never_overlaps_the_evaluation_window(tmp_path):
    tables = known_tables()
    # Add validation-period acquisitions: ja 30-59 acquire 2 four days before the split.
    extra = pl.DataFrame({
        "user_id": pl.Series(np.arange(30, 60), dtype=pl.Int32),
        "package_id": pl.Series([2] * 30, dtype=pl.Int32), "event": ["download"] * 30,
        "weight": pl.Series([1.0] * 30, dtype=pl.Float32),
        "ts": pl.Series([T0 - timedelta(days=4)] * 30, dtype=TS),
    })
    tables["interactions"] = pl.concat([tables["interactions"], extra]).sort("user_id", "ts")
    ds = data.open_dataset(write_dataset(tmp_path / "data" / "phases", tables, SPLIT))
    config = KNOWN.with_overrides(["evaluation.eval_users=1000"])
    val = load_stage1_data(ds, config, "validation")
    test = load_stage1_data(ds, config, "test")
    assert val.matrix.fit_end == SPLIT.validation_start
    assert test.matrix.fit_end == SPLIT.test_start
    assert val.matrix.holdout is not None and test.matrix.holdout is not None
    v_start, v_end = val.matrix.holdout.window
    t_start, _ = test.matrix.holdout.window
    assert (v_start, v_end) == (SPLIT.validation_start, SPLIT.test_start) and v_end <= t_start
    user_ids = ds.table("users").sort("user_id")["user_id"].to_numpy()
    is_val = SPLIT.is_validation_device(user_ids)
    assert is_val[val.matrix.holdout.rows].all() and is_val[val.matrix.holdout.new_rows].all()
    assert not is_val[test.matrix.holdout.rows].any()
    # The validation fit ends before the validation window: ja 30-59's package 2 is new.
    assert val.matrix.train[30:60, 2].nnz == 0 and test.matrix.train[30:60, 2].nnz == 30
    expected = sorted(u for u in range(30, 60) if is_val[u])
    assert val.matrix.holdout.rows.tolist() == expected


def test_tune_writes_a_config_that_build_reads_back(tmp_path, runner):
    tables = known_tables()
    # Validation devices need a new package in the validation window to be scored.
    extra = pl.DataFrame({
        "user_id": pl.Series(np.arange(200), dtype=pl.Int32),
        "package_id": pl.Series([3] * 200, dtype=pl.Int32), "event": ["download"] * 200,
        "weight": pl.Series([1.0] * 200, dtype=pl.Float32),
        "ts": pl.Series([T0 - timedelta(days=2)] * 200, dtype=TS),
    })
    tables["interactions"] = pl.concat([tables["interactions"], extra]).sort("user_id", "ts")
    write_dataset(tmp_path / "data" / "known", tables, SPLIT)
    start = tmp_path / "start.toml"
    KNOWN.save(start)
    out = tmp_path / "chosen.toml"
    base = ["--var", str(tmp_path), "-q", "candidates"]
    result = runner.invoke(stickers, [*base, "tune", "--dataset", "known", "--config",
                                      str(start), "--trials", "3", "--seed", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "global" in result.output
    chosen = Stage1Config.load(out)
    trials = out.with_suffix(".trials.json").read_text()
    assert '"chosen_trial"' in trials
    result = runner.invoke(stickers, [*base, "build", "--dataset", "known", "--config",
                                      str(out), "--version", "tuned"])
    assert result.exit_code == 0, result.output
    assert Stage1Artifact.load(tmp_path / "stage1" / "tuned").config == chosen
    result = runner.invoke(stickers, [*base, "inspect"])
    assert result.exit_code == 0 and "global popularity" in result.output
    assert "own factorisation top-k" in result.output


def test_segments_method_ships_the_popularity_baselines(tmp_path):
    """clusters.method=segments with no shrinkage is segment (or global) popularity."""
    dataset = write_dataset(tmp_path / "data" / "known", known_tables(), SPLIT)
    segments = KNOWN.with_overrides(["clusters.method=segments"])
    artifact = Stage1Artifact.load(build_stage1(dataset, segments, tmp_path))
    assert artifact.n_clusters == 2
    assert artifact.candidates(artifact.cluster_of(0)).tolist() == [0, 1]  # ja: 100, 60
    assert artifact.candidates(artifact.cluster_of(150)).tolist() == [5, 6]  # th: 100, 80
    recall = artifact.metrics["evaluation"]["recall"]
    assert recall["cluster_lists"] == recall["segment_popularity"] == 1.0
    one = KNOWN.with_overrides(["clusters.method=segments", "clusters.features=[]"])
    artifact = Stage1Artifact.load(build_stage1(dataset, one, tmp_path, version="global"))
    # One group: holders 0 → 100, 5 → 100 (ties by package), 6 → 80.
    assert artifact.n_clusters == 1 and artifact.candidates(0).tolist() == [0, 5]
    recall = artifact.metrics["evaluation"]["recall"]
    assert recall["cluster_lists"] == recall["global_popularity"] == 0.0


def test_tune_never_chooses_lists_below_the_popularity_trials(tmp_path):
    tables = known_tables()
    extra = pl.DataFrame({  # validation devices need a new package in the window
        "user_id": pl.Series(np.arange(200), dtype=pl.Int32),
        "package_id": pl.Series([3] * 100 + [6] * 100, dtype=pl.Int32),
        "event": ["download"] * 200, "weight": pl.Series([1.0] * 200, dtype=pl.Float32),
        "ts": pl.Series([T0 - timedelta(days=2)] * 200, dtype=TS),
    })
    tables["interactions"] = pl.concat([tables["interactions"], extra]).sort("user_id", "ts")
    ds = data.open_dataset(write_dataset(tmp_path / "data" / "known", tables, SPLIT))
    # A deliberately bad start: one cluster for everyone (global popularity [0, 5]), while
    # th 180-199's new package 6 is in their segment's list [5, 6].
    bad = KNOWN.with_overrides(["clusters.n_clusters=1"])
    result = tune_stage1(ds, bad, 1, 0)
    assert [t.overrides for t in result.trials[1:]] == popularity_overrides(bad)
    segment, language, everyone = (t.evaluation["recall"] for t in result.trials[1:])
    assert segment["cluster_lists"] == segment["segment_popularity"]
    assert language["cluster_lists"] == language["language_popularity"]
    assert everyone["cluster_lists"] == everyone["global_popularity"]
    first = result.trials[0].evaluation["recall"]
    best_popularity = max(first[name] for name in
                          ("segment_popularity", "language_popularity", "global_popularity"))
    assert result.best.score >= best_popularity > result.trials[0].score
    without = tune_stage1(ds, bad, 1, 0, popularity_trials=False)
    assert len(without.trials) == 1 and without.best.score < best_popularity


def test_cluster_scores_blend_and_shrinkage_exact():
    centroids = np.array([[1.0]], np.float32)
    factors = np.array([[1.0], [3.0]], np.float32)  # centroid scores 1, 3
    holders = np.array([[3.0, 1.0]])
    prior = np.array([[0.5, 0.5]])
    only_pop = CandidateConfig(popularity_blend=1.0, shrinkage=4.0)
    # (3 + 4·0.5) / (4 + 4), (1 + 4·0.5) / (4 + 4)
    np.testing.assert_allclose(cluster_scores(centroids, factors, holders, np.array([4]),
                                              prior, only_pop), [[0.625, 0.375]])
    only_factors = CandidateConfig(popularity_blend=0.0)
    np.testing.assert_allclose(cluster_scores(centroids, factors, holders, np.array([4]),
                                              prior, only_factors), [[1.0, 3.0]])
    # Standardised: centroid (-1, 1), popularity (1, -1); blend 0.25 → 0.75·(-1, 1) + 0.25·(1, -1)
    blend = CandidateConfig(popularity_blend=0.25, shrinkage=4.0)
    np.testing.assert_allclose(cluster_scores(centroids, factors, holders, np.array([4]),
                                              prior, blend), [[-0.5, 0.5]], atol=1e-6)


def test_auto_shrinkage_is_the_median_cluster():
    """``shrinkage = "auto"`` is the median cluster's members with history (#16)."""
    assert estimate_shrinkage(np.array([0, 3, 5, 100])) == 5.0  # empty clusters left out
    assert estimate_shrinkage(np.array([4, 6])) == 5.0
    assert estimate_shrinkage(np.array([0, 0])) == 0.0
    assert estimate_shrinkage(np.array([4, 6]), floor=800.0) == 800.0  # the floor wins
    assert estimate_shrinkage(np.array([900, 1000, 5000]), floor=800.0) == 1000.0
    config = Stage1Config().with_overrides(["candidates.shrinkage=auto"])
    assert config.candidates.shrinkage == "auto"
    assert Stage1Config.from_toml(config.to_toml()).candidates.shrinkage == "auto"
    with pytest.raises(data.ConfigError, match="shrinkage"):
        Stage1Config().with_overrides(["candidates.shrinkage=-1"])
    with pytest.raises(data.ConfigError, match="shrinkage"):
        Stage1Config().with_overrides(["candidates.shrinkage=median"])
    # Unresolved "auto" is refused by the scorer; resolved, it is the hand-computed share.
    centroids = np.array([[1.0]], np.float32)
    factors = np.array([[1.0], [3.0]], np.float32)
    holders, prior = np.array([[3.0, 1.0]]), np.array([[0.5, 0.5]])
    auto = CandidateConfig(popularity_blend=1.0, shrinkage="auto")
    with pytest.raises(ValueError, match="resolved"):
        cluster_scores(centroids, factors, holders, np.array([4]), prior, auto)
    m = estimate_shrinkage(np.array([4]))  # one cluster of 4: m = 4
    np.testing.assert_allclose(cluster_scores(centroids, factors, holders.copy(),
                                              np.array([4]), prior, auto, m),
                               [[0.625, 0.375]])  # (3 + 2) / 8, (1 + 2) / 8


def test_build_with_auto_shrinkage_uses_the_median_cluster(tmp_path):
    """Two clusters of 100 users with history: "auto" (no floor) builds as shrinkage 100."""
    dataset = write_dataset(tmp_path / "data" / "known", known_tables(), SPLIT)
    # A prior over no feature (global popularity) so the shrinkage moves the lists.
    base = KNOWN.with_overrides(["candidates.segment_features=[]",
                                 "candidates.n_candidates=3"])
    auto = Stage1Artifact.load(build_stage1(
        dataset, base.with_overrides(["candidates.shrinkage=auto",
                                      "candidates.min_shrinkage=0"]), tmp_path, version="a"))
    floored = Stage1Artifact.load(build_stage1(
        dataset, base.with_overrides(["candidates.shrinkage=auto"]), tmp_path, version="m"))
    assert floored.metrics["shrinkage_used"] == 800.0  # default floor above the median 100
    fixed = Stage1Artifact.load(build_stage1(
        dataset, base.with_overrides(["candidates.shrinkage=100"]), tmp_path, version="f"))
    plain = Stage1Artifact.load(build_stage1(dataset, base, tmp_path, version="p"))
    assert auto.metrics["shrinkage_used"] == 100.0
    assert plain.metrics["shrinkage_used"] == 0.0
    assert auto.candidate_table.equals(fixed.candidate_table)
    # ja's own shares: 0 → 1, 1 → 0.6, 2 → 0.3, others 0; with m = 100 towards global
    # (0 → 0.5, 1 → 0.3, 5 → 0.5, 2 → 0.15, 6 → 0.4): 0 0.75, 1 0.45, 5 0.25, 2 0.225.
    ja = auto.candidates(auto.cluster_of(0)).tolist()
    assert ja == [0, 1, 5]
    assert plain.candidates(plain.cluster_of(0)).tolist() == [0, 1, 2]


def test_log_without_demographics_builds_end_to_end(tiny_world: Path, tmp_path, runner):
    from bench.bench_stage1 import make_log_without_demographics

    var = tmp_path / "var"
    (var / "data").mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_world, var / "data" / "tiny")
    path = make_log_without_demographics("tiny", var)
    ds = data.open_dataset(path)
    users = ds.table("users")
    assert set(users["language"].unique().to_list()) == {"unknown"}
    assert not ds.has("stickers")
    split = data.time_split(ds)
    assert ds.manifest.parameters["split"]["test_start"] == split.test_start
    result = runner.invoke(stickers, ["--var", str(var), "-q", "candidates", "build",
                                      "--dataset", path.name, "--set", "als.factors=8",
                                      "--set", "clusters.n_clusters=6", "--set",
                                      "candidates.n_candidates=40",
                                      # On this 600-user log the default package means
                                      # put every user in one k-means cluster; the ALS
                                      # factors separate them (the behaviour tested here).
                                      "--set", "clusters.representation=user_factors"])
    assert result.exit_code == 0, result.output
    artifact = Stage1Artifact.load(var)
    # Behaviour alone: the only encoded feature is the loader's constant subscriber=false,
    # the same in every cluster, so it cannot separate users.
    assert artifact.feature_centroids.shape[1] <= 1
    # Users without history have nothing to be assigned by: the fallback list (global
    # popularity) is the last one; the behaviour clusters' feature centroids are all alike.
    fallback = artifact.fallback_cluster
    assert fallback == artifact.n_clusters - 1
    behaviour = artifact.feature_centroids[:fallback]
    assert np.ptp(behaviour, axis=0).max(initial=0.0) == 0.0
    assert fallback > 1  # the clusters come from behaviour
    lists = {tuple(artifact.candidates(c).tolist()) for c in range(artifact.n_clusters)}
    assert len(lists) == artifact.n_clusters
    ev = artifact.metrics["evaluation"]
    assert ev["eval_users"] > 0
    assert ev["window"][0] == pytest.approx(split.test_start, abs=1e-3)
    assert set(ev["recall"]) == {"cluster_lists", "global_popularity", "language_popularity",
                                 "segment_popularity", "demographics_assignment",
                                 "own_factorisation_top_k"}
    # Without demographics every popularity baseline is the global one.
    assert ev["recall"]["language_popularity"] == ev["recall"]["global_popularity"]
    assert ev["recall"]["segment_popularity"] == ev["recall"]["global_popularity"]
    # ... and so are the lists of users without history, and the demographics-only
    # assignment (every user's features assign the fallback).
    assert ev["recall"]["demographics_assignment"] == ev["recall"]["global_popularity"]
    new = ev["new_users"]["recall"]
    assert new["cluster_lists"] == new["global_popularity"]


def test_behaviour_alone_separates_two_groups_without_demographics(tmp_path):
    from test_candidate_gen_build import TEST_CONFIG

    dataset = write_dataset(tmp_path / "data" / "ext", two_group_tables(external=True))
    # No shrinkage: with one segment (no demographics) the prior is global popularity,
    # which would blend the two groups' lists in clusters of 100 users.
    config = TEST_CONFIG.with_overrides(["candidates.shrinkage=0.0"])
    artifact = Stage1Artifact.load(build_stage1(dataset, config, tmp_path))
    groups = artifact.cluster_of(np.arange(1000, 1200))
    assert len(set(groups[:100].tolist())) == 1 and len(set(groups[100:].tolist())) == 1
    lists = [set(artifact.candidates(c).tolist()) for c in range(artifact.n_clusters)]
    assert artifact.n_clusters == 2 and lists[0].isdisjoint(lists[1])
    assert {min(x) // 10 for x in lists} == {0, 1}


def test_cold_users_without_features_get_global_popularity(tmp_path):
    from test_candidate_gen_build import TEST_CONFIG

    tables = two_group_tables(external=True)
    cold = pl.DataFrame({  # no history and nothing known about them (#16 item 4)
        "user_id": pl.Series(np.arange(2000, 2010), dtype=pl.Int32),
        "language": ["unknown"] * 10, "region": ["unknown"] * 10,
        "age_bucket": ["unknown"] * 10, "gender": ["unknown"] * 10, "subscriber": [False] * 10,
    })
    tables["users"] = pl.concat([tables["users"], cold])
    dataset = write_dataset(tmp_path / "data" / "ext", tables)
    config = TEST_CONFIG.with_overrides(["candidates.shrinkage=0.0",
                                         "evaluation.enabled=false"])
    artifact = Stage1Artifact.load(build_stage1(dataset, config, tmp_path))
    fallback = artifact.fallback_cluster
    assert fallback == artifact.n_clusters - 1 == 2  # two behaviour clusters, the fallback
    # Global popularity by distinct holders before the split, ties by package id; package
    # 19 is withdrawn.
    test_start = data.time_split(data.open_dataset(dataset)).test_start
    before = tables["interactions"].filter(pl.col("ts").dt.epoch("ms") < test_start * 1000)
    holders = (before.unique(["user_id", "package_id"])
               .group_by("package_id").len().filter(pl.col("package_id") != 19)
               .sort(["len", "package_id"], descending=[True, False]))
    assert artifact.candidates(fallback).tolist() == holders["package_id"].head(5).to_list()
    assert artifact.cluster_of(np.arange(2000, 2010)).tolist() == [fallback] * 10
    assert set(artifact.cluster_of(np.arange(1000, 1200)).tolist()) == {0, 1}
    # A new user with no (informative) feature: the loader's constant subscriber=false
    # is the same for everyone and does not count.
    assert artifact.assign({}) == fallback
    assert artifact.assign({"language": "unknown", "subscriber": False}) == fallback
    sizes = artifact.clusters.filter(cluster_id=fallback).row(0, named=True)
    assert sizes["n_users"] == 10 and sizes["n_history"] == 0
    assert artifact.metrics["clusters"]["fallback_users"] == 10


def test_no_fallback_when_cold_users_have_features(tmp_path):
    from test_candidate_gen_build import TEST_CONFIG

    tables = two_group_tables()
    cold = tables["users"].head(3).with_columns(pl.Series("user_id", [2000, 2001, 2002],
                                                          dtype=pl.Int32))
    tables["users"] = pl.concat([tables["users"], cold])  # ja users without history
    dataset = write_dataset(tmp_path / "data" / "demo", tables)
    config = TEST_CONFIG.with_overrides(["evaluation.enabled=false"])
    artifact = Stage1Artifact.load(build_stage1(dataset, config, tmp_path))
    assert artifact.fallback_cluster is None and artifact.n_clusters == 2
    ja = artifact.cluster_of(1000)
    assert artifact.cluster_of(np.array([2000, 2001, 2002])).tolist() == [ja] * 3
    assert artifact.assign({"language": "ja"}) == ja


def test_own_top_k_blends_standardised_factor_scores_with_popularity():
    from candidate_gen.metrics import user_top_k

    rng = np.random.default_rng(3)
    users = rng.normal(size=(7, 3)).astype(np.float32)
    packages = rng.normal(size=(12, 3)).astype(np.float32)
    available = np.ones(12, dtype=bool)
    available[4] = False
    popularity = rng.integers(0, 50, 12).astype(np.float64)
    owned = sp.csr_matrix(rng.random((7, 12)) < 0.2)
    avail = np.flatnonzero(available)
    log_pop = np.log1p(popularity[avail])
    z = (log_pop - log_pop.mean()) / log_pop.std()
    for weight in (0.0, 0.7, 5.0):
        got = user_top_k(users, packages, available, owned, 4, popularity, weight)
        for u in range(7):
            raw = users[u] @ packages[avail].T
            score = raw / raw.std() + weight * z if weight else raw
            order = [p for p in avail[np.argsort(-score, kind="stable")]
                     if not owned[u, p]][:4]
            assert got[u].tolist() == order
    # A prior this strong ranks by popularity alone (ties aside).
    got = user_top_k(users, packages, available, owned, 3, popularity, 1e6)
    top = avail[np.argsort(-popularity[avail], kind="stable")]
    for u in range(7):
        assert popularity[got[u]].tolist() == popularity[[p for p in top
                                                          if not owned[u, p]][:3]].tolist()


def test_bench_stage1_runs_the_tuned_config_of_its_dataset(tmp_path):
    from bench.bench_stage1 import tuned_config

    dataset = tmp_path / "data" / "large"
    assert tuned_config(dataset, tmp_path) is None  # nothing tuned: the defaults
    written = tmp_path / "stage1-tune" / "large.toml"
    written.parent.mkdir()
    KNOWN.save(written)
    assert tuned_config(dataset, tmp_path) == written
    assert tuned_config(tmp_path / "data" / "small", tmp_path) is None
