"""Baselines that train nothing, exact on a hand-made device history (#13)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from evaluation import EvaluationError
from evaluation.arms import DAY_S, DeviceHistory, KeystrokeBatch, device_counts_arm, recents_arm

# One cluster; candidates are packages 10, 20, 30 (stage-1 order). Sticker → (package, label):
# 100 → (10, 1), 101 → (10, 2), 200 → (20, 1), 300 → (30, 1), 400 → (40, 1); 40 is not a
# candidate. Label slots: 3 (labels 0..2).
CONTEXT: Any = SimpleNamespace(
    candidate_ids=np.array([[10, 20, 30]], np.int32),
    candidate_mask=np.array([[True, True, True]]),
    prior=np.array([1.0, 0.5, 0.25]),
)
STICKER_LABELS = np.full((401, 1), -1, np.int32)
for _sticker, _label in ((100, 1), (101, 2), (200, 1), (300, 1), (400, 1)):
    STICKER_LABELS[_sticker, 0] = _label
SLOTS = 3
HALF_LIFE = 14.0


def _history() -> DeviceHistory:
    # device 0 sent 200 on day 0, 400 on day 10, 101 on day 12 before the split; held-out
    # sessions: 400 on day 14, 300 on day 15, 200 on day 16.
    return DeviceHistory.build(
        CONTEXT, device=np.array([0, 0, 0]), ts=np.array([14.0, 15.0, 16.0]) * DAY_S,
        cluster=np.array([0, 0, 0]), sent_sticker=np.array([400, 300, 200]),
        sent_package=np.array([40, 30, 20]),
        history_device=np.array([0, 0, 0]), history_ts=np.array([0.0, 10.0, 12.0]) * DAY_S,
        history_sticker=np.array([200, 400, 101]), history_package=np.array([20, 40, 10]),
        half_life_days=HALF_LIFE)


def _batch(sessions: list[int], shown: list[int]) -> KeystrokeBatch:
    b = len(sessions)
    keyword = np.zeros((b, 3, 7), np.float32)
    keyword[:, :, 0] = 1.0  # every candidate package matches label 1
    return KeystrokeBatch(keyword=keyword, shown=np.tile(np.array(shown, np.int32), (b, 1)),
                          cluster=np.zeros(b, np.int64), device=np.zeros(b, np.int64),
                          session=np.array(sessions, np.int64), signature=np.zeros(b, np.int64),
                          label_keys=np.array([0 * SLOTS + 1], np.int64), n_label_slots=SLOTS)


def test_history_scores_are_recency_weighted_counts_of_strictly_earlier_sends() -> None:
    h = _history()
    # session 0 (day 14): 101 (age 2 d), 400 (age 4 d), 200 (age 14 d), best first
    s0 = slice(h.ptr[0], h.ptr[1])
    assert h.sticker[s0].tolist() == [101, 400, 200]
    np.testing.assert_allclose(h.score[s0], [0.5 ** (2 / 14), 0.5 ** (4 / 14), 0.5])
    # session 1 (day 15) also knows session 0's send of 400 (day 14)
    s1 = slice(h.ptr[1], h.ptr[2])
    assert h.sticker[s1].tolist() == [400, 101, 200]
    np.testing.assert_allclose(h.score[s1], [0.5 ** (5 / 14) + 0.5 ** (1 / 14),
                                             0.5 ** (3 / 14), 0.5 ** (15 / 14)])
    assert h.cand_pos[s1].tolist() == [-1, 0, 1]  # package 40 is no candidate
    np.testing.assert_allclose(h.package_score[1], [0.5 ** (3 / 14), 0.5 ** (15 / 14), 0.0])
    # 400 was sent on day 10, 300 never before day 15, 200 on day 0
    assert h.seen_sticker.tolist() == [True, False, True]
    assert h.seen_package.tolist() == [True, False, True]


def test_recents_row_is_own_matching_stickers_by_weighted_count() -> None:
    scores, items = recents_arm(_history(), STICKER_LABELS).score(_batch([0, 1], [100, 200, 300]))
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = [[int(items[i, j]) for j in order[i] if np.isfinite(scores[i, j])] for i in range(2)]
    # 101 carries label 2 only: not in the row; 300 was never sent: not in the row
    assert rows == [[400, 200], [400, 200]]


def test_device_counts_orders_packages_by_decayed_sends_then_stage1() -> None:
    arm = device_counts_arm(CONTEXT, _history(), STICKER_LABELS)
    # session 2 (day 16): package 10 ← 101 (day 12), 20 ← 200 (day 0), 30 ← 300 (day 15)
    scores, shown = arm.score(_batch([2], [100, 200, 300]))
    w10, w20, w30 = 0.5 ** (4 / 14), 0.5 ** (16 / 14), 0.5 ** (1 / 14)
    assert w30 > w10 > w20
    assert np.argsort(-scores[0]).tolist() == [2, 0, 1]
    # package 10's sent sticker 101 does not match the text: it keeps its default sticker
    assert shown[0].tolist() == [100, 200, 300]


def test_device_counts_shows_the_devices_own_matching_sticker_of_a_package() -> None:
    arm = device_counts_arm(CONTEXT, _history(), STICKER_LABELS)
    # default stickers shown for 20 and 30 are others than the device sent (999 as stand-in)
    _, shown = arm.score(_batch([2], [100, 999, 998]))
    assert shown[0].tolist() == [100, 200, 300]


def test_device_counts_without_history_is_stage1_order() -> None:
    empty = DeviceHistory.build(
        CONTEXT, device=np.array([0]), ts=np.array([1.0]), cluster=np.array([0]),
        sent_sticker=np.array([100]), sent_package=np.array([10]),
        history_device=np.zeros(0, np.int64), history_ts=np.zeros(0),
        history_sticker=np.zeros(0, np.int32), history_package=np.zeros(0, np.int32),
        half_life_days=HALF_LIFE)
    scores, _ = device_counts_arm(CONTEXT, empty, STICKER_LABELS).score(
        _batch([0], [100, 200, 300]))
    assert np.argsort(-scores[0]).tolist() == [0, 1, 2]
    r_scores, _ = recents_arm(empty, STICKER_LABELS).score(_batch([0], [100, 200, 300]))
    assert not np.isfinite(r_scores).any()


def test_half_life_must_be_positive() -> None:
    with pytest.raises(EvaluationError, match="half_life_days=0"):
        DeviceHistory.build(CONTEXT, np.array([0]), np.array([1.0]), np.array([0]),
                            np.array([100]), np.array([10]), np.zeros(0, np.int64),
                            np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int32), 0.0)


def test_segment_popularity_ranks_by_segment_then_language_before_the_split() -> None:
    import polars as pl

    from evaluation.arms import KEY_WEIGHT, segment_popularity_scores

    ms = 1000
    users = pl.DataFrame({"user_id": [1, 2, 3, 4], "language": ["ja", "ja", "ja", "en"],
                          "region": ["JP", "JP", "JP", "US"],
                          "age_bucket": ["20-29", "20-29", "50+", "20-29"]},
                         schema_overrides={"user_id": pl.Int32})
    # user 2 (same segment as user 1) bought 20 twice and 30 once; user 3 (other age, same
    # language) bought 30 three times; user 4 (en) bought 10; one late purchase of 10 by
    # user 2 at the split itself must not count
    inter = pl.DataFrame({
        "user_id": [2, 2, 2, 3, 3, 3, 4, 2], "package_id": [20, 20, 30, 30, 30, 30, 10, 10],
        "weight": [1.0] * 8,
        "ts": [t * ms for t in (1, 2, 3, 4, 5, 6, 7, 100)]},
        schema_overrides={"user_id": pl.Int32, "package_id": pl.Int32})
    inter = inter.with_columns(pl.from_epoch("ts", time_unit="ms"))
    tables = {"users": users, "interactions": inter}
    context: Any = SimpleNamespace(
        dataset=SimpleNamespace(table=tables.__getitem__),
        stage1=SimpleNamespace(cluster_of=lambda u: np.zeros(len(u), np.int64)),
        candidate_ids=np.array([[10, 20, 30]], np.int32))
    keys = segment_popularity_scores(context, np.array([1, 4], np.int32), split_ts=100.0)
    np.testing.assert_allclose(keys[0], [
        0.0,                                                   # 10: nobody in ja before split
        np.log1p(2.0) * KEY_WEIGHT + 10 * np.log1p(2.0),       # 20: segment 2, language 2
        np.log1p(1.0) * KEY_WEIGHT + 10 * np.log1p(4.0)])      # 30: segment 1, language 4
    np.testing.assert_allclose(keys[1], [np.log1p(1.0) * KEY_WEIGHT + 10 * np.log1p(1.0),
                                         0.0, 0.0])
    assert np.argsort(-keys[0]).tolist() == [1, 2, 0]


def test_owned_row_lists_held_matching_stickers_sent_first_then_newest_package() -> None:
    import polars as pl

    from evaluation.arms import Holdings

    stickers = pl.DataFrame({"sticker_id": [100, 101, 200, 300, 400, 500],
                             "package_id": [10, 10, 20, 30, 40, 50]})
    # device 0 holds 10 since day 1, 30 since day 13, and will hold 50 only on day 20
    holdings = Holdings.build(1, np.array([0, 0, 0]), np.array([10, 30, 50]),
                              np.array([1.0, 13.0, 20.0]) * DAY_S, stickers)
    h = DeviceHistory.build(
        CONTEXT, device=np.array([0]), ts=np.array([14.0]) * DAY_S, cluster=np.array([0]),
        sent_sticker=np.array([300]), sent_package=np.array([30]),
        history_device=np.array([0, 0, 0]), history_ts=np.array([0.0, 10.0, 12.0]) * DAY_S,
        history_sticker=np.array([200, 400, 101]), history_package=np.array([20, 40, 10]),
        half_life_days=HALF_LIFE, holdings=holdings)
    labels = STICKER_LABELS.copy()
    labels = np.vstack([labels, np.full((100, 1), -1, np.int32)])
    labels[500, 0] = 1  # matches, but its package has not arrived yet
    scores, items = recents_arm(h, labels, name="owned").score(_batch([0], [100, 200, 300]))
    finite = np.isfinite(scores[0])
    order = np.argsort(-scores[0][finite], kind="stable")
    assert items[0][finite][order].tolist() == [400, 200, 300, 100]
    np.testing.assert_allclose(np.sort(scores[0][finite])[::-1],
                               [2 + 0.5 ** (4 / 14), 2 + 0.5, 0.5 ** (1 / 14), 0.5 ** (13 / 14)])


def test_owned_by_match_puts_a_whole_keyword_before_one_being_typed() -> None:
    # session 1 (day 15): sent 400 (2 sends) and 200 (1 old send); label 1 matched at
    # strength 0.5 (being typed), label 2 (sticker 101, sent once) at 1.0 (whole keyword)
    h = _history()
    batch = _batch([1], [100, 200, 300])
    batch.label_keys = np.array([0 * SLOTS + 1, 0 * SLOTS + 2], np.int64)
    batch.label_strengths = np.array([0.5, 1.0], np.float32)
    plain = recents_arm(h, STICKER_LABELS).score(batch)
    matched = recents_arm(h, STICKER_LABELS, name="owned_by_match", by_match=True).score(batch)

    def row(scores: np.ndarray, items: np.ndarray) -> list[int]:
        ok = np.isfinite(scores[0])
        return items[0][ok][np.argsort(-scores[0][ok], kind="stable")].tolist()

    assert row(*plain) == [400, 101, 200]  # by weighted count only
    assert row(*matched) == [101, 400, 200]  # the whole keyword first, then count
