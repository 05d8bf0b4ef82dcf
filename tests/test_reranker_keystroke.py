"""The phone's keystroke (issue #15, speed): the compiled path equals the reference path.

The keyboard scores a keystroke in one compiled call over the device's compact catalogue
view with the linear form read back from the ONNX session. These tests hold it to the
slow, obviously-correct path: the catalogue-wide assembly (:func:`sticker_candidates`)
scored by the numpy model (:func:`score_row`) and by onnxruntime, then a stable argsort.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from onnx import helper

from candidate_gen import Stage1Artifact
from data import Manifest
from reranker import (
    DeviceHistory,
    OnnxScorer,
    ParameterLayout,
    RankingContext,
    RerankerArtifact,
    RerankerInputError,
    Suggester,
    export_onnx,
)
from reranker.model import score_row
from reranker.row import HISTORY_FEATURE_NAMES, sticker_candidates

H = len(HISTORY_FEATURE_NAMES)
DAY = 86_400.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 6), k=st.integers(1, 7),
       h=st.sampled_from([0, H]))
def test_linear_form_reads_back_the_exported_weights(seed: int, d: int, k: int, h: int) -> None:
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(d, k, h)
    theta = rng.normal(size=layout.n_parameters).astype(np.float32)
    form = OnnxScorer(export_onnx(theta, layout)).linear_form()
    w, a, b, c = layout.unpack(theta)
    np.testing.assert_allclose(form.w, w, atol=1e-5)
    np.testing.assert_allclose(form.c, c, atol=1e-5)
    np.testing.assert_allclose(form.a, a, atol=1e-5)
    assert form.b == pytest.approx(float(b), abs=1e-5)
    np.testing.assert_allclose(form.e, layout.history_weights(theta) if h else np.zeros(0),
                               atol=1e-5)


def test_linear_form_refuses_a_graph_that_is_not_linear() -> None:
    layout = ParameterLayout(3, 2, H)
    theta = np.random.default_rng(0).normal(size=layout.n_parameters).astype(np.float32)
    model = export_onnx(theta, layout)
    last = next(node for node in model.graph.node if "scores" in node.output)
    last.output[:] = ["linear_scores"]
    model.graph.node.append(helper.make_node("Abs", ["linear_scores"], ["scores"]))
    onnx.checker.check_model(model)
    scorer = OnnxScorer(model)
    with pytest.raises(RerankerInputError, match="not the linear form"):
        scorer.linear_form()


@pytest.fixture(scope="module")
def context(tiny_var: Path) -> RankingContext:
    return RankingContext.build(Stage1Artifact.load(tiny_var))


def _artifact(context: RankingContext, theta: np.ndarray, tmp: Path) -> RerankerArtifact:
    """An in-memory reranker version with weights ``theta`` (a sticker-row model)."""
    layout = ParameterLayout(context.layout.n_factors, context.layout.n_keyword_features, H)
    manifest = Manifest(path=tmp / "manifest.json", kind="reranker", version="test",
                        created_at="", parameters={}, input_fingerprint="", metrics={},
                        files={})
    return RerankerArtifact(
        directory=tmp, manifest=manifest,
        model_bytes=export_onnx(theta, layout).SerializeToString(), sha256="",
        weights=theta, layout=layout, info={"stage1_version": context.stage1.version},
        privacy={})


def _reference_row(suggester: Suggester, theta: np.ndarray, language: str, text: str,
                   cluster: int, history: DeviceHistory, now: float,
                   user: np.ndarray | None, limit: int) -> tuple[list[int], np.ndarray]:
    """Catalogue-wide assembly, numpy scores, stable argsort: the row and sorted scores."""
    cat = suggester.catalog
    assert cat is not None
    match = suggester.context.index_for(cluster, language).match(text)
    rows = sticker_candidates(cat, suggester.row_config, cluster, match.label_ids,
                              match.strengths, match.kinds, history, now)
    if rows.sticker_ids.size == 0:
        return [], np.zeros(0)
    u = np.zeros(suggester.n_factors, np.float32) if user is None else user
    scores = score_row(theta, suggester.layout, u, rows.factors, rows.keyword, rows.prior,
                       rows.history)
    order = np.argsort(-scores, kind="stable")[:limit]
    return rows.sticker_ids[order].tolist(), scores[order]


def _history_strategy() -> st.SearchStrategy[list[tuple[int, float]]]:
    return st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 90)), max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), sends=_history_strategy(),
       personal=st.booleans(), limit=st.integers(1, 12))
def test_compiled_keystroke_equals_the_catalogue_wide_numpy_and_onnx_rows(
        context: RankingContext, tmp_path: Path, seed: int, sends: list[tuple[int, float]],
        personal: bool, limit: int) -> None:
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(context.layout.n_factors, context.layout.n_keyword_features, H)
    theta = (rng.normal(size=layout.n_parameters) * 0.5).astype(np.float32)
    artifact = _artifact(context, theta, tmp_path)
    compiled = Suggester(context, artifact)
    onnx_path = Suggester(context, artifact, keystroke_scorer="onnx")
    cat = compiled.catalog
    assert cat is not None
    cluster = int(rng.integers(context.n_clusters))
    user = rng.normal(size=layout.n_factors).astype(np.float32) if personal else None
    history = DeviceHistory(cat, compiled.row_config, subscriber=bool(rng.integers(2)))
    logs = context.dataset.table("device_logs")
    texts = logs.filter(logs["language"].is_in(context.languages)).head(400)
    for step, (pick, day) in enumerate([*sends, (0, 95.0)]):
        now = day * DAY
        if step % 3 == 2:  # also a package bought, not sent from
            history.acquire(int(cat.package_ids[pick % cat.n_packages]))
        row = texts.row(pick % texts.height, named=True)
        text = row["text"][: 1 + pick % max(len(row["text"]), 1)]
        # one more than the row, so a near-tie across the row's end is seen
        want, want_scores = _reference_row(compiled, theta, row["language"], text, cluster,
                                           history, now, user, limit + 1)
        for suggester in (compiled, onnx_path):
            got = suggester.rank_row(language=row["language"], text=text, cluster_id=cluster,
                                     user_embedding=user, limit=limit, history=history,
                                     now=now)
            note(f"{suggester.keystroke_scorer} step {step} {row['language']} {text!r} "
                 f"now {now} got {got} want {want} {want_scores}")
            # the same scores, and the same stickers in the same order wherever the
            # scores are apart
            _assert_same_row(got, want, want_scores, limit)
        # the send joins the state (the compact view must follow it)
        history.record_send(int(cat.sticker_ids[pick % cat.n_stickers]), now)


def _assert_same_row(got: tuple[list[int], list[int], list[float]], want: list[int],
                     want_scores: np.ndarray, limit: int) -> None:
    """``got`` equals the reference's first ``limit`` (``want`` holds one more, so a
    near-tie across the row's end is seen): scores to float32 rounding, stickers wherever
    the scores are apart (float32 numpy and the compiled float64 sums may order a near-tie
    either way)."""
    assert len(got[2]) == min(len(want_scores), limit)
    if not want:
        assert list(got[0]) == []
        return
    np.testing.assert_allclose(got[2], want_scores[:limit], rtol=1e-5, atol=1e-4)
    gaps = np.abs(np.diff(want_scores)) > 1e-3
    apart = (np.r_[True, gaps] & np.r_[gaps, True])[:len(got[0])]
    assert [s for s, ok in zip(got[0], apart, strict=True) if ok] == \
        [s for s, ok in zip(want[:limit], apart, strict=True) if ok]


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), sends=_history_strategy(),
       limit=st.integers(1, 12), personal=st.booleans())
def test_server_rows_without_and_with_a_history_summary_equal_the_reference(
        context: RankingContext, tmp_path: Path, seed: int, sends: list[tuple[int, float]],
        limit: int, personal: bool) -> None:
    """What a server ranks (#19 speed): no history (the empty state's inputs, prepared once
    per cluster and reused across clusters and calls) and the thin client's summary (the
    catalogue-wide arrays) give the reference row, for both scorers, empty text included."""
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(context.layout.n_factors, context.layout.n_keyword_features, H)
    theta = (rng.normal(size=layout.n_parameters) * 0.5).astype(np.float32)
    artifact = _artifact(context, theta, tmp_path)
    suggesters = (Suggester(context, artifact), Suggester(context, artifact,
                                                          keystroke_scorer="onnx"))
    cat = suggesters[0].catalog
    assert cat is not None
    cfg = suggesters[0].row_config
    user = rng.normal(size=layout.n_factors).astype(np.float32) if personal else None
    device = DeviceHistory(cat, cfg, subscriber=bool(rng.integers(2)))
    for pick, day in sends:
        device.record_send(int(cat.sticker_ids[pick % cat.n_stickers]), day * DAY)
    summary = device.summary()
    now = 95.0 * DAY
    logs = context.dataset.table("device_logs")
    texts = logs.filter(logs["language"].is_in(context.languages)).head(400)
    for step in range(6):
        cluster = int(rng.integers(context.n_clusters))
        row = texts.row(int(rng.integers(texts.height)), named=True)
        text = "" if step == 0 else row["text"][: 1 + int(rng.integers(len(row["text"])))]
        empty = DeviceHistory(cat, cfg)
        want, want_scores = _reference_row(suggesters[0], theta, row["language"], text,
                                           cluster, empty, 0.0, user, limit + 1)
        rebuilt = DeviceHistory.from_summary(cat, summary, cfg)
        want_h, want_h_scores = _reference_row(suggesters[0], theta, row["language"], text,
                                               cluster, rebuilt, now, user, limit + 1)
        for suggester in suggesters:
            for _ in range(2):  # the second call reuses the cluster's prepared inputs
                got = suggester.rank(language=row["language"], text=text,
                                     cluster_id=cluster, user_embedding=user, limit=limit)
                note(f"{suggester.keystroke_scorer} no history {text!r} {got} {want}")
                _assert_same_row(got, want, want_scores, limit)
            got = suggester.rank(language=row["language"], text=text, cluster_id=cluster,
                                 user_embedding=user, limit=limit, history=summary, now=now)
            note(f"{suggester.keystroke_scorer} summary {text!r} {got} {want_h}")
            _assert_same_row(got, want_h, want_h_scores, limit)


def test_compact_view_follows_sends_and_deletion(context: RankingContext) -> None:
    suggester = Suggester(context, None)
    cat = suggester.catalog
    assert cat is not None
    listed = set(cat.cluster_pk[0].tolist())
    outside = next(p for p in range(cat.n_packages) if p not in listed)
    sticker = int(np.flatnonzero(cat.st_pk == outside)[0])
    history = DeviceHistory(cat, suggester.row_config)
    before = history.catalog_view(0, 0.0)
    assert outside not in before.g_pk.tolist()
    history.record_send(int(cat.sticker_ids[sticker]), 10.0)
    after = history.catalog_view(0, 20.0)
    assert outside in after.g_pk.tolist()
    local = int(np.searchsorted(after.g_st, sticker))
    assert after.g_st[local] == sticker and after.st_last[local] == 10.0
    assert after.v_st[local, 1] == pytest.approx(np.exp(-10.0 / suggester.row_config.recency_s))
    # local numbering keeps catalogue order
    assert (np.diff(after.g_st) > 0).all() and (np.diff(after.g_pk) > 0).all()
    history.forget()
    gone = history.catalog_view(0, 30.0)
    assert outside not in gone.g_pk.tolist()
    assert not gone.st_last.max(initial=-1.0) > 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), slots=st.integers(1, 3))
def test_report_exploration_ordering_equals_the_task_row(seed: int, k: int, slots: int) -> None:
    """The A/B report's exploration arm shows the row :func:`row_hits` scores (the task's
    per-round metric): the sent sticker is in the top ``k`` of its ordering exactly when
    the task's row with the slot holds it."""
    from reranker.row import RowImpressions, row_hits, with_exploration

    rng = np.random.default_rng(seed)
    e, width = 30, 12
    sizes = rng.integers(1, width + 1, size=e)
    ptr = np.r_[0, np.cumsum(sizes)]
    flat = rng.integers(-3, 4, size=ptr[-1]).astype(np.float64)  # many ties
    new_flat = rng.random(ptr[-1]) < 0.3
    history = np.zeros((ptr[-1], H), np.float32)
    history[:, HISTORY_FEATURE_NAMES.index("package_new")] = new_flat
    pos = np.array([rng.integers(size) for size in sizes])
    imp = RowImpressions(session=np.arange(e), device=np.zeros(e, np.int64), ptr=ptr,
                         sticker=np.zeros(ptr[-1], np.int32),
                         package=np.zeros(ptr[-1], np.int32),
                         keyword=np.zeros((ptr[-1], 7), np.float32),
                         prior=np.zeros(ptr[-1], np.float32), history=history, pos=pos,
                         info=np.zeros((e, 8), np.int64))
    want, _ = row_hits(flat, imp, k, slots)
    scores = np.full((e, width), -np.inf)
    new = np.zeros((e, width), bool)
    for i in range(e):
        scores[i, : sizes[i]] = flat[ptr[i]:ptr[i + 1]]
        new[i, : sizes[i]] = new_flat[ptr[i]:ptr[i + 1]]
    ordered = with_exploration(scores, new, k, slots)
    assert np.isinf(ordered[scores == -np.inf]).all()
    for i in range(e):
        s = ordered[i, : sizes[i]]
        p = pos[i]
        rank = int((s > s[p]).sum() + (s[:p] == s[p]).sum())
        assert (rank < k) == bool(want[i])
    # without a slot the ordering is the scores' own (ties in candidate order)
    plain, _ = row_hits(flat, imp, k)
    same = with_exploration(scores, np.zeros_like(new), k, slots)
    for i in range(e):
        s = same[i, : sizes[i]]
        p = pos[i]
        assert (int((s > s[p]).sum() + (s[:p] == s[p]).sum()) < k) == bool(plain[i])
