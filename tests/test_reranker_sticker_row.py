"""The sticker row (issue #15): device features, candidates, parity, uploads, cold start."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federated import LocalResult, TaskContext
from reranker import (
    DeviceHistory,
    OnnxScorer,
    ParameterLayout,
    RowConfig,
    RowTask,
    Suggester,
    export_onnx,
    make_row_task,
)
from reranker.model import score_row
from reranker.row import HISTORY_FEATURE_NAMES, StickerCatalog, sticker_candidates

DAY = 86_400.0
H = len(HISTORY_FEATURE_NAMES)


def _hand_catalog() -> StickerCatalog:
    """Packages 10 (stage-1 list of cluster 0) and 11; stickers 100, 101 (package 10),
    102, 103 (package 11); labels 0 and 1: 100 [0], 101 [0, 1], 102 [1], 103 [0]."""
    eye = np.eye(2, dtype=np.float32)
    return StickerCatalog(
        sticker_ids=np.array([100, 101, 102, 103], np.int32),
        st_pk=np.array([0, 0, 1, 1], np.int32),
        st_lab_ptr=np.array([0, 1, 3, 4, 5], np.int32),
        st_lab=np.array([0, 0, 1, 1, 0], np.int32),
        lab_ptr=np.array([0, 3, 5], np.int32), lab_st=np.array([0, 1, 3, 1, 2], np.int32),
        package_ids=np.array([10, 11], np.int32), pk_size=np.array([2, 2], np.int32),
        pk_factor=eye.copy(), pk_unit=eye.copy(), pk_premium=np.array([False, True]),
        label_unit=eye.copy(),
        sticker_index=np.r_[np.full(100, -1), np.arange(4)].astype(np.int64),
        package_index=np.r_[np.full(10, -1), np.arange(2)].astype(np.int64),
        cluster_pk=[np.array([0], np.int32)], cluster_prior=[np.zeros(1, np.float32)],
        unlisted_prior=-math.log1p(1))


MATCH = (np.array([0, 1], np.int32), np.array([1.0, 0.5], np.float32),
         np.array([1, 2], np.int8))  # label 0 exact (1.0), label 1 prefix (0.5)


def test_device_features_by_hand() -> None:
    cat, cfg = _hand_catalog(), RowConfig()
    history = DeviceHistory(cat, cfg, subscriber=True)
    history.record_send(102, 0.0)
    history.record_send(102, 30 * DAY)  # one half-life later: 1 · ½ + 1 = 1.5
    now = 37 * DAY
    rows = sticker_candidates(cat, cfg, 0, *MATCH, history, now)
    # every eligible sticker of a matched label once: package 10 (stage 1) and 11 (sent from)
    assert rows.sticker_ids.tolist() == [100, 101, 103, 102]
    assert rows.n_matched == 4
    count = 1.5 * 2 ** (-7 / 30)
    c = math.log1p(count) / math.log1p(100)
    r = math.exp(-1.0)
    want: dict[int, list[float]] = {
        100: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1],
        101: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1],
        103: [0, 0, c, r, 0, 0, 0, 1, 0, 0, 1, 0],  # label 0 never sent
        102: [c, r, c, r, c, r, 1, 1, 0, 0, 1, 0]}
    for i, sid in enumerate(rows.sticker_ids.tolist()):
        np.testing.assert_allclose(rows.history[i], want[sid], rtol=1e-5, atol=1e-7)
    # keyword features: the sticker's own best label; package counts and query cosine
    q = np.array([1.0, 0.5]) / 1.5
    np.testing.assert_allclose(rows.keyword[3], [0.5, 0, 1, 0, math.log1p(2), 1.0, q[1]],
                               rtol=1e-6)
    np.testing.assert_allclose(rows.keyword[1], [1.0, 1, 0, 0, math.log1p(2), 1.0, q[0]],
                               rtol=1e-6)
    np.testing.assert_allclose(rows.prior, [0, 0, -math.log1p(1), -math.log1p(1)], rtol=1e-6)
    # the row adapts at once: one more send of 100 now
    history.record_send(100, now)
    after = sticker_candidates(cat, cfg, 0, *MATCH, history, now)
    i = after.sticker_ids.tolist().index(100)
    assert after.history[i, 0] == pytest.approx(math.log1p(1) / math.log1p(100))
    assert after.history[i, 1] == pytest.approx(1.0)
    assert after.history[i, 8] == 0.0  # no longer new


def test_dedup_and_cap_keep_own_recent_stickers() -> None:
    cat = _hand_catalog()
    history = DeviceHistory(cat, RowConfig())
    history.record_send(102, 30 * DAY)
    now = 37 * DAY
    # sticker 101 carries both matched labels: it appears once (above), here the cap
    one = sticker_candidates(cat, RowConfig(cap=1), 0, *MATCH, history, now)
    assert one.sticker_ids.tolist() == [102]  # the cap never drops the own recent sticker
    two = sticker_candidates(cat, RowConfig(cap=2), 0, *MATCH, history, now)
    assert two.sticker_ids.tolist() == [100, 102]  # best pre-score kept, ties in order
    assert len(set(two.sticker_ids.tolist())) == 2
    # outside the protection window the sticker competes on its pre-score like any other
    late = sticker_candidates(cat, RowConfig(cap=1, protect_days=1), 0, *MATCH, history, now)
    assert late.sticker_ids.tolist() == [100]
    # an unheld, never-sent package outside the cluster's list is not a candidate
    cold = sticker_candidates(cat, RowConfig(), 0, *MATCH, DeviceHistory(cat), now)
    assert cold.sticker_ids.tolist() == [100, 101]
    held = DeviceHistory(cat)
    held.acquire(11)
    assert sticker_candidates(cat, RowConfig(), 0, *MATCH, held, now).sticker_ids.tolist() \
        == [100, 101, 103, 102]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), d=st.integers(1, 6),
       k=st.integers(1, 7))
def test_onnx_equals_numpy_on_row_inputs(seed: int, n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    layout = ParameterLayout(d, k, H)
    theta = rng.normal(size=layout.n_parameters).astype(np.float32)
    u = rng.normal(size=d).astype(np.float32)
    v = rng.normal(size=(n, d)).astype(np.float32)
    kf = rng.random((n, k)).astype(np.float32)
    r = -np.log1p(np.arange(n, dtype=np.float32))
    hf = rng.random((n, H)).astype(np.float32)
    want = score_row(theta, layout, u, v, kf, r, hf)
    scorer = OnnxScorer(export_onnx(theta, layout))
    np.testing.assert_allclose(scorer.score_row(u, v, kf, r, hf), want, rtol=1e-4, atol=1e-4)
    bound = scorer.bind_row(u, n + 3)
    bound.candidate_embeddings[:n], bound.keyword_features[:n] = v, kf
    bound.prior[:n], bound.history_features[:n] = r, hf
    np.testing.assert_allclose(bound.run(n), want, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def row_task(tiny_var: Path) -> RowTask:
    return make_row_task(TaskContext(var=tiny_var, seed=0, options={}))


def test_upload_holds_no_device_feature_count_or_embedding(row_task: RowTask) -> None:
    task = row_task
    devices = np.flatnonzero(~task.validation)[:40]
    users = task.user_embeddings(devices)
    theta = task.initial_parameters()
    result = task.local_train(theta, devices, np.random.default_rng(0))
    # what leaves a device: its delta of the shared weights and its example count
    assert {f.name for f in dataclasses.fields(LocalResult)} == {"deltas", "n_examples", "loss"}
    assert result.deltas.shape == (devices.size, task.n_parameters)
    assert result.n_examples.shape == (devices.size,)
    trained = result.n_examples > 0
    assert trained.any()
    # no embedding, count or history feature value of a device rides along in its upload
    imp = task._train_impressions(devices[trained], task.config.max_impressions)
    for row, dv in zip(result.deltas[trained], np.flatnonzero(trained), strict=True):
        nonzero = np.abs(users[dv]) > 1e-6
        assert not np.isin(users[dv][nonzero], row).any()
    hist = imp.history[np.abs(imp.history) > 1e-6]
    assert not np.isin(np.unique(hist), result.deltas[trained]).any()
    assert result.deltas[trained].shape[1] == task.layout.n_parameters


def test_task_evaluates_against_baselines_on_validation_devices(row_task: RowTask) -> None:
    task = row_task
    assert task.validation[task.eval_devices].all()
    assert not task.train[task.validation[task.sessions.device]].any()
    m = task.evaluate(task.initial_parameters())
    for key in ("hit@5", "hit@5_recents", "hit@5_device_counts", "hit@5_stage1_order",
                "hit@5_strongest_baseline", "ceiling", "hit_new_package",
                "stage1_order_new_package"):
        assert key in m
    assert 0 <= m["hit@5"] <= m["ceiling"] <= 1
    assert m["hit@5_strongest_baseline"] == max(
        m["hit@5_recents"], m["hit@5_device_counts"], m["hit@5_owned"], m["hit@5_owned_by_match"],
        m["hit@5_segment_popularity"], m["hit@5_fold_in_only"])
    assert "owned_by_match_new_package" in m


def test_tuning_window_trains_on_nothing_from_the_validation_time(row_task: RowTask) -> None:
    from reranker import RowTaskConfig

    task = row_task
    ts, dev = task.sessions.ts, task.sessions.device
    # a reported model trains up to test_start, across the validation window's time
    assert (task.train & (ts >= task.split.validation_start)).any()
    tuning = RowTask(task.context, task.catalog, task.sessions, task.split,
                     RowTaskConfig(train_until="validation_start"))
    assert tuning.train.any()
    assert not (tuning.train & (ts >= task.split.validation_start)).any()
    assert (tuning.history_until <= task.split.validation_start).all()
    assert tuning.split_ts == task.split.validation_start
    assert not tuning.train[tuning.validation[dev]].any()
    # the validation sessions evaluated are the same either way
    np.testing.assert_array_equal(tuning.eval_window, task.eval_window)


def test_cold_device_gets_a_sensible_row(tiny_var: Path) -> None:
    suggester = Suggester.load(tiny_var)
    assert suggester.is_row
    cat = suggester.catalog
    assert cat is not None
    ranking = suggester.rank(language="en", text="thank you", cluster_id=0, limit=5)
    assert 1 <= len(ranking.sticker_ids) <= 5
    listed = set(cat.package_ids[cat.cluster_pk[0]].tolist())
    assert set(ranking.package_ids) <= listed  # a new device: the cluster's packages only
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert suggester.rank(language="en", text="", cluster_id=0, limit=5).sticker_ids
    # a keyboard learns at once: a sent sticker of a package outside the list joins the row
    outside = next(int(p) for p in cat.package_ids.tolist() if p not in listed)
    pk = int(cat.package_index[outside])
    sticker = int(cat.sticker_ids[np.flatnonzero(cat.st_pk == pk)[0]])
    labels = cat.st_lab[cat.st_lab_ptr[cat.sticker_index[sticker]]:
                        cat.st_lab_ptr[cat.sticker_index[sticker] + 1]]
    board = suggester.keyboard(0, "en")
    index = suggester.context.indexes["en"]
    keyword = next((kw for kw in index.keywords_of(int(labels[0]))), None) \
        if hasattr(index, "keywords_of") else None
    board.record_send(sticker, 1000.0)
    summary = board.history.summary()
    assert summary["stickers"][0][0] == sticker
    again = suggester.rank(language="en", text=keyword or "", cluster_id=0, limit=50,
                           history=summary, now=1000.0)
    assert sticker in again.sticker_ids


def test_device_state_round_trips_through_the_local_store(tmp_path: Path) -> None:
    cat, cfg = _hand_catalog(), RowConfig()
    history = DeviceHistory(cat, cfg, subscriber=True)
    history.record_send(102, 0.0)
    history.record_send(100, 10 * DAY)
    history.acquire(11)
    store = tmp_path / "device.sqlite"
    history.save(store)
    again = DeviceHistory.load(cat, store, cfg)
    now = 12 * DAY
    a = sticker_candidates(cat, cfg, 0, *MATCH, history, now)
    b = sticker_candidates(cat, cfg, 0, *MATCH, again, now)
    assert a.sticker_ids.tolist() == b.sticker_ids.tolist()
    np.testing.assert_allclose(a.history, b.history, rtol=1e-6)
    again.forget()  # the person's deletion request
    again.save(store)
    gone = DeviceHistory.load(cat, store, cfg)
    assert gone.is_empty
    assert not gone.subscriber or gone.summary()["stickers"] == []


def test_replay_of_a_send_equals_the_training_walk(tiny_var: Path) -> None:
    """The report's keystroke replay and the task's impressions agree at each send."""
    import polars as pl

    from candidate_gen import Stage1Artifact
    from data import time_split
    from reranker import RankingContext, RowReplay
    from reranker.row import build_row_sessions, walk_impressions

    context = RankingContext.build(Stage1Artifact.load(tiny_var))
    catalog = StickerCatalog.build(context)
    split = time_split(context.dataset).test_start
    logs = context.dataset.table("device_logs").filter(
        pl.col("language").is_in(context.languages))
    users = np.unique(logs.filter(pl.col("ts").dt.epoch("ms") / 1000 >= split)["user_id"])
    users = users[np.asarray(context.stage1.cluster_of(users)) >= 0][:30].astype(np.int32)
    mine = logs.filter(pl.col("user_id").is_in(users)).sort("user_id", "ts")
    seconds = mine["ts"].dt.epoch("ms").to_numpy() / 1000.0
    before, after = mine.filter(pl.Series(seconds < split)), mine.filter(
        pl.Series(seconds >= split))
    device = np.searchsorted(users, after["user_id"].to_numpy())
    row = RowReplay(context, users, before, split, device,
                    after["ts"].dt.epoch("ms").to_numpy() / 1000.0,
                    after["sticker_id"].to_numpy(), catalog=catalog)
    matches = [context.indexes[lang].match(text)
               for lang, text in zip(after["language"], after["text"], strict=True)]
    layout = ParameterLayout(context.layout.n_factors, context.layout.n_keyword_features, H)
    theta = np.random.default_rng(1).normal(size=layout.n_parameters).astype(np.float32)
    users_emb = np.zeros((users.size, layout.n_factors), np.float32)
    scores, stickers = row.score_keystrokes(theta, layout, users_emb,
                                            np.arange(after.height), np.arange(after.height),
                                            matches)
    sessions = build_row_sessions(context, catalog, mine, user_ids=users, show_progress=False)
    emit = sessions.ts >= split
    imp = walk_impressions(sessions, catalog, RowConfig(), np.arange(users.size), emit,
                           np.ones(sessions.n_sessions, bool), RowConfig().cap)
    assert imp.n_impressions == after.height
    from reranker.row import row_scores

    walk_scores = row_scores(theta, layout, users_emb, imp, catalog.pk_factor)
    for e in range(imp.n_impressions):
        lo, hi = imp.ptr[e], imp.ptr[e + 1]
        got = stickers[e][stickers[e] >= 0]
        assert got.tolist() == catalog.sticker_ids[imp.sticker[lo:hi]].tolist()
        np.testing.assert_allclose(scores[e][: hi - lo], walk_scores[lo:hi], rtol=1e-5,
                                   atol=1e-5)


def test_walk_ranks_the_owned_rows_by_hand() -> None:
    """The per-round metric's ``owned`` rows, on one hand-made device.

    The device holds package 11 (stickers 102, 103) from day 0, sends 102 on days 30 and
    31, then 103 on day 37 and 102 on day 40, each time typing labels 0 (exact, 1.0) and 1 (prefix,
    0.5). ``owned``: sent stickers first, then unsent held ones; ``owned_by_match``: match
    strength first (103 carries label 0, 102 only label 1)."""
    from reranker.row import RowSessions, walk_impressions

    cat = _hand_catalog()
    sessions = RowSessions(
        user_ids=np.array([7]), cluster=np.array([0], np.int32),
        subscriber=np.array([False]), dev_ptr=np.array([0, 4]),
        ts=np.array([30, 31, 37, 40]) * DAY, sig=np.zeros(4, np.int64),
        sticker=np.array([2, 2, 3, 2], np.int32), package=np.array([1, 1, 1, 1], np.int32),
        sent_row=np.full(4, -1), sig_ptr=np.array([0, 2]), sig_label=MATCH[0],
        sig_strength=MATCH[1], sig_kind=MATCH[2], acq_ptr=np.array([0, 1]),
        acq_pk=np.array([1], np.int32), acq_ts=np.array([0.0]))
    imp = walk_impressions(sessions, cat, RowConfig(), np.array([0]),
                           np.array([False, False, True, True]), np.ones(4, bool),
                           RowConfig().cap)
    assert imp.n_impressions == 2
    # day 37, sent 103 (never sent before): recents has no row for it; owned puts the
    # sent 102 first; by match 103 (1.0) beats 102 (0.5)
    assert imp.info[0, 0] == -1
    assert imp.info[0, 6] == 1
    assert imp.info[0, 7] == 0
    # day 40, sent 102 again: its decayed count (two sends, ~1.6) beats 103's (one, ~0.9),
    # so it leads recents and owned; by match 103 still comes first
    assert imp.info[1, 0] == 0
    assert imp.info[1, 6] == 0
    assert imp.info[1, 7] == 1


class _Tables:
    """The two tables :class:`reranker._segment.SegmentPopularity` reads."""

    def __init__(self, **tables: pl.DataFrame) -> None:
        self.tables = tables

    def table(self, name: str) -> pl.DataFrame:
        return self.tables[name]


def _segment_world() -> _Tables:
    """Users 7, 8 (ja, r1, 20s) and 9 (en, r2, 30s). Before day 10: user 8 sent package 11
    (weight 3) and 10 (weight 1), user 9 package 10 (weight 100); after it user 8 sent
    package 10 with weight 1000, which the server must not know."""
    users = pl.DataFrame({"user_id": [7, 8, 9], "language": ["ja", "ja", "en"],
                          "region": ["r1", "r1", "r2"], "age_bucket": ["20s", "20s", "30s"]})
    day = [datetime(2026, 1, 1) + timedelta(days=d) for d in (1, 2, 3, 20)]
    inter = pl.DataFrame({"user_id": [8, 8, 9, 8], "package_id": [11, 10, 10, 10],
                          "weight": [3.0, 1.0, 100.0, 1000.0], "ts": day})
    return _Tables(users=users, interactions=inter)


CUT = (datetime(2026, 1, 11) - datetime(1970, 1, 1)).total_seconds()


def test_segment_popularity_keys_by_hand() -> None:
    from reranker import SegmentPopularity

    seg = SegmentPopularity(_segment_world(), CUT)
    keys = seg.keys(np.array([7, 9, 42]), np.array([0, 2, 4, 5]), np.array([10, 11, 10, 11, 10]))
    # user 7's segment (and language) saw package 10 with weight 1 and 11 with weight 3;
    # user 9's saw 10 with 100 and 11 never; user 42 is unknown to the server
    expected = [math.log1p(1) * 1e6 + 10 * math.log1p(1), math.log1p(3) * 1e6 + 10 * math.log1p(3),
                math.log1p(100) * 1e6 + 10 * math.log1p(100), 0.0, 0.0]
    np.testing.assert_allclose(keys, expected, rtol=1e-12)


def test_walk_ranks_segment_popularity_by_hand() -> None:
    """Cluster 0 lists packages 10 (stage-1 prior 0.9) and 11 (0.1). User 7 types labels 0
    (exact) and 1 (prefix) and sends 103, the sticker package 11 shows (its best match):
    stage-1 order puts it second, its segment (which sent 11 three times as much as 10)
    first. Without the server's segment popularity the rank is stage-1 order's."""
    from reranker import SegmentPopularity
    from reranker.row import RowSessions, walk_impressions

    cat = dataclasses.replace(_hand_catalog(), cluster_pk=[np.array([0, 1], np.int32)],
                              cluster_prior=[np.array([0.9, 0.1], np.float32)])
    sessions = RowSessions(
        user_ids=np.array([7]), cluster=np.array([0], np.int32),
        subscriber=np.array([False]), dev_ptr=np.array([0, 1]),
        ts=np.array([30.0]) * DAY, sig=np.zeros(1, np.int64),
        sticker=np.array([3], np.int32), package=np.array([1], np.int32),
        sent_row=np.full(1, -1), sig_ptr=np.array([0, 2]), sig_label=MATCH[0],
        sig_strength=MATCH[1], sig_kind=MATCH[2], acq_ptr=np.array([0, 0]),
        acq_pk=np.zeros(0, np.int32), acq_ts=np.zeros(0))
    args = (sessions, cat, RowConfig(), np.array([0]), np.ones(1, bool), np.ones(1, bool),
            RowConfig().cap)
    with_segment = walk_impressions(*args, segment=SegmentPopularity(_segment_world(), CUT))
    assert with_segment.info[0, 1] == 1  # stage-1 order: package 10 first
    assert with_segment.info[0, 8] == 0  # segment popularity: package 11 first
    without = walk_impressions(*args)
    assert without.info[0, 8] == without.info[0, 1] == 1


def test_per_round_metric_shows_segment_popularity_and_fold_in_only(row_task: RowTask) -> None:
    """fold-in only is the initial weights with each phone's personalisation: evaluated
    beside any weights it equals the initial weights' own hit@5; the margin is taken
    against the best of every no-model row, segment popularity and fold-in included."""
    task = row_task
    initial = task.evaluate(task.initial_parameters())
    other = task.evaluate(task.initial_parameters()
                          + np.random.default_rng(3).normal(0, 0.5, task.n_parameters))
    assert initial["hit@5_fold_in_only"] == pytest.approx(initial["hit@5"])
    assert other["hit@5_fold_in_only"] == pytest.approx(initial["hit@5"])
    assert other["hit@5"] != pytest.approx(initial["hit@5"])
    names = ("recents", "device_counts", "owned", "owned_by_match", "segment_popularity",
             "fold_in_only")
    assert other["hit@5_strongest_baseline"] == max(other[f"hit@5_{a}"] for a in names)
    assert 0 <= other["hit@5_segment_popularity"] <= other["ceiling"]
    assert "segment_popularity_new_package" in other
