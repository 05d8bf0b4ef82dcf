"""Exact ranking metrics of the visible row on hand-made keystrokes (evaluation, issue #8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics import (
    KEYSTROKE_NEVER,
    catalogue_coverage,
    first_hit_keystroke,
    hit_at,
    keystroke_summary,
    ndcg_at,
    reciprocal_rank,
    sent_rank,
    session_metrics,
    visible_rows,
)
from evaluation.stats import terciles

INF = -np.inf
# keystroke 0: candidate 3 is padding; the order is 0 (3.0), 2 (2.0), 1 (1.0)
# keystroke 1: all tie, candidate 2 has nothing to show: order 0, 1, 3
SCORES = np.array([[3.0, 1.0, 2.0, INF], [1.0, 1.0, 1.0, 1.0]])
SHOWN = np.array([[10, 11, 12, -1], [20, 21, -1, 23]])


def test_sent_rank_orders_eligible_candidates_ties_in_stage1_order() -> None:
    np.testing.assert_array_equal(sent_rank(SCORES, SHOWN, np.array([12, 23])), [1, 2])
    np.testing.assert_array_equal(sent_rank(SCORES, SHOWN, np.array([10, 20])), [0, 0])


def test_sent_sticker_not_shown_is_unranked() -> None:
    # 99 is shown by nobody; 21 is not in keystroke 0's candidates
    np.testing.assert_array_equal(sent_rank(SCORES, SHOWN, np.array([99, 99])), [-1, -1])
    scores = np.array([[1.0, INF]])
    shown = np.array([[5, 6]])  # candidate 1 would show 6, but it is padding (score -inf)
    np.testing.assert_array_equal(sent_rank(scores, shown, np.array([6])), [-1])


def test_visible_rows_are_top_k_eligible_and_padded() -> None:
    np.testing.assert_array_equal(visible_rows(SCORES, SHOWN, 2), [[0, 2], [0, 1]])
    np.testing.assert_array_equal(visible_rows(SCORES, SHOWN, 4), [[0, 2, 1, -1], [0, 1, 3, -1]])


def test_hit_mrr_ndcg_by_hand() -> None:
    rank = np.array([1, 2, -1, 0])
    np.testing.assert_array_equal(hit_at(rank, 1), [False, False, False, True])
    np.testing.assert_array_equal(hit_at(rank, 2), [True, False, False, True])
    np.testing.assert_array_equal(hit_at(rank, 3), [True, True, False, True])
    np.testing.assert_allclose(reciprocal_rank(rank), [1 / 2, 1 / 3, 0.0, 1.0])
    np.testing.assert_allclose(ndcg_at(rank, 2), [1 / math.log2(3), 0.0, 0.0, 1.0])
    np.testing.assert_allclose(ndcg_at(rank, 3), [1 / math.log2(3), 0.5, 0.0, 1.0])
    m = session_metrics(rank, 2)
    assert list(m)[:4] == ["hit@2", "hit@1", "mrr", "ndcg@2"]
    assert m["hit@2"].mean() == 0.5 and m["mrr"].sum() == pytest.approx(1 / 2 + 1 / 3 + 1)


def test_keystrokes_to_hit_by_hand() -> None:
    # session 0 typed "abc": hit from the 2nd character; session 1 typed "de": never
    session = np.array([0, 0, 0, 1, 1])
    typed = np.array([1, 2, 3, 1, 2])
    hit = np.array([False, True, True, False, False])
    first = first_hit_keystroke(hit, session, typed, 2)
    np.testing.assert_array_equal(first, [2, KEYSTROKE_NEVER])
    # keystroke order does not matter
    perm = np.array([4, 2, 0, 3, 1])
    np.testing.assert_array_equal(first_hit_keystroke(hit[perm], session[perm], typed[perm], 2),
                                  first)
    summary = keystroke_summary(np.array([2, KEYSTROKE_NEVER, 1]), np.array([3, 4, 5]),
                                max_typed=3)
    assert summary["never_share"] == pytest.approx(1 / 3)
    assert summary["mean_when_hit"] == pytest.approx(1.5)
    assert summary["capped_mean"] == pytest.approx((2 + 5 + 1) / 3)  # never → len(text) + 1
    assert summary["hit_by"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_catalogue_coverage_counts_distinct_shown() -> None:
    assert catalogue_coverage(np.array([[1, 2], [2, -1]]), 10) == pytest.approx(0.2)
    assert catalogue_coverage(np.array([-1, -1]), 10) == 0.0


def test_terciles_bounds_and_labels() -> None:
    group, labels = terciles(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]), "sessions")
    np.testing.assert_array_equal(group, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert labels[0] == "low (≤3 sessions)" and labels[1] == "mid (4–6 sessions)"
    assert labels[2] == "high (≥7 sessions)"
    group, _ = terciles(np.array([5, 60]), "users", reference=np.array([1, 10, 20, 30, 100, 200]))
    np.testing.assert_array_equal(group, [0, 2])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_visible_rows_equal_a_stable_sort_of_the_whole_row(b: int, n: int, k: int,
                                                           seed: int) -> None:
    """The linear-time row equals the first ``k`` of a stable descending sort (ties to the
    earlier position), with ineligible candidates (``-inf`` or no sticker) never shown."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(-2, 3, (b, n)).astype(np.float64)  # many ties
    scores[rng.random((b, n)) < 0.2] = -np.inf
    shown = np.where(rng.random((b, n)) < 0.15, -1, rng.integers(0, 50, (b, n)))
    masked = np.where(np.isfinite(scores) & (shown >= 0), scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    expected = np.where(np.isfinite(np.take_along_axis(masked, order, axis=1)), order, -1)
    np.testing.assert_array_equal(visible_rows(scores, shown, k), expected)
