"""Stage 1 building blocks: config, matrix weights, k-anonymity, coverage, cold start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from implicit.nearest_neighbours import bm25_weight

import data
from candidate_gen import (
    ALSConfig,
    CandidateConfig,
    ClusterConfig,
    EvaluationConfig,
    MatrixConfig,
    Stage1Config,
    fit_stage1,
    load_stage1_data,
)
from candidate_gen.clusters import (
    ColdStartAssigner,
    UserClusterer,
    UserFeatureEncoder,
    cluster_means,
    label_demand,
    merge_small_clusters,
    package_label_matrix,
    package_mean_taste,
    select_candidates,
)
from candidate_gen.factors import (
    FactorModel,
    build_interaction_matrix,
    confidence_matrix,
    index_of,
)
from candidate_gen.metrics import list_recall, user_top_k

# -- config -------------------------------------------------------------------------------


def test_config_round_trips_json_and_toml(tmp_path):
    config = Stage1Config().with_overrides(
        ["als.factors=16", "clusters.features=[\"language\"]", "matrix.recency_decay=false",
         "matrix.event_weights={purchase = 2.5, download = 0.5}"])
    assert config.factors == 16 and config.als.factors == 16
    assert config.regularization == config.als.regularization
    assert Stage1Config.from_json(config.to_json()) == config
    assert Stage1Config.from_toml(config.to_toml()) == config
    assert Stage1Config.load(config.save(tmp_path / "c.toml")) == config
    assert Stage1Config.load(config.save(tmp_path / "c.json")) == config


def test_every_config_field_is_documented():
    sections = (Stage1Config, MatrixConfig, ALSConfig, ClusterConfig, CandidateConfig,
                EvaluationConfig)
    for section in sections:
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no docstring"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["als.factors=0"], "als.factors"),
        (["als.factor=8"], "unknown key 'als.factor'"),
        (["nope.x=1"], "unknown config section 'nope'"),
        (["als.factors"], "not of the form"),
        (["matrix.event_weights={purchase = 1.0}"], "missing ['download']"),
        (["matrix.event_weights={purchase = 1.0, download = 1.0, view = 1.0}"],
         "unknown ['view']"),
        (["matrix.event_weights={purchase = 1.0, download = -1.0}"], "must be >= 0"),
        (["candidates.top_labels=40"], "40 × 3 = 120 must be <= n_candidates=100"),
        (["clusters.features=[\"shoe_size\"]"], "clusters.features.0"),
        (["als.algorithm=\"svd\""], "als.algorithm"),
    ],
)
def test_bad_config_is_rejected_naming_the_problem(overrides, message):
    with pytest.raises(data.ConfigError) as err:
        Stage1Config().with_overrides(overrides)
    assert message in str(err.value)


def test_bad_config_files(tmp_path):
    (tmp_path / "bad.toml").write_text("[als]\nfactors = 'many'\n")
    with pytest.raises(data.ConfigError, match=r"bad.toml: invalid stage-1 config: als.factors"):
        Stage1Config.load(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("[als\n")
    with pytest.raises(data.ConfigError, match="not valid TOML"):
        Stage1Config.load(tmp_path / "broken.toml")
    (tmp_path / "c.yaml").write_text("als: {}\n")
    with pytest.raises(data.ConfigError, match=r"expected \.toml or \.json"):
        Stage1Config.load(tmp_path / "c.yaml")
    with pytest.raises(data.ConfigError, match="not found"):
        Stage1Config.load(tmp_path / "missing.json")


# -- matrix -------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)
END = (T0 + timedelta(days=1)).timestamp()  # after every test interaction


def _users(ids):
    return data.validate_frame(pl.DataFrame({
        "user_id": pl.Series(ids, dtype=pl.Int32), "language": ["ja"] * len(ids),
        "region": ["JP"] * len(ids), "age_bucket": ["20-29"] * len(ids),
        "gender": ["f"] * len(ids), "subscriber": [False] * len(ids)}), "users")


def _packages(ids, available=None):
    n = len(ids)
    return data.validate_frame(pl.DataFrame({
        "package_id": pl.Series(ids, dtype=pl.Int32),
        "creator_id": pl.Series([1] * n, dtype=pl.Int32),
        "character": ["c"] * n, "n_stickers": pl.Series([8] * n, dtype=pl.Int16),
        "premium": [False] * n,
        "released_at": pl.Series([T0] * n, dtype=pl.Datetime("ms", "UTC")),
        "available": available or [True] * n}), "packages")


def _interactions(rows):
    user, package, event, days_before = zip(*rows, strict=True)
    return data.validate_frame(pl.DataFrame({
        "user_id": pl.Series(user, dtype=pl.Int32),
        "package_id": pl.Series(package, dtype=pl.Int32),
        "event": list(event), "weight": pl.Series([1.0] * len(user), dtype=pl.Float32),
        "ts": pl.Series([T0 - timedelta(days=d) for d in days_before],
                        dtype=pl.Datetime("ms", "UTC"))}), "interactions")


def test_matrix_weights_are_exact():
    frame = _interactions([(7, 30, "purchase", 0), (7, 30, "download", 10), (9, 20, "download", 10),
                           (9, 30, "download", 0)])
    config = MatrixConfig(half_life_days=10)
    m = build_interaction_matrix(frame, _users([9, 7]), _packages([30, 20, 10]), config, END,
                                 np.random.default_rng(0))
    assert m.user_ids.tolist() == [7, 9] and m.package_ids.tolist() == [10, 20, 30]
    expected = np.array([[0, 0, 4.0 + 0.5], [0, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(m.train.toarray(), expected, rtol=1e-6)
    assert m.holdout is None and m.n_interactions == 4


def test_matrix_rejects_unknown_ids_and_events():
    users, packages, rng = _users([1]), _packages([1]), np.random.default_rng(0)
    with pytest.raises(data.DataFileError,
                       match=r"1 row\(s\) have a package_id not in table 'packages' \(e\.g\. \[5"):
        build_interaction_matrix(_interactions([(1, 5, "purchase", 0)]), users, packages,
                                 MatrixConfig(), END, rng)
    with pytest.raises(data.DataFileError, match="user_id not in table 'users'"):
        build_interaction_matrix(_interactions([(2, 1, "purchase", 0)]), users, packages,
                                 MatrixConfig(), END, rng)
    with pytest.raises(data.DataFileError, match=r"column 'event' holds \['like'\]"):
        build_interaction_matrix(_interactions([(1, 1, "like", 0)]), users, packages,
                                 MatrixConfig(), END, rng)
    with pytest.raises(data.DataFileError, match="duplicate id"):
        build_interaction_matrix(_interactions([(1, 1, "purchase", 0)]), _users([1, 1]),
                                 packages, MatrixConfig(), END, rng)


def test_fit_sees_nothing_after_the_split_and_evaluates_only_new_packages():
    # Split 5 days before T0. User 1 holds 1, 2 before it and gets 2 (again), 3, 4 after;
    # user 2 has no history before it (a new user); user 3 has history and nothing new.
    split = (T0 - timedelta(days=5)).timestamp()
    rows = [(1, 1, "download", 10), (1, 2, "purchase", 8), (1, 2, "download", 2),
            (1, 3, "download", 1), (1, 4, "purchase", 0), (2, 5, "download", 1),
            (3, 1, "download", 9), (3, 1, "download", 3)]
    m = build_interaction_matrix(_interactions(rows), _users([1, 2, 3]),
                                 _packages(list(range(1, 6))), MatrixConfig(recency_decay=False),
                                 split, np.random.default_rng(0), window=(split, END))
    # Only the interactions before the split: user 1's purchase of 2 weighs 4, the later
    # download of 2 is not added; user 3's second download of 1 is after the split.
    np.testing.assert_allclose(m.train.toarray(), [[1, 4, 0, 0, 0], [0] * 5, [1, 0, 0, 0, 0]])
    assert m.n_fit_interactions == 3 and m.fit_end == split
    assert m.reference_ms == int((T0 - timedelta(days=8)).timestamp() * 1000)
    assert m.holdout is not None and m.holdout.rows.tolist() == [0]
    assert m.holdout.test.toarray()[0].nonzero()[0].tolist() == [2, 3]  # packages 3, 4
    assert m.holdout.new_rows.tolist() == [1]
    assert m.holdout.new_test.toarray()[0].nonzero()[0].tolist() == [4]
    with pytest.raises(ValueError, match="would overlap the fit"):
        build_interaction_matrix(_interactions(rows), _users([1, 2, 3]),
                                 _packages(list(range(1, 6))), MatrixConfig(), split,
                                 np.random.default_rng(0), window=(split - 1.0, END))
    m = build_interaction_matrix(_interactions(rows), _users([1, 2, 3]),
                                 _packages(list(range(1, 6))), MatrixConfig(), split,
                                 np.random.default_rng(0), window=(split, END),
                                 eligible=lambda r: np.asarray(r) != 0)
    assert m.holdout is not None and m.holdout.rows.tolist() == []  # user 1 not eligible


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 12), n_log=st.integers(1, 80))
def test_matrix_and_holdout_do_not_depend_on_log_order(seed, n_users, n_log):
    # The user-ordered fast path and the general path must agree entry for entry.
    rng = np.random.default_rng(seed)
    rows = [(int(u), int(p), str(e), int(d)) for u, p, e, d in zip(
        rng.integers(0, n_users, n_log), rng.integers(0, 6, n_log),
        rng.choice(["purchase", "download"], n_log), rng.integers(0, 40, n_log), strict=True)]
    split = (T0 - timedelta(days=10)).timestamp()
    users, packages = _users(list(range(n_users))), _packages(list(range(6)))
    by_user = sorted(rows, key=lambda r: r[0])
    shuffled = [rows[i] for i in rng.permutation(n_log)]
    built = [build_interaction_matrix(_interactions(log), users, packages, MatrixConfig(),
                                      split, np.random.default_rng(1), window=(split, END),
                                      eval_users=5)
             for log in (by_user, shuffled)]
    a, b = built
    np.testing.assert_allclose(a.train.toarray(), b.train.toarray(), rtol=1e-6)
    assert a.train.has_canonical_format and b.train.has_canonical_format
    assert a.holdout is not None and b.holdout is not None
    assert a.holdout.rows.tolist() == b.holdout.rows.tolist()
    np.testing.assert_array_equal(a.holdout.test.toarray(), b.holdout.test.toarray())
    # a held-out package is new to its user: never in what they held before the split
    overlap = a.train[a.holdout.rows].toarray() * a.holdout.test.toarray()
    assert not overlap.any()
    # nothing at or after the split is in train
    late = {(u, p) for u, p, _, d in rows if d <= 10}
    early = {(u, p) for u, p, _, d in rows if d > 10}
    dense = a.train.toarray()
    for u, p in late - early:
        assert dense[u, p] == 0


def test_confidence_is_one_plus_alpha_weight_and_leaves_train_alone():
    train = sp.csr_matrix(np.array([[0, 0.5, 0], [2.0, 0, 1.0]], np.float32))
    before = train.toarray().copy()
    conf = confidence_matrix(train, ALSConfig(alpha=4.0, confidence="linear"))
    assert conf.dtype == np.float32
    np.testing.assert_allclose(conf.toarray(), [[0, 3.0, 0], [9.0, 0, 5.0]])
    log_conf = confidence_matrix(train, ALSConfig(alpha=4.0, confidence="log"))
    np.testing.assert_allclose(log_conf.toarray(), [[0, 1 + 4 * np.log(1.5), 0],
                                                    [1 + 4 * np.log(3.0), 0, 1 + 4 * np.log(2.0)]],
                               rtol=1e-6)
    wide = sp.csr_matrix(np.array([[1, 0, 0], [3, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32))
    bm25 = confidence_matrix(wide, ALSConfig(alpha=2.0, confidence="bm25"))
    expected = 1 + 2 * bm25_weight(wide, K1=100.0, B=0.8).toarray()
    assert bm25.dtype == np.float32 and bm25.nnz == 4
    np.testing.assert_allclose(bm25.toarray()[wide.toarray() > 0], expected[wide.toarray() > 0],
                               rtol=1e-5)
    assert bm25[1, 0] > bm25[0, 0] > 1  # more weight, more confidence; above unobserved
    np.testing.assert_array_equal(train.toarray(), before)


def test_index_of_dense_and_sparse_ids():
    found = index_of(np.array([2, 5, 9]), np.array([9, 2, 4, -1, 100]))
    assert found.tolist() == [2, 0, -1, -1, -1]
    # ids 0..n-1: an id is its own position; outside the range is absent
    assert index_of(np.arange(4), np.array([3, 0, 4, -2, 2])).tolist() == [3, 0, -1, -1, 2]
    assert index_of(np.arange(4), np.array([1, 2], np.int64)).dtype == np.int32
    big = np.array([3, 2_000_000_000], dtype=np.int64)
    assert index_of(big, np.array([2_000_000_000, 4])).tolist() == [1, -1]


# -- k-anonymity ----------------------------------------------------------------------------


def test_threaded_search_equals_one_faiss_search():
    import faiss

    from candidate_gen.clusters import faiss_threads, search, search_threads

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(8)
    index.add(rng.normal(size=(500, 8)).astype(np.float32))
    queries = rng.normal(size=(9000, 8)).astype(np.float32)  # enough to split over threads
    before_omp = faiss.omp_get_max_threads()
    expected_d, expected_i = index.search(queries, 7)
    with faiss_threads(3):
        assert search_threads() == 3 and faiss.omp_get_max_threads() == 1
        got_d, got_i = search(index, queries, 7)
    assert search_threads() == 1 and faiss.omp_get_max_threads() == before_omp
    np.testing.assert_array_equal(got_i, expected_i)
    np.testing.assert_allclose(got_d, expected_d, rtol=1e-6)
    with faiss_threads(0):  # every core
        assert search_threads() >= 1
        np.testing.assert_array_equal(search(index, queries[:10], 3)[1],
                                      expected_i[:10, :3])


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-3, 3), min_size=1, max_size=40), n=st.integers(1, 45))
def test_top_stable_equals_a_stable_sort(values, n):
    from candidate_gen.clusters import top_stable

    scores = np.asarray(values, dtype=np.float32) / 2  # many ties
    assert top_stable(scores, n).tolist() == np.argsort(-scores, kind="stable")[:n].tolist()


def test_merge_small_clusters_exact():
    # 1-D clusters at 0 (size 3), 1 (size 60), 10 (size 5), 12 (size 70), min size 50:
    # the size-3 cluster joins the one at 1, the size-5 cluster joins the one at 12.
    sizes = np.array([3, 60, 5, 70])
    means = np.array([[0.0], [1.0], [10.0], [12.0]], dtype=np.float32)
    labels = np.repeat(np.arange(4), sizes)
    new, centres, new_sizes, merged = merge_small_clusters(labels, means, sizes, 50)
    assert merged == 2
    assert new_sizes.tolist() == [63, 75]
    assert new.tolist() == [0] * 63 + [1] * 75
    np.testing.assert_allclose(centres[:, 0], [60 / 63, (50 + 840) / 75], rtol=1e-6)


def test_merge_refuses_too_few_users():
    with pytest.raises(data.ConfigError,
                       match=r"n_users=3 should be >= clusters\.min_cluster_size=5"):
        merge_small_clusters(np.zeros(3, int), np.zeros((1, 2), np.float32), np.array([3]), 5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 400), k=st.integers(1, 40), min_size=st.integers(1, 60),
       seed=st.integers(0, 2**16))
def test_no_cluster_is_smaller_than_the_minimum(n, k, min_size, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32) * rng.gamma(1.0, size=(n, 1)).astype(np.float32)
    if n < min_size:
        with pytest.raises(data.ConfigError):
            UserClusterer(k, min_size, niter=5, seed=seed).fit(x)
        return
    model = UserClusterer(k, min_size, niter=5, seed=seed).fit(x)
    assert model.sizes_.min() >= min_size
    assert model.sizes_.sum() == n
    assert np.bincount(model.labels_, minlength=model.n_clusters_).tolist() == model.sizes_.tolist()
    means, _ = cluster_means(x, model.labels_, model.n_clusters_)
    np.testing.assert_allclose(means, model.cluster_centers_, atol=1e-4)


# -- candidates and coverage ---------------------------------------------------------------


def test_candidates_exclude_unavailable_and_rank_by_score():
    factors = np.array([[1, 0], [0.9, 0], [0.8, 0], [0, 1], [0, 0.5]], dtype=np.float32)
    centroids = np.array([[1, 0], [0, 1]], dtype=np.float32)
    available = np.array([True, False, True, True, True])
    scores = centroids @ factors[available].T
    lists = select_candidates(scores, available, CandidateConfig(n_candidates=2, top_labels=0))
    assert lists.packages.tolist() == [[0, 2], [3, 4]]
    np.testing.assert_allclose(lists.scores, [[1, 0.8], [1, 0.5]])


def test_coverage_swaps_in_best_carrier_and_drops_lowest_unneeded():
    # Scores for the one cluster: package p scores 10 - p. Label 0 is carried by 0 and 1,
    # label 1 only by packages 7 and 8 (outside the plain top 4 = 0..3).
    factors = (10.0 - np.arange(9, dtype=np.float32))[:, None]
    shares = sp.csr_matrix(np.array(
        [[1, 0], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 1], [0, 1]], dtype=np.float32))
    demand = np.array([[0.5, 0.5]], dtype=np.float32)
    config = CandidateConfig(n_candidates=4, top_labels=2, min_packages_per_label=2)
    lists = select_candidates(factors.T, np.ones(9, bool), config,
                              shares, demand, np.array([11, 12], dtype=np.int32))
    assert lists.packages.tolist() == [[0, 1, 7, 8]]  # 2 and 3 dropped, 7 and 8 swapped in
    cov = lists.coverage.sort("label_id")
    assert cov["n_in_top"].to_list() == [2, 0]
    assert cov["n_candidates"].to_list() == [2, 2]
    assert cov["covered"].all() and lists.n_swapped == 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n_packages=st.integers(5, 120), n_labels=st.integers(1, 12),
       n_candidates=st.integers(3, 40), m=st.integers(1, 3), top=st.integers(0, 6))
def test_label_coverage_guarantee_holds(seed, n_packages, n_labels, n_candidates, m, top):
    if top * m > n_candidates:
        return
    rng = np.random.default_rng(seed)
    k, d = 4, 3
    factors = rng.normal(size=(n_packages, d)).astype(np.float32)
    centroids = rng.normal(size=(k, d)).astype(np.float32)
    available = rng.random(n_packages) < 0.85
    available[0] = True
    shares = sp.csr_matrix((rng.random((n_packages, n_labels)) < 0.15).astype(np.float32))
    demand = rng.dirichlet(np.ones(n_labels), size=k).astype(np.float32)
    config = CandidateConfig(n_candidates=n_candidates, top_labels=top, min_packages_per_label=m,
                             min_label_share=0.05)
    lists = select_candidates(centroids @ factors[available].T, available, config, shares,
                              demand, np.arange(n_labels, dtype=np.int32))
    n = min(n_candidates, int(available.sum()))
    assert lists.packages.shape == (k, n)
    carriers = shares.toarray() > 0
    for c in range(k):
        chosen = lists.packages[c]
        assert len(set(chosen.tolist())) == n and available[chosen].all()
        assert np.all(np.diff(lists.scores[c]) <= 1e-6)
        wanted = [j for j in np.argsort(-demand[c], kind="stable")[:top] if demand[c, j] >= 0.05]
        for j in wanted:
            need = min(m, int((carriers[:, j] & available).sum()))
            assert carriers[chosen, j].sum() >= need
    assert lists.coverage["covered"].all()


# -- cold start ----------------------------------------------------------------------------


def test_cold_start_assigns_by_features_and_ignores_unknown():
    users = pl.DataFrame({"language": ["ja", "ja", "th", "th", "th"],
                          "subscriber": [True, False, False, False, False]})
    encoder = UserFeatureEncoder(["language", "subscriber"]).fit(users)
    assert encoder.categories_ == {"language": ["ja", "th"], "subscriber": ["false", "true"]}
    x = encoder.transform(users)
    labels = np.array([0, 0, 1, 1, 1])
    centroids, sizes = cluster_means(x, labels, 2)
    assigner = ColdStartAssigner(encoder.block_sizes).fit(centroids, sizes)
    assert assigner.predict(encoder.transform({"language": "ja"})).tolist() == [0]
    th_user = encoder.transform({"language": "th", "subscriber": False})
    assert assigner.predict(th_user).tolist() == [1]
    # Unknown or unseen values carry no information: the larger cluster wins.
    assert assigner.predict(encoder.transform({"language": "unknown"})).tolist() == [1]
    assert assigner.predict(encoder.transform({"language": "xx"})).tolist() == [1]
    restored = UserFeatureEncoder.from_dict(encoder.to_dict())
    np.testing.assert_array_equal(restored.transform(users), x)


def test_list_recall_exact():
    test = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    lists = np.array([[0, 2], [3, -1]])
    assert list_recall(test, lists, np.array([0, 1])) == pytest.approx((0.5 + 1.0) / 2)
    assert list_recall(test, lists, np.array([1, 0])) == pytest.approx(0.0)


def test_user_top_k_skips_owned_and_unavailable():
    package_factors = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    users = np.array([[1.0], [-1.0]], dtype=np.float32)
    available = np.array([True, True, False, True, True])
    owned = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    top = user_top_k(users, package_factors, available, owned, 2)
    assert top.tolist() == [[1, 3], [3, 1]]
    assert user_top_k(users, package_factors, available, owned, 4).tolist() == [
        [1, 3, 4, -1], [3, 1, 0, -1]]


def test_user_top_k_is_exact_for_heavy_owners():
    rng = np.random.default_rng(3)
    package_factors = rng.normal(size=(300, 4)).astype(np.float32)
    users = rng.normal(size=(40, 4)).astype(np.float32)
    available = rng.random(300) < 0.9
    sparse_owned = sp.random(40, 300, density=0.05, format="lil", random_state=1,
                             dtype=np.float32)
    sparse_owned[0, :250] = 1.0  # one heavy owner beyond the 95th percentile
    owned = sp.csr_matrix(sparse_owned)
    scores = users @ package_factors.T
    scores[:, ~available] = -np.inf
    scores[owned.toarray() > 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    got = user_top_k(users, package_factors, available, owned, 10)
    for row in range(40):
        valid = np.isfinite(scores[row, expected[row]])
        assert got[row][valid].tolist() == expected[row][valid].tolist()
        assert (got[row][~valid] == -1).all()


def test_label_demand_and_package_label_shares_exact():
    stickers = pl.DataFrame({
        "sticker_id": [1, 2, 3, 4], "package_id": [10, 20, 20, 30],
        "label_ids": [[7], [7], [8], []],
    }, schema_overrides={"label_ids": pl.List(pl.Int32)})
    shares, label_ids = package_label_matrix(stickers, np.array([10, 20, 30], dtype=np.int32))
    assert label_ids.tolist() == [7, 8]
    np.testing.assert_allclose(shares.toarray(), [[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    train = sp.csr_matrix(np.array([[2, 0, 0], [0, 2, 0], [0, 1, 0], [0, 0, 5]],
                                   dtype=np.float32))
    demand = label_demand(train, np.array([0, 0, 1, -1]), 2, shares)
    np.testing.assert_allclose(demand, [[0.75, 0.25], [0.5, 0.5]])


def test_package_mean_taste_is_the_mean_of_held_unit_package_factors():
    # unit factors (.6, .8), (0, 1), (1, 0)
    package = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], np.float32)
    # user 0 holds p0 (weight 5) and p1 (weight 0.1): each counts once, only its direction;
    # user 1 holds nothing; user 2 holds p2.
    held = sp.csr_matrix(np.array([[5.0, 0.1, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]],
                                  np.float32))
    np.testing.assert_allclose(package_mean_taste(held, package),
                               [[0.3, 0.9], [0.0, 0.0], [1.0, 0.0]], atol=1e-6)


def test_clusters_on_package_means_separate_what_users_hold(tmp_path):
    """User factors that say nothing (all equal) cannot split users; the mean of their held
    packages' directions does, exactly by which packages they hold."""
    from test_candidate_gen_split import KNOWN, SPLIT, known_tables, write_dataset

    ds = write_dataset(tmp_path / "known", known_tables(), SPLIT)
    config = KNOWN.with_overrides(["clusters.feature_weight=0.0"])
    loaded = load_stage1_data(data.open_dataset(ds), config, "test")
    package = np.array([[1, 0]] * 3 + [[1, 1]] * 2 + [[0, 1]] * 3, np.float32)
    same = FactorModel(np.ones((200, 2), np.float32), package, None, 0.0)
    plain = fit_stage1(loaded, config.with_overrides(["clusters.representation=user_factors"]),
                       factors=same)
    assert plain.clusterer.n_clusters_ == 1  # identical points: one cluster
    by_packages = fit_stage1(
        loaded, config.with_overrides(["clusters.representation=package_mean"]), factors=same)
    cluster = by_packages.user_cluster
    assert by_packages.clusterer.n_clusters_ == 2
    assert len(set(cluster[:100])) == 1 and len(set(cluster[100:])) == 1  # ja 0-2, th 5-7
    assert cluster[0] != cluster[100]


def test_fit_groups_keeps_given_groups_and_merges_the_small_ones():
    # groups 0 (3 users at 0), 1 (1 user at 9, nearer group 2), 2 (2 users at 10)
    x = np.array([[0.0], [0.0], [0.0], [9.0], [10.0], [10.0]], np.float32)
    fitted = UserClusterer(n_clusters=99, min_cluster_size=2).fit_groups(
        x, np.array([0, 0, 0, 1, 2, 2]))
    assert fitted.labels_.tolist() == [0, 0, 0, 1, 1, 1]
    assert fitted.n_merged_ == 1 and fitted.sizes_.tolist() == [3, 3]
    np.testing.assert_allclose(fitted.cluster_centers_, [[0.0], [29.0 / 3]], rtol=1e-6)
