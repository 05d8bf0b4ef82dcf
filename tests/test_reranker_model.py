"""The reranker model: exact scores, the estimator, ONNX parity, input validation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from reranker import (
    OnnxScorer,
    ParameterLayout,
    RerankerInputError,
    export_onnx,
    initial_parameters,
)
from reranker.model import StickerReranker, check_inputs, feature_map, rank_prior, score_candidates

LAYOUT = ParameterLayout(n_factors=2, n_keyword_features=1)
# W = [[1, 2], [0, 1]], a = [3], b = 0.5, c = [1, -1]
THETA = LAYOUT.pack(np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([3.0]), 0.5,
                    np.array([1.0, -1.0]))
U = np.array([1.0, 1.0], np.float32)
V = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
K = np.array([[1.0], [0.0]], np.float32)
R = rank_prior(np.array([0, 1]))  # [0, -log 2]


def test_exact_scores_on_a_hand_built_model() -> None:
    # z = Wᵀu + c = [1, 3] + [1, -1] = [2, 2]; s0 = 2 + 3 + 0 = 5; s1 = 2 + 0 - 0.5 log 2
    expected = np.array([5.0, 2.0 - 0.5 * np.log(2.0)], np.float32)
    np.testing.assert_allclose(score_candidates(THETA, LAYOUT, U, V, K, R), expected, rtol=1e-6)
    np.testing.assert_allclose(feature_map(U, V, K, R) @ THETA, expected, rtol=1e-6)
    est = StickerReranker.from_parameters(THETA, LAYOUT)
    np.testing.assert_allclose(est.decision_function(feature_map(U, V, K, R)), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(OnnxScorer(export_onnx(THETA, LAYOUT)).score(U, V, K, R),
                               expected, rtol=1e-6)


def test_layout_round_trips() -> None:
    w, a, b, c = LAYOUT.unpack(THETA)
    assert LAYOUT.n_parameters == 2 * 2 + 1 + 1 + 2
    np.testing.assert_array_equal(w, [[1, 2], [0, 1]])
    assert a.tolist() == [3.0] and b == 0.5 and c.tolist() == [1.0, -1.0]
    np.testing.assert_array_equal(LAYOUT.pack(w, a, b, c), THETA)


def test_initial_parameters_reproduce_keyword_then_stage1_order() -> None:
    layout = ParameterLayout(4, 3)
    theta = initial_parameters(layout)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 4)).astype(np.float32)
    kw = np.zeros((6, 3), np.float32)
    kw[4, 0] = 1.0  # only candidate 4 matches the text
    scores = score_candidates(theta, layout, rng.normal(size=4).astype(np.float32), v, kw,
                              rank_prior(np.arange(6)))
    assert np.argsort(-scores).tolist() == [4, 0, 1, 2, 3, 5]


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 12), k=st.integers(1, 8), n=st.integers(1, 120),
       seed=st.integers(0, 2**32 - 1))
def test_onnx_matches_numpy_on_random_inputs(d: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(d, k)
    theta = rng.normal(size=layout.n_parameters).astype(np.float32)
    u = rng.normal(size=d).astype(np.float32)
    v = rng.normal(size=(n, d)).astype(np.float32)
    kw = rng.random((n, k)).astype(np.float32)
    r = rank_prior(np.arange(n))
    model = export_onnx(theta, layout)
    onnx.checker.check_model(model, full_check=True)
    got = OnnxScorer(model).score(u, v, kw, r)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, score_candidates(theta, layout, u, v, kw, r), atol=1e-5,
                               rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 8), k=st.integers(1, 6), n=st.integers(1, 120),
       seed=st.integers(0, 2**32 - 1))
def test_bound_scorer_matches_a_full_run_keystroke_after_keystroke(d: int, k: int, n: int,
                                                                    seed: int) -> None:
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(d, k)
    theta = rng.normal(size=layout.n_parameters).astype(np.float32)
    u = rng.normal(size=d).astype(np.float32)
    v = rng.normal(size=(n, d)).astype(np.float32)
    r = rank_prior(np.arange(n))
    scorer = OnnxScorer(export_onnx(theta, layout))
    bound = scorer.bind(u, v, r)
    u_bound = u.copy()
    u[:] = 0.0  # the binding copied its inputs: later changes by the caller do not leak in
    results = []
    for _ in range(3):  # several keystrokes; each result is its own array
        kw = rng.random((n, k)).astype(np.float32)
        results.append((bound.score(kw), kw))
    for got, kw in results:
        assert got.shape == (n,)
        np.testing.assert_allclose(got, scorer.score(u_bound, v, kw, r), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got, score_candidates(theta, layout, u_bound, v, kw, r),
                                   atol=1e-5, rtol=1e-5)


def test_bound_scorer_without_copy_returns_its_buffer_which_the_next_call_overwrites() -> None:
    bound = OnnxScorer(export_onnx(THETA, LAYOUT)).bind(U, V, R)
    expected = score_candidates(THETA, LAYOUT, U, V, K, R)
    first = bound.score(K, copy=False)
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    kept = bound.score(K)  # a copy: not touched by later calls
    second = bound.score(np.zeros_like(K), copy=False)
    assert second is first  # the same buffer, now holding the second keystroke's scores
    np.testing.assert_allclose(first, score_candidates(THETA, LAYOUT, U, V, 0 * K, R),
                               rtol=1e-6)
    np.testing.assert_allclose(kept, expected, rtol=1e-6)
    assert not np.allclose(kept, first)


def test_bound_scorer_runs_on_features_written_into_its_buffer() -> None:
    bound = OnnxScorer(export_onnx(THETA, LAYOUT)).bind(U, V, R)
    buffer = bound.keyword_features
    assert buffer.shape == K.shape and buffer.dtype == np.float32 and buffer.flags.c_contiguous
    buffer[...] = K
    np.testing.assert_allclose(bound.run(), score_candidates(THETA, LAYOUT, U, V, K, R),
                               rtol=1e-6)
    buffer[...] = 2 * K  # the next keystroke, written in place
    np.testing.assert_allclose(bound.run(copy=False),
                               score_candidates(THETA, LAYOUT, U, V, 2 * K, R), rtol=1e-6)


def test_bound_scorer_rejects_bad_features_and_bad_bindings() -> None:
    scorer = OnnxScorer(export_onnx(THETA, LAYOUT))
    bound = scorer.bind(U, V, R)
    np.testing.assert_allclose(bound.score(K), score_candidates(THETA, LAYOUT, U, V, K, R),
                               rtol=1e-6)
    np.testing.assert_allclose(bound.score(K[:, ::1].astype(np.float64)),  # converted
                               score_candidates(THETA, LAYOUT, U, V, K, R), rtol=1e-6)
    with pytest.raises(RerankerInputError, match=r"keyword_features has shape \(3, 1\), "
                                                 r"expected \(2, 1\)"):
        bound.score(np.ones((3, 1), np.float32))
    # unvalidated features still get their shape checked: (1, 1) would broadcast
    with pytest.raises(RerankerInputError, match=r"keyword_features has shape \(1, 1\)"):
        bound.score(np.ones((1, 1), np.float32), validate=False)
    with pytest.raises(RerankerInputError, match="keyword_features contains NaN"):
        bound.score(np.array([[np.nan], [0.0]], np.float32))
    with pytest.raises(RerankerInputError, match=r"user_embedding has shape \(3,\)"):
        scorer.bind(np.ones(3, np.float32), V, R)
    with pytest.raises(RerankerInputError, match="candidate_embeddings contains NaN"):
        scorer.bind(U, np.full_like(V, np.nan), R)
    with pytest.raises(RerankerInputError, match=r"prior has shape \(3,\)"):
        scorer.bind(U, V, np.zeros(3, np.float32))


def test_onnx_graph_has_the_named_inputs_and_output() -> None:
    model = export_onnx(THETA, LAYOUT, version="v1")
    assert [i.name for i in model.graph.input] == ["user_embedding", "candidate_embeddings",
                                                   "keyword_features", "prior"]
    assert [o.name for o in model.graph.output] == ["scores"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LinearRegressor") == 2  # the skl2onnx user tower and context part
    assert {"Gemm", "Concat", "Reshape"} <= set(ops)
    assert OnnxScorer(model).version == "v1"


def test_estimator_is_sklearn_compatible_and_learns() -> None:
    rng = np.random.default_rng(1)
    layout = ParameterLayout(3, 2)
    est = StickerReranker(n_factors=3, n_keyword_features=2, learning_rate=0.5, epochs=20,
                          random_state=0)
    assert clone(est).get_params() == est.get_params()
    # impressions of 4 candidates where the sent one always has keyword feature 1 = 1
    xs, ys, gs = [], [], []
    for g in range(60):
        v = rng.normal(size=(4, 3)).astype(np.float32)
        kw = np.zeros((4, 2), np.float32)
        sent = int(rng.integers(4))
        kw[sent, 1] = 1.0
        xs.append(feature_map(rng.normal(size=3).astype(np.float32), v, kw,
                              rank_prior(np.arange(4))))
        ys.append(np.eye(4)[sent])
        gs.append(np.full(4, g))
    X, y, groups = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
    est.fit(X, y, groups)
    assert est.coef_.shape == (layout.n_parameters,)
    _, a, _, _ = layout.unpack(est.coef_)
    assert a[1] > 1.0  # learned that keyword feature 1 marks the sent sticker
    proba = est.predict_proba(X[:4])
    assert proba.shape == (4,) and abs(proba.sum() - 1) < 1e-6
    before = est.coef_.copy()
    est.partial_fit(X, y, groups)
    assert not np.array_equal(before, est.coef_)


def test_estimator_rejects_bad_groups_and_shapes() -> None:
    est = StickerReranker(n_factors=2, n_keyword_features=1)
    X = np.zeros((3, LAYOUT.n_parameters), np.float32)
    with pytest.raises(RerankerInputError, match="exactly one sent row"):
        est.fit(X, np.array([1, 1, 0]), np.array([0, 0, 0]))
    with pytest.raises(RerankerInputError, match=r"X has shape \(3, 5\), expected"):
        est.fit(X[:, :5], np.array([1, 0, 0]), np.array([0, 0, 0]))
    X[0, 0] = np.nan
    with pytest.raises(RerankerInputError, match="NaN"):
        est.fit(X, np.array([1, 0, 0]), np.array([0, 0, 0]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones(3), V, K, R), r"user_embedding has shape \(3,\), expected \(2,\)"),
        ((U, np.ones((2, 3)), K, R), r"candidate_embeddings has shape \(2, 3\)"),
        ((U, V, np.ones((2, 2)), R), r"keyword_features has shape \(2, 2\), expected \(2, 1\)"),
        ((U, V, K, np.ones(3)), r"prior has shape \(3,\), expected \(2,\)"),
        ((np.array([np.nan, 1.0]), V, K, R), "user_embedding contains NaN"),
        ((U, np.full_like(V, np.inf), K, R), "candidate_embeddings contains NaN or infinite"),
    ],
)
def test_bad_inputs_give_clear_errors(args: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                                      message: str) -> None:
    with pytest.raises(RerankerInputError, match=message):
        check_inputs(*args, LAYOUT)
    with pytest.raises(RerankerInputError, match=message):
        OnnxScorer(export_onnx(THETA, LAYOUT)).score(*args)


def test_export_rejects_wrong_weights() -> None:
    with pytest.raises(RerankerInputError, match=r"shape \(8,\)"):
        export_onnx(np.zeros(3, np.float32), LAYOUT)
