"""The stage-1 oracle experiment (bench/bench_stage1_oracle.py), issue #16.

Hand-computed lists on tiny matrices, the oracle's clusters on two obvious tastes, the
true choice model, and one end-to-end run on two generated tiny worlds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from bench import bench_stage1_oracle as oracle
from candidate_gen import Stage1Config


def _matrix(rows: list[list[int]], n_packages: int) -> sp.csr_matrix:
    r = [i for i, held in enumerate(rows) for _ in held]
    c = [p for held in rows for p in held]
    return sp.csr_matrix((np.full(len(r), 2.5, np.float32), (r, c)),
                         shape=(len(rows), n_packages))


def test_shared_lists_are_members_popularity_by_hand():
    # users 0, 1 in group 0 hold {0, 1} and {1}; users 2, 3 in group 1 hold {2}, {2, 3}
    train = _matrix([[0, 1], [1], [2], [2, 3]], 4)
    group = np.array([0, 0, 1, 1])
    every = np.ones(4, dtype=bool)
    assert oracle.shared_lists(train, group, 2, every, 4).tolist() == [[1, 0, 2, 3],
                                                                      [2, 3, 0, 1]]
    assert oracle.shared_lists(train, group, 2, every, 2).tolist() == [[1, 0], [2, 3]]
    no_p1 = np.array([True, False, True, True])
    assert oracle.shared_lists(train, group, 2, no_p1, 2).tolist() == [[0, 2], [2, 3]]
    # user 1 left out: group 0 is user 0 alone, whose packages tie (ties by index)
    assert oracle.shared_lists(train, np.array([0, -1, 1, 1]), 2, every, 2)[0].tolist() \
        == [0, 1]
    # shrunk with m = 2 towards a prior holding only package 3 in group 0:
    # p1 (2 + 0) / 4 = 0.5, p3 (0 + 2) / 4 = 0.5 (tie: by index), p0 1 / 4
    prior = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert oracle.shared_lists(train, group, 2, every, 3, prior, 2.0)[0].tolist() == [1, 3, 0]
    with pytest.raises(ValueError, match="prior"):
        oracle.shared_lists(train, group, 2, every, 3, None, 2.0)


def test_segment_prior_by_hand():
    train = _matrix([[0], [0, 1], [1], []], 2)
    segment = np.array([0, 0, 1, 1])  # user 3 has no history: not in any share
    cluster = np.array([0, 1, 1, 1])
    prior = oracle.segment_prior(train, cluster, 2, segment, 2)
    # segment 0 shares: p0 2/2, p1 1/2; segment 1 (one user with history): p0 0, p1 1
    # cluster 0 = {user 0: seg 0}; cluster 1 = {user 1: seg 0, user 2: seg 1}
    np.testing.assert_allclose(prior, [[1.0, 0.5], [0.5, 0.75]])


def test_oracle_clusters_on_two_tastes_list_each_groups_packages():
    rng = np.random.default_rng(0)
    n = 240  # two tastes of 120 users; k-anonymity 50 allows up to three clusters
    taste = np.zeros((n, 4), dtype=np.float32)
    taste[:120, 0] = 1.0
    taste[120:, 1] = 1.0
    taste += rng.normal(0, 0.01, taste.shape).astype(np.float32)
    # group A holds packages 0..3 (package j by 100 - 20 j users), group B packages 4..7
    rows: list[list[int]] = []
    for u in range(n):
        base, i = (0, u) if u < 120 else (4, u - 120)
        rows.append([base + j for j in range(4) if i < 100 - 20 * j])
    rows[0] = []  # a user without history is placed by the nearest centre
    train = _matrix(rows, 8)
    space = oracle.oracle_space(taste, np.zeros((n, 0), np.float32), 0.0, 1)
    config = Stage1Config().with_overrides(["clusters.n_clusters=2",
                                            "candidates.n_candidates=4",
                                            "candidates.top_labels=1"])
    result = oracle.oracle_lists(space, train, np.ones(8, dtype=bool), config, "members")
    assert result.n_clusters == 2
    a, b = result.user_cluster[1], result.user_cluster[120]
    assert a != b
    assert (result.user_cluster[:120] == a).all() and (result.user_cluster[120:] == b).all()
    assert result.lists[a].tolist() == [0, 1, 2, 3]
    assert result.lists[b].tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="kind"):
        oracle.oracle_lists(space, train, np.ones(8, dtype=bool), config, "votes")


def test_shared_lists_auto_shrinkage_is_the_median_group():
    # group 0: four users, package 0 held by 3, package 1 by 2; groups 1 and 2: 2 and 6
    # users holding package 2. Median group 4 pseudo-users; prior: package 1 only.
    rows = [[0, 1], [0, 1], [0], [2]] + [[2]] * 2 + [[2]] * 6
    member_of = np.array([0] * 4 + [1] * 2 + [2] * 6)
    prior = np.tile([0.0, 1.0, 0.0], (3, 1))
    train, avail = _matrix(rows, 3), np.ones(3, dtype=bool)
    # m = 0: package 0 (3/4) first; m = 4: (3 + 0)/8 = 0.375 < (2 + 4)/8 = 0.75
    assert oracle.shared_lists(train, member_of, 3, avail, 1, prior, 0.0)[0].tolist() == [0]
    assert oracle.shared_lists(train, member_of, 3, avail, 1, prior, "auto")[0].tolist() == [1]


def test_shrunk_oracle_takes_its_own_shrinkage():
    # the two-taste log above; one segment, so the prior is global popularity:
    # packages 4, 0, 5, 1 held by 100, 99, 80, 79 users (user 0 holds nothing)
    n = 240
    taste = np.zeros((n, 4), dtype=np.float32)
    taste[:120, 0] = 1.0
    taste[120:, 1] = 1.0
    taste += np.random.default_rng(0).normal(0, 0.01, taste.shape).astype(np.float32)
    rows = [[(0 if u < 120 else 4) + j for j in range(4) if u % 120 < 100 - 20 * j]
            for u in range(n)]
    rows[0] = []
    train = _matrix(rows, 8)
    space = oracle.oracle_space(taste, np.zeros((n, 0), np.float32), 0.0, 1)
    config = Stage1Config().with_overrides(["clusters.n_clusters=2",
                                            "candidates.n_candidates=4",
                                            "candidates.top_labels=1",
                                            "candidates.min_shrinkage=0"])
    segment = np.zeros(n, dtype=np.int64)
    avail = np.ones(8, dtype=bool)
    own = oracle.oracle_lists(space, train, avail, config, "shrunk", segment, 1, shrinkage=0.0)
    a, b = own.user_cluster[1], own.user_cluster[120]
    assert own.lists[a].tolist() == [0, 1, 2, 3] and own.lists[b].tolist() == [4, 5, 6, 7]
    prior_only = oracle.oracle_lists(space, train, avail, config, "shrunk", segment, 1,
                                     shrinkage=1e9)
    assert prior_only.lists.tolist() == [[4, 0, 5, 1], [4, 0, 5, 1]]
    # "auto" is the job's rule: the median cluster's members with history (119 and 120).
    auto = oracle.oracle_lists(space, train, avail, config, "shrunk", segment, 1,
                               shrinkage="auto")
    median = oracle.oracle_lists(space, train, avail, config, "shrunk", segment, 1,
                                 shrinkage=119.5)
    assert auto.lists.tolist() == median.lists.tolist()


class _Table:
    def __init__(self, root: Path, tables: dict[str, pl.DataFrame]) -> None:
        self.root, self._tables = root, tables

    def table(self, name: str) -> pl.DataFrame:
        return self._tables[name]


def test_source_ids_follow_the_loaders_id_map(tmp_path):
    users = pl.DataFrame({"user_id": [2, 0, 1]})
    plain = _Table(tmp_path / "world", {"users": users})
    assert oracle.source_ids(plain, "users").tolist() == [0, 1, 2]  # a world is its own
    (tmp_path / "log" / "id_maps").mkdir(parents=True)
    pl.DataFrame({"user_id": [1, 0, 2], "external_id": ["30", "7", "12"]}).write_parquet(
        tmp_path / "log" / "id_maps" / "users.parquet")
    mapped = _Table(tmp_path / "log", {"users": users})
    assert oracle.source_ids(mapped, "users").tolist() == [7, 30, 12]
    # the truth's rows of those ids, and an id the truth lacks is an error
    truth_ids = np.array([3, 7, 12, 30])
    assert oracle._rows_of(truth_ids, np.array([7, 30, 12]), tmp_path).tolist() == [1, 3, 2]
    with pytest.raises(oracle.ConfigError, match="does not hold"):
        oracle._rows_of(truth_ids, np.array([7, 8]), tmp_path)
    pl.DataFrame({"user_id": [1, 0, 2], "external_id": ["a", "b", "c"]}).write_parquet(
        tmp_path / "log" / "id_maps" / "users.parquet")
    with pytest.raises(oracle.ConfigError, match="no ground truth"):
        oracle.source_ids(mapped, "users")


def test_oracle_space_scales_the_demographic_block():
    taste = np.array([[3.0, 4.0]])
    demo = np.array([[1.0, 0.0, 0.0, 1.0]])  # two one-hot blocks
    space = oracle.oracle_space(taste, demo, 2.0, 2)
    np.testing.assert_allclose(space, [[0.6, 0.8, np.sqrt(2), 0, 0, np.sqrt(2)]], rtol=1e-6)
    assert np.isclose(np.linalg.norm(space[0, 2:]), 2.0)


def test_true_choice_probabilities_by_hand():
    # creator 0 owns packages 0 and 1, creator 1 package 2; beta 1
    choice = oracle.TrueChoice(
        creator_style=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
        creator_log_pop=np.log([0.5, 0.5]),
        package_style=np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32),
        package_log_quality=np.log([1.0, 2.0, 1.0]),
        package_creator=np.array([0, 0, 1]),
        beta=1.0,
    )
    p = np.exp(choice.log_choice(np.array([[1.0, 0.0]], np.float32)))[0]
    e = np.e
    creator0 = e / (e + 1)
    within0 = np.array([e, 2.0]) / (e + 2.0)
    np.testing.assert_allclose(p, [creator0 * within0[0], creator0 * within0[1],
                                   1 - creator0], rtol=1e-6)
    assert np.isclose(p.sum(), 1.0)
    top = oracle.personal_oracle_top_k(choice, np.array([[1.0, 0.0], [1.0, 0.0]], np.float32),
                                       np.array([True, True, True]),
                                       _matrix([[], [0]], 3), 2)
    assert top.tolist() == [[0, 1], [1, 2]]  # the owned package 0 is left out for user 1
    top = oracle.personal_oracle_top_k(choice, np.array([[1.0, 0.0]], np.float32),
                                       np.array([False, True, True]), _matrix([[]], 3), 5)
    assert top.tolist() == [[1, 2]]


def test_world_name():
    assert oracle.world_name("small", []) == "small"
    assert oracle.world_name("small", ["world.taste_individual=0", "n_users=500"]) == \
        "small-n_users=500-taste_individual=0"


def test_experiment_end_to_end_on_tiny_worlds(tmp_path, monkeypatch, catalog):
    var = tmp_path / "var"
    shutil.copytree(Path(oracle.var_root()) / "catalog", var / "catalog")
    monkeypatch.setenv("STICKERS_VAR", str(var))
    code = oracle.main(["--size", "tiny", "--world", "", "--world", "taste_individual=0",
                        "--set", "clusters.n_clusters=6", "--set",
                        "candidates.n_candidates=40"])
    assert code == 0
    out = json.loads((var / "bench" / "stage1_oracle.json").read_text())
    assert set(out["worlds"]) == {"tiny", "tiny-taste_individual=0"}
    assert not (var / "data" / "tiny").exists() and not (var / "truth" / "tiny").exists()
    for world in out["worlds"].values():
        validation, test = world["validation"], world["test"]
        assert len(test["oracle"]) == len(oracle.ORACLE_WEIGHTS) * len(
            oracle.ORACLE_LIST_KINDS)
        # the oracle's variant is chosen on the validation split, not on the reported one
        assert world["oracle_choice"] == max(validation["oracle"],
                                             key=validation["oracle"].get)
        assert world["oracle_recall"] == test["oracle"][world["oracle_choice"]]
        best = world["best_baseline"]
        assert world["best_baseline_recall"] == max(
            test["recall"][name] for name in ("global_popularity", "language_popularity",
                                              "segment_popularity",
                                              "demographics_assignment"))
        assert world["cluster_vs_oracle"] == pytest.approx(
            test["recall"]["cluster_lists"] / world["oracle_recall"], abs=1e-4)
        assert world["oracle_vs_best_baseline"] == pytest.approx(
            world["oracle_recall"] / test["recall"][best], abs=1e-4)
        for recall in (*test["recall"].values(), *test["oracle"].values()):
            assert 0.0 <= recall <= 1.0
        # the true choice model ranks each user's new packages far better than a shared list
        assert test["recall"]["personal_oracle"] > test["recall"]["cluster_lists"]


def test_oracle_on_a_log_without_demographics_takes_its_worlds_truth(tmp_path, monkeypatch,
                                                                     catalog):
    """--truth-from: a log exported from a world and reloaded (ids renumbered) is scored
    against that world's truth; the personal oracle from the mapped true tastes and
    packages beats the shared lists only if the mapping is right."""
    from bench.bench_stage1 import make_log_without_demographics
    from data import ensure_catalog, generate_world, load_catalog, world_config

    var = tmp_path / "var"
    shutil.copytree(Path(oracle.var_root()) / "catalog", var / "catalog")
    monkeypatch.setenv("STICKERS_VAR", str(var))
    generate_world(world_config("tiny", [], name="tiny"), load_catalog(ensure_catalog(var)), var,
                   show_progress=False)
    make_log_without_demographics("tiny", var)
    with pytest.raises(oracle.ConfigError, match="truth-from"):
        oracle.main(["--size", "tiny-nodemo", "--world", "", "--truth-from", "nowhere"])
    code = oracle.main(["--size", "tiny-nodemo", "--world", "", "--truth-from", "tiny",
                        "--oracle-weight", "0", "--oracle-shrinkage", "0",
                        "--oracle-shrinkage", "100", "--set", "clusters.n_clusters=6",
                        "--set", "candidates.n_candidates=40"])
    assert code == 0
    out = json.loads((var / "bench" / "stage1_oracle.json").read_text())
    world = out["worlds"]["tiny-nodemo"]
    assert set(world["test"]["oracle"]) == {"w=0,members", "w=0,shrunk,m=0",
                                            "w=0,shrunk,m=100"}
    # shrinkage 0 towards the one segment is the members' own popularity
    assert world["test"]["oracle"]["w=0,shrunk,m=0"] == world["test"]["oracle"]["w=0,members"]
    assert world["oracle_choice"] == max(world["validation"]["oracle"],
                                         key=world["validation"]["oracle"].get)
    test = world["test"]["recall"]
    assert test["personal_oracle"] > test["cluster_lists"]
    assert (var / "data" / "tiny-nodemo").is_dir()  # worlds it did not generate stay
