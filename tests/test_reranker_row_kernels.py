"""The row keystroke's candidate selection and row (issue #15, speed), against plain Python.

The compiled shortlist skips the pre-scores when the cap keeps every candidate, and the
row's stable top-k insertion is one helper shared with the package path
(:func:`reranker.kernels.push_top`). These tests hold both to a plain-Python reading of
the documented rule on random small inputs: candidates in first-match order, each with
its best label; protected (recently sent) stickers always kept up to the capacity; the
rest by pre-score, ties in candidate order; kept ones listed in candidate order; the row
the best ``limit`` scores, ties in candidate order. Values are multiples of 1/4, so
float32 sums are exact and ties are real.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reranker import kernels

NEVER = kernels.NEVER
PRE_W = np.array([8.0, 4.0, 4.0, 2.0], np.float32)


def _python_shortlist(m_label: list[int], m_strength: list[float], lab_lists: list[list[int]],
                      st_pk: np.ndarray, v_st: np.ndarray, v_pk: np.ndarray,
                      pk_prior: np.ndarray, st_last: np.ndarray, protect_after: float,
                      cap: int, capacity: int) -> tuple[list[int], list[int]]:
    """(collected stickers, kept positions) by the rule in the module docstring."""
    order: list[int] = []
    best: dict[int, float] = {}
    for lab, strength in zip(m_label, m_strength, strict=True):
        for s in lab_lists[lab]:
            if s not in best:
                order.append(s)
                best[s] = strength
            elif strength > best[s]:
                best[s] = strength
    n = len(order)
    protect = [st_last[s] >= protect_after for s in order]
    pre = [PRE_W[0] * best[s] + PRE_W[1] * v_st[s, 0] + PRE_W[2] * v_st[s, 1]
           + PRE_W[3] * v_pk[st_pk[s], 0] + pk_prior[st_pk[s]] for s in order]
    n_keep = min(max(cap, sum(protect)), capacity, n)
    kept_protected = [i for i in range(n) if protect[i]][:n_keep]
    room = n_keep - len(kept_protected)
    others = sorted((i for i in range(n) if not protect[i]), key=lambda i: (-pre[i], i))
    return order, sorted(kept_protected + others[:room])


def _quarters(rng: np.random.Generator, shape: tuple[int, ...], high: int) -> np.ndarray:
    return (rng.integers(0, high, size=shape) / 4).astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_st=st.integers(1, 40), n_pk=st.integers(1, 8),
       n_lab=st.integers(1, 6), cap=st.integers(1, 45), extra=st.integers(-10, 10))
def test_shortlist_keeps_what_the_rule_keeps(seed: int, n_st: int, n_pk: int, n_lab: int,
                                             cap: int, extra: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = max(1, cap + extra)
    st_pk = rng.integers(0, n_pk, size=n_st).astype(np.int32)
    lab_lists = [sorted(rng.choice(n_st, size=int(rng.integers(0, n_st + 1)),
                                   replace=False).tolist()) for _ in range(n_lab)]
    lab_ptr = np.r_[0, np.cumsum([len(x) for x in lab_lists])].astype(np.int32)
    lab_st = np.array([s for x in lab_lists for s in x], np.int32)
    m_label = rng.permutation(n_lab)[: int(rng.integers(1, n_lab + 1))].astype(np.int32)
    m_strength = (rng.integers(1, 5, size=m_label.size) / 4).astype(np.float32)
    m_kind = rng.integers(1, 4, size=m_label.size).astype(np.int8)
    v_st = _quarters(rng, (n_st, 3), 4)
    v_pk = _quarters(rng, (n_pk, 5), 4)
    v_pk[:, 3] = 0.0  # every package in the device's view
    pk_prior = _quarters(rng, (n_pk,), 8)
    st_last = np.where(rng.random(n_st) < 0.3, rng.integers(0, 100, size=n_st),
                       NEVER).astype(np.float64)
    protect_after = 50.0
    pk_flags = np.full(n_pk, kernels.IN_STAGE1, np.int8)
    label_unit = rng.normal(size=(n_lab, 3)).astype(np.float32)
    stamp = np.zeros(2, np.int32)
    # a tuple, not a list: its length is known, so *scratch fills exactly the 13 buffers
    scratch = (np.zeros(n_st, np.int32), np.zeros(n_st, np.int32), np.zeros(n_pk, np.int32),
               np.zeros(n_pk, np.int32), stamp, np.empty(n_st, np.int32),
               np.empty(n_st, np.float32), np.empty(n_st, np.int8), np.empty(n_st, np.int32),
               np.empty(n_st, np.float32), np.empty(n_st, np.bool_), np.empty(n_st, np.int64),
               np.empty(3, np.float32))
    keep = scratch[11]
    c_st = scratch[5]
    for _ in range(2):  # a second keystroke over the same scratch (stamps, not clears)
        n, m, _total = kernels.shortlist(
            m_label, m_strength, m_kind, lab_ptr, lab_st, np.zeros(1, np.int32),
            np.zeros(0, np.int32), st_pk, np.zeros(n_st + 1, np.int32), np.zeros(0, np.int32),
            pk_prior, pk_flags, label_unit, v_st, v_pk, st_last, protect_after,
            np.zeros(0, np.int32), cap, PRE_W, *scratch, capacity)
        order, kept = _python_shortlist(m_label.tolist(), m_strength.tolist(), lab_lists,
                                        st_pk, v_st, v_pk, pk_prior, st_last, protect_after,
                                        cap, capacity)
        assert c_st[:n].tolist() == order
        assert keep[:m].tolist() == kept


@settings(max_examples=300, deadline=None)
@given(scores=st.lists(st.integers(-4, 4), min_size=0, max_size=30),
       limit=st.integers(1, 8), hidden=st.integers(0, 2**30))
def test_the_row_is_the_stable_top_k(scores: list[int], limit: int, hidden: int) -> None:
    values = np.array(scores, np.float32) / np.float32(2)  # many ties
    want = sorted(range(len(scores)), key=lambda i: (-values[i], i))[:limit]
    index = np.empty(limit, np.int64)
    m = 0
    for i in range(len(scores)):
        m = kernels.push_top(values, i, index, m, limit)
    assert index[:m].tolist() == want
    # the package path: candidates without a sticker (shown < 0) never enter the row
    shown = np.array([-1 if (hidden >> i) & 1 else i for i in range(len(scores))], np.int32)
    out = (np.empty(limit, np.int64), np.empty(limit, np.int64), np.empty(limit, np.float64))
    ids = np.arange(len(scores), dtype=np.int32) + 100
    m = kernels.top_candidates(values, shown, ids, limit, *out)
    want = sorted((i for i in range(len(scores)) if shown[i] >= 0),
                  key=lambda i: (-values[i], i))[:limit]
    assert out[0][:m].tolist() == want and out[1][:m].tolist() == [i + 100 for i in want]
    assert out[2][:m].tolist() == [float(values[i]) for i in want]
