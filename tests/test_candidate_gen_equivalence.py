"""Stage 1's fast paths against their straightforward formulations (issue #16, speed).

Each optimised step of the job (the interaction matrix built from the fit's rows only,
segment codes of a feature subset from one representative per combination, the label
shares by a flat explode, holder counts by a radix-sorted gather, the rows with history
without a copy) must give exactly what the plain formulation gives: these tests fail if
an optimisation changes an output.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import data
from candidate_gen import (
    MatrixConfig,
    Stage1Artifact,
    Stage1Config,
    build_stage1,
    evaluate_stage1,
    fit_stage1,
    load_stage1_data,
    segment_codes,
)
from candidate_gen.clusters import (
    UserSegments,
    nonempty_rows,
    package_label_matrix,
    package_mean_taste,
)
from candidate_gen.factors import build_interaction_matrix, group_order
from candidate_gen.metrics import holder_counts, own_top_k_of, user_top_k

T0 = datetime(2025, 1, 1, tzinfo=UTC)
EVENT_WEIGHT = {"purchase": 4.0, "download": 1.0}


def _tables(user_ids, package_ids, log):
    n_users, n_packages = len(user_ids), len(package_ids)
    users = data.validate_frame(pl.DataFrame({
        "user_id": pl.Series(user_ids, dtype=pl.Int32), "language": ["ja"] * n_users,
        "region": ["JP"] * n_users, "age_bucket": ["20-29"] * n_users,
        "gender": ["f"] * n_users, "subscriber": [False] * n_users}), "users")
    packages = data.validate_frame(pl.DataFrame({
        "package_id": pl.Series(package_ids, dtype=pl.Int32),
        "creator_id": pl.Series([1] * n_packages, dtype=pl.Int32),
        "character": ["c"] * n_packages,
        "n_stickers": pl.Series([8] * n_packages, dtype=pl.Int16),
        "premium": [False] * n_packages,
        "released_at": pl.Series([T0] * n_packages, dtype=pl.Datetime("ms", "UTC")),
        "available": [True] * n_packages}), "packages")
    user, package, event, weight, hours = (list(c) for c in zip(*log, strict=True)) if log \
        else ([], [], [], [], [])
    interactions = data.validate_frame(pl.DataFrame({
        "user_id": pl.Series(user, dtype=pl.Int32),
        "package_id": pl.Series(package, dtype=pl.Int32),
        "event": pl.Series(event, dtype=pl.String),
        "weight": pl.Series(weight, dtype=pl.Float32),
        "ts": pl.Series([T0 + timedelta(hours=h) for h in hours],
                        dtype=pl.Datetime("ms", "UTC"))}), "interactions")
    return users, packages, interactions


def _reference_train(user_ids, package_ids, log, fit_end, half_life_days):
    """The plain formulation: every row before ``fit_end`` weighted in float64, summed."""
    before = [r for r in log if (T0 + timedelta(hours=r[4])).timestamp() < fit_end]
    dense = np.zeros((len(user_ids), len(package_ids)))
    if not before:
        return dense
    newest = max((T0 + timedelta(hours=r[4])).timestamp() for r in before)
    row = {u: i for i, u in enumerate(sorted(user_ids))}
    col = {p: i for i, p in enumerate(sorted(package_ids))}
    for user, package, event, weight, hours in before:
        age_days = (newest - (T0 + timedelta(hours=hours)).timestamp()) / 86_400
        dense[row[user], col[package]] += EVENT_WEIGHT[event] * weight * 0.5 ** (
            age_days / half_life_days)
    return dense


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 9),
       n_packages=st.integers(1, 7), n_log=st.integers(0, 60),
       dense_ids=st.booleans(), by_user=st.booleans(), zero_share=st.sampled_from([0, 0.3]))
def test_matrix_from_the_fit_rows_equals_the_plain_sum(seed, n_users, n_packages, n_log,
                                                        dense_ids, by_user, zero_share):
    # Ids 0..n-1 take the identity path (no lookup), others the lookup; repeated pairs,
    # zero weights, rows after the split and in the window all occur.
    rng = np.random.default_rng(seed)
    offset = 0 if dense_ids else 1000
    step = 1 if dense_ids else 3
    user_ids = [offset + step * i for i in range(n_users)]
    package_ids = [offset + step * i for i in range(n_packages)]
    log = [(int(rng.choice(user_ids)), int(rng.choice(package_ids)),
            str(rng.choice(["purchase", "download"])),
            0.0 if rng.random() < zero_share else float(rng.choice([0.5, 1.0, 2.0])),
            int(rng.integers(0, 96))) for _ in range(n_log)]
    if by_user:
        log.sort(key=lambda r: r[0])
    users, packages, interactions = _tables(user_ids, package_ids, log)
    fit_end = (T0 + timedelta(hours=60)).timestamp()
    config = MatrixConfig(half_life_days=2.0)
    built = build_interaction_matrix(interactions, users, packages, config, fit_end,
                                     np.random.default_rng(0),
                                     window=(fit_end, float("inf")), eval_users=4)
    train = built.train
    assert train.has_canonical_format and train.dtype == np.float32
    assert (train.data > 0).all()  # zero weights and the split's future are not stored
    np.testing.assert_allclose(
        train.toarray(), _reference_train(user_ids, package_ids, log, fit_end, 2.0),
        rtol=2e-6, atol=1e-12)
    assert built.n_interactions == n_log
    assert built.n_fit_interactions == sum(
        (T0 + timedelta(hours=r[4])).timestamp() < fit_end for r in log)
    # The holdout: exactly the window's packages each picked user did not hold before.
    holdout = built.holdout
    assert holdout is not None
    row = {u: i for i, u in enumerate(user_ids)}
    col = {p: i for i, p in enumerate(package_ids)}
    window = {(row[r[0]], col[r[1]]) for r in log
              if (T0 + timedelta(hours=r[4])).timestamp() >= fit_end}
    held = {(int(u), int(p)) for u, p in zip(*train.nonzero(), strict=True)}
    for rows, test in ((holdout.rows, holdout.test), (holdout.new_rows, holdout.new_test)):
        for j, r in enumerate(rows.tolist()):
            expected = {p for (u, p) in window - held if u == r}
            assert set(test[j].nonzero()[1].tolist()) == expected and expected


def test_dense_ids_out_of_range_are_refused_like_any_unknown_id():
    users, packages, interactions = _tables([0, 1, 2], [0, 1], [(3, 0, "purchase", 1.0, 0)])
    with pytest.raises(data.DataFileError, match=r"user_id not in table 'users' \(e\.g\. \[3\]"):
        build_interaction_matrix(interactions, users, packages, MatrixConfig(),
                                 (T0 + timedelta(days=9)).timestamp(), np.random.default_rng(0))
    users, packages, interactions = _tables([0, 1, 2], [0, 1], [(1, -1, "purchase", 1.0, 0)])
    with pytest.raises(data.DataFileError, match=r"package_id not in table 'packages' \(e\.g\. "
                                                 r"\[-1\]"):
        build_interaction_matrix(interactions, users, packages, MatrixConfig(),
                                 (T0 + timedelta(days=9)).timestamp(), np.random.default_rng(0))


def _reference_segments(users: pl.DataFrame, features) -> tuple[np.ndarray, int]:
    """Rank of each user's tuple of values among the sorted distinct tuples."""
    present = [f for f in features if f in users.columns]
    if not present:
        return np.zeros(users.height, dtype=np.int64), 1
    columns = [[("unknown" if v is None else str(v).lower() if isinstance(v, bool) else v)
                for v in users[f].to_list()] for f in present]
    keys = list(zip(*columns, strict=True))
    ordered = sorted(set(keys))
    rank = {key: i for i, key in enumerate(ordered)}
    return np.array([rank[k] for k in keys], dtype=np.int64), len(ordered)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60),
       subset=st.lists(st.sampled_from(["language", "region", "age_bucket", "gender",
                                        "subscriber", "absent"]), max_size=4, unique=True))
def test_segment_codes_of_a_subset_from_representatives(seed, n, subset):
    rng = np.random.default_rng(seed)

    def column(values):
        picked = rng.choice(values, n).tolist()
        return [None if v == "<null>" else v for v in picked]

    users = pl.DataFrame({
        "user_id": pl.Series(np.arange(n), dtype=pl.Int32),
        "language": column(["ja", "th", "en", "<null>"]),
        "region": column(["JP", "TH", "unknown"]),
        "age_bucket": column(["20-29", "50+"]),
        "gender": column(["f", "m", "x", "<null>"]),
        "subscriber": pl.Series(rng.random(n) < 0.5, dtype=pl.Boolean),
    })
    segments = UserSegments(users, ["language", "region", "age_bucket", "gender",
                                    "subscriber"])
    codes, n_codes = segments.codes(subset)
    direct, n_direct = segment_codes(users, subset)
    expected, n_expected = _reference_segments(users, subset)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(direct, expected)
    assert n_codes == n_direct == n_expected
    # a feature outside the coded set falls back to coding the whole table
    partial = UserSegments(users, ["language"])
    np.testing.assert_array_equal(partial.codes(subset)[0], expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_stickers=st.integers(0, 30))
def test_package_label_shares_equal_the_explode_formulation(seed, n_stickers):
    rng = np.random.default_rng(seed)
    lists: list[list[int | None] | None] = []
    for _ in range(n_stickers):
        kind = rng.integers(0, 5)
        if kind == 0:
            lists.append(None)
        elif kind == 1:
            lists.append([])
        else:
            lists.append([None if rng.random() < 0.1 else int(x)
                          for x in rng.integers(0, 6, rng.integers(1, 4))])
    stickers = pl.DataFrame({
        "package_id": pl.Series(rng.integers(0, 5, n_stickers), dtype=pl.Int32),
        "label_ids": pl.Series(lists, dtype=pl.List(pl.Int32))})
    package_ids = np.array([0, 1, 2, 4], dtype=np.int32)  # package 3 is unknown
    shares, label_ids = package_label_matrix(stickers, package_ids)
    flat = stickers.explode("label_ids").drop_nulls()
    expected_ids = sorted(set(flat["label_ids"].to_list()))
    assert label_ids.tolist() == expected_ids
    expected = np.zeros((len(package_ids), len(expected_ids)))
    count = {p: 0 for p in package_ids.tolist()}
    for p in stickers["package_id"].to_list():
        count[p] = count.get(p, 0) + 1
    for p, label in flat.iter_rows():
        if p in count and p != 3:
            expected[package_ids.tolist().index(p), expected_ids.index(label)] += 1 / count[p]
    np.testing.assert_allclose(shares.toarray(), expected, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 40),
       n_packages=st.integers(1, 12), n_groups=st.integers(1, 6), big=st.booleans())
def test_holder_counts_equal_the_dense_sum(seed, n_users, n_packages, n_groups, big):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_packages)) < 0.3) * rng.random((n_users, n_packages))
    train = sp.csr_matrix(dense.astype(np.float32))
    # more groups than int16 holds takes the general sort
    n_all = n_groups + (40_000 if big else 0)
    group = rng.integers(-1, n_groups, n_users) + (40_000 * (rng.random(n_users) < 0.5)
                                                  if big else 0)
    group = np.where(group < 0, -1, group)
    counts = holder_counts(train, group, n_all)
    expected = np.zeros((n_all, n_packages))
    for u in range(n_users):
        if group[u] >= 0:
            expected[group[u]] += dense[u] > 0
    np.testing.assert_array_equal(counts, expected)
    keep = group >= 0
    np.testing.assert_array_equal(group_order(group[keep], n_all),
                                  np.argsort(group[keep], kind="stable"))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 30),
       n_packages=st.integers(1, 8))
def test_rows_with_history_without_a_copy(seed, n_users, n_packages):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_packages)) < 0.2) * rng.random((n_users, n_packages))
    train = sp.csr_matrix(dense.astype(np.float32))
    warm = np.flatnonzero(np.diff(train.indptr) > 0)
    held = nonempty_rows(train, warm)
    np.testing.assert_array_equal(held.toarray(), train[warm].toarray())
    factors = rng.standard_normal((n_packages, 3)).astype(np.float32)
    np.testing.assert_array_equal(package_mean_taste(held, factors),
                                  package_mean_taste(train, factors)[warm])


def test_own_top_k_searched_beside_the_clusters_equals_the_reports_own(tiny_world, tmp_path):
    # The job searches the evaluation's own top-k as soon as the factors exist; the
    # report must be the one evaluate_stage1 makes when it searches them itself.
    config = Stage1Config().with_overrides(["als.factors=8", "clusters.n_clusters=6",
                                            "candidates.n_candidates=40"])
    loaded = load_stage1_data(data.open_dataset(tiny_world), config, "test")
    fit = fit_stage1(loaded, config)
    own = own_top_k_of(loaded, fit.factors, config)
    holdout = loaded.matrix.holdout
    assert own is not None and holdout is not None and own.shape == (len(holdout.rows), 40)
    # against the plain formulation: global popularity = holders over every user
    train = loaded.matrix.train
    holders = (train > 0).sum(axis=0).A1.astype(np.float32)
    available = loaded.packages["available"].to_numpy()
    plain = user_top_k(fit.factors.user_factors[holdout.rows], fit.factors.package_factors,
                       available, train[holdout.rows], 40, holders,
                       config.als.popularity_prior)
    np.testing.assert_array_equal(own, plain)
    assert evaluate_stage1(loaded, fit, config, own_top_k=own) == evaluate_stage1(
        loaded, fit, config)
    # and the job, which overlaps the search with its cluster step, reports the same
    built = build_stage1(tiny_world, config, tmp_path)
    reported = Stage1Artifact.load(built).metrics["evaluation"]
    expected = evaluate_stage1(loaded, fit, config)
    assert reported["recall"] == expected["recall"]


def test_segments_and_label_shares_made_while_the_matrix_builds_are_the_same(tiny_world):
    from concurrent.futures import ThreadPoolExecutor

    config = Stage1Config()
    ds = data.open_dataset(tiny_world)
    plain = load_stage1_data(ds, config, "test")
    with ThreadPoolExecutor(1) as background:
        early = load_stage1_data(ds, config, "test", background=background)
        assert set(early.pending) == {"segments", "label_shares"}
        for features in (["language"], config.clusters.features,
                         config.evaluation.segment_features):
            a, b = early.segments.codes(features), plain.segments.codes(features)
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1] == b[1]
        shares, label_ids = early.label_shares or (None, None)
        assert plain.stickers is not None
        expected, expected_ids = package_label_matrix(plain.stickers, plain.matrix.package_ids)
    assert shares is not None and (shares != expected).nnz == 0
    np.testing.assert_array_equal(label_ids, expected_ids)


def test_loops_split_over_threads_equal_one_thread():
    # holder counts and the per-cluster top lists run their slices in threads inside the
    # job (faiss_threads); the own top-k search beside the clustering runs in one.
    from candidate_gen.clusters import faiss_threads, one_search_thread, select_candidates
    from candidate_gen.clusters import search_threads as threads_now

    rng = np.random.default_rng(7)
    n_users, n_packages, n_groups = 5000, 300, 37
    dense = (rng.random((n_users, n_packages)) < 0.05) * rng.random((n_users, n_packages))
    train = sp.csr_matrix(dense.astype(np.float32))
    group = rng.integers(-1, n_groups, n_users)
    scores = rng.standard_normal((n_groups, n_packages)).astype(np.float32)
    scores[:, :40] = np.round(scores[:, :40])  # ties
    available = np.ones(n_packages, dtype=bool)
    from candidate_gen import CandidateConfig

    config = CandidateConfig(n_candidates=50, top_labels=0)
    single_counts = holder_counts(train, group, n_groups)
    single_lists = select_candidates(scores, available, config)
    factors_u = rng.standard_normal((n_users, 8)).astype(np.float32)
    factors_p = rng.standard_normal((n_packages, 8)).astype(np.float32)
    with faiss_threads(3):
        assert threads_now() == 3
        np.testing.assert_array_equal(holder_counts(train, group, n_groups), single_counts)
        lists = select_candidates(scores, available, config)
        threaded = user_top_k(factors_u, factors_p, available, train, 20,
                              single_counts.sum(axis=0), 3.0)
        with one_search_thread():
            assert threads_now() == 1
            alone = user_top_k(factors_u, factors_p, available, train, 20,
                               single_counts.sum(axis=0), 3.0)
        assert threads_now() == 3
    np.testing.assert_array_equal(lists.packages, single_lists.packages)
    np.testing.assert_array_equal(lists.scores, single_lists.scores)
    np.testing.assert_array_equal(threaded, alone)
