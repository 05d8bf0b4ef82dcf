"""Compiled (numba) candidate assembly of the sticker row: match → stickers → features.

One keystroke on the phone is :func:`assemble`: walk the matched labels' stickers in the
device's catalogue view (its cluster's stage-1 packages, the packages it holds and the
ones it sent from), keep each eligible sticker once with its best-matching label, score
each with a cheap pre-score, cap the set (never dropping the person's own recent
stickers) and write the model's inputs — package factor, keyword features, stage-1 prior
and the on-device history features — into the scorer's bound buffers. The simulation of
training and evaluation, :func:`walk`, runs the same assembly over each device's sends
in time order, the history state at each send built only from earlier sends.

History state (per catalogue sticker, package and label): a decayed count ``val`` as of
``last`` (seconds; :data:`NEVER` when never sent) — the count at time ``t`` is
``val · 2^(-(t - last) / half_life)``.

Compiled on first use, then loaded from numba's on-disk cache (``@njit(cache=True)``);
the package imports this module lazily.

A keystroke of the keyboard app calls :func:`keystroke_rows` with two structs
(:class:`KeystrokeInputs`, :class:`KeystrokeScratch`: numba ``structref`` types, which,
unlike jitclasses, can be cached) in place of :func:`keystroke`'s ~54 arrays and scalars,
and a server's :func:`keystroke_server` with one (:class:`KeystrokeJob`, both of them):
numba's dispatch types and unboxes every argument on each call. Measured in-process with
8 MB swept through the cache before each call (session 10): a no-op compiled function
costs ~9 µs with no argument, ~18 µs with 4 arrays and 4 scalars, ~29 µs with one struct
more (a struct is typed through numba's slow path: ~10 µs for the first, ~2 µs for a
second) and ~41 µs with the old 54 arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, types
from numba.experimental import structref

# numba's cache does not notice a change in another file's function: a change to
# push_top needs the cache of this module cleared (its __pycache__ *.nbi/*.nbc)
from reranker._kernels import push_top

__all__ = [
    "INPUT_FIELDS",
    "NEVER",
    "N_HISTORY",
    "SCRATCH_FIELDS",
    "KeystrokeInputs",
    "KeystrokeJob",
    "KeystrokeScratch",
    "assemble",
    "keystroke",
    "keystroke_rows",
    "keystroke_server",
    "new_keystroke_inputs",
    "new_keystroke_job",
    "new_keystroke_scratch",
    "record_send",
    "refresh_view",
    "walk",
]

NEVER = -1.0e300
"""``last`` of something never sent."""
N_HISTORY = 12
"""Length of a history feature row (:data:`reranker._row.HISTORY_FEATURE_NAMES`)."""
N_KEYWORD = 7
IN_STAGE1 = 1
HELD = 2


@njit(cache=True, nogil=True)
def _decayed(val: float, last: float, now: float, half_life: float) -> float:  # pragma: no cover
    if last <= NEVER:
        return 0.0
    return val * math.pow(2.0, -max(now - last, 0.0) / half_life)


@njit(cache=True, nogil=True)
def _recency(last: float, now: float, tau: float) -> float:  # pragma: no cover
    if last <= NEVER:
        return 0.0
    return math.exp(-max(now - last, 0.0) / tau)


@njit(cache=True, nogil=True)
def _count_feature(count: float, norm: float) -> float:  # pragma: no cover
    return min(math.log1p(count), norm) / norm


@njit(cache=True, nogil=True)
def record_send(s: int, now: float, st_pk, st_lab_ptr, st_lab, st_val, st_last, pk_val,
                pk_last, lb_val, lb_last, tot, half_life: float) -> None:  # pragma: no cover
    """Add one send of catalogue sticker ``s`` at ``now`` to the history state."""
    st_val[s] = _decayed(st_val[s], st_last[s], now, half_life) + 1.0
    st_last[s] = now
    p = st_pk[s]
    pk_val[p] = _decayed(pk_val[p], pk_last[p], now, half_life) + 1.0
    pk_last[p] = now
    for j in range(st_lab_ptr[s], st_lab_ptr[s + 1]):
        lab = st_lab[j]
        lb_val[lab] = _decayed(lb_val[lab], lb_last[lab], now, half_life) + 1.0
        lb_last[lab] = now
    tot[0] = _decayed(tot[0], tot[1], now, half_life) + 1.0
    tot[1] = now


@njit(cache=True, nogil=True)
def _collect_csr(m_label, m_strength, m_kind, lab_ptr, lab_st, st_pk, pk_flags, v_pk, seen,
                 slot, pk_seen, pk_cnt, st_stamp, c_st, c_bs, c_kind, c_lab,
                 n: int, second: bool) -> int:  # pragma: no cover
    for j in range(m_label.shape[0]):
        lab = m_label[j]
        if lab + 1 >= lab_ptr.shape[0]:
            continue
        strength = m_strength[j]
        for q in range(lab_ptr[lab], lab_ptr[lab + 1]):
            s = lab_st[q]
            p = st_pk[s]
            listed = (pk_flags[p] & IN_STAGE1) != 0
            if second and listed:
                continue  # the first CSR holds every listed package's stickers
            if not listed and v_pk[p, 3] > 0:
                continue  # not in the device's catalogue view (new and not listed)
            if pk_seen[p] != st_stamp:
                pk_seen[p] = st_stamp
                pk_cnt[p] = 0
            pk_cnt[p] += 1  # matched (label, sticker) pairs of the package
            if seen[s] == st_stamp:
                if strength > c_bs[slot[s]]:  # ties: the label earlier in the match wins
                    i = slot[s]
                    c_bs[i] = strength
                    c_kind[i] = m_kind[j]
                    c_lab[i] = lab
                continue
            seen[s] = st_stamp
            slot[s] = n
            c_st[n] = s
            c_bs[n] = strength
            c_kind[n] = m_kind[j]
            c_lab[n] = lab
            n += 1
    return n


@njit(cache=True, nogil=True)
def _collect(m_label, m_strength, m_kind, lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk,
             st_lab_ptr, st_lab, pk_flags, v_pk, fallback, seen, slot, pk_seen, pk_cnt,
             stamp, c_st, c_bs, c_kind, c_lab) -> int:  # pragma: no cover
    """Eligible stickers of the matched labels, each once (best label kept); returns n.

    Two label → sticker CSRs are walked: the first must hold every sticker of the
    cluster's listed packages (the cluster's CSR, or the whole catalogue); the second
    (the device's own packages) adds the unlisted ones. ``pk_cnt`` ends with, per
    package, the number of (matched label, sticker) pairs among its collected stickers.
    """
    stamp[0] += 1
    st_stamp = stamp[0]
    n = 0
    if m_label.shape[0] == 0:
        for i in range(fallback.shape[0]):
            s = fallback[i]
            if seen[s] == st_stamp:
                continue
            seen[s] = st_stamp
            slot[s] = n
            c_st[n] = s
            c_bs[n] = 0.0
            c_kind[n] = 0
            c_lab[n] = -1
            p = st_pk[s]
            pk_seen[p] = st_stamp
            pk_cnt[p] = 0
            n += 1
        return n
    n = _collect_csr(m_label, m_strength, m_kind, lab_ptr, lab_st, st_pk, pk_flags, v_pk,
                     seen, slot, pk_seen, pk_cnt, st_stamp, c_st, c_bs, c_kind, c_lab, 0,
                     False)
    n = _collect_csr(m_label, m_strength, m_kind, lab_ptr_b, lab_st_b, st_pk, pk_flags, v_pk,
                     seen, slot, pk_seen, pk_cnt, st_stamp, c_st, c_bs, c_kind, c_lab, n,
                     True)
    return n


@njit(cache=True, nogil=True)
def refresh_view(now: float, sts, pks, lbs, st_val, st_last, pk_val, pk_last, lb_val, lb_last,
                 tot, half_life: float, tau: float, norm: float, v_st, v_pk,
                 v_lb) -> None:  # pragma: no cover
    """Recompute the history view at ``now`` for the given stickers, packages and labels.

    The view holds every history feature that does not depend on the keystroke:
    ``v_st`` (n_st, 3) sticker count, recency, share; ``v_pk`` (n_pk, 5) package count,
    recency, share, new, held; ``v_lb`` (n_labels, 2) label count, recency. Untouched
    entries keep their initial values (zeros; ``v_pk[:, 3]`` = 1 for a new package).
    """
    norm_c = math.log1p(norm)
    c_tot = _decayed(tot[0], tot[1], now, half_life)
    for i in range(sts.shape[0]):
        s = sts[i]
        c = _decayed(st_val[s], st_last[s], now, half_life)
        v_st[s, 0] = _count_feature(c, norm_c)
        v_st[s, 1] = _recency(st_last[s], now, tau)
        v_st[s, 2] = c / c_tot if c_tot > 0 else 0.0
    for i in range(pks.shape[0]):
        p = pks[i]
        c = _decayed(pk_val[p], pk_last[p], now, half_life)
        v_pk[p, 0] = _count_feature(c, norm_c)
        v_pk[p, 1] = _recency(pk_last[p], now, tau)
        v_pk[p, 2] = c / c_tot if c_tot > 0 else 0.0
        if pk_last[p] > NEVER:
            v_pk[p, 3] = 0.0
    for i in range(lbs.shape[0]):
        lab = lbs[i]
        v_lb[lab, 0] = _count_feature(_decayed(lb_val[lab], lb_last[lab], now, half_life),
                                      norm_c)
        v_lb[lab, 1] = _recency(lb_last[lab], now, tau)


@njit(cache=True, nogil=True)
def _history_row(s: int, lab: int, p: int, pk_flags, pk_premium, v_st, v_pk, v_lb,
                 subscriber: bool, out) -> None:  # pragma: no cover
    """The :data:`N_HISTORY` history features of sticker ``s`` (package ``p``, best label
    ``lab``) from the view."""
    out[0] = v_st[s, 0]
    out[1] = v_st[s, 1]
    out[2] = v_pk[p, 0]
    out[3] = v_pk[p, 1]
    if lab >= 0:
        out[4] = v_lb[lab, 0]
        out[5] = v_lb[lab, 1]
    else:
        out[4] = 0.0
        out[5] = 0.0
    out[6] = v_st[s, 2]
    out[7] = v_pk[p, 2]
    out[8] = v_pk[p, 3]
    out[9] = v_pk[p, 4]
    out[10] = 1.0 if (subscriber and pk_premium[p]) else 0.0
    out[11] = 1.0 if (pk_flags[p] & IN_STAGE1) != 0 else 0.0


@njit(cache=True, nogil=True)
def _select(n: int, c_pre, c_protect, cap: int, capacity: int, keep) -> int:  # pragma: no cover
    """Indices (into the collected list, in list order) kept by the cap; returns their number.

    Protected candidates are always kept (up to ``capacity``); the others by pre-score,
    ties in list order.
    """
    n_prot = 0
    for i in range(n):
        if c_protect[i]:
            n_prot += 1
    n_keep = min(max(cap, n_prot), capacity, n)
    if n_keep == n:
        for i in range(n):
            keep[i] = i
        return n
    room = n_keep - min(n_prot, n_keep)
    n_other = n - n_prot
    thr = -np.inf
    if 0 < room < n_other:
        others = np.empty(n_other, np.float32)
        j = 0
        for i in range(n):
            if not c_protect[i]:
                others[j] = c_pre[i]
                j += 1
        thr = np.partition(others, n_other - room)[n_other - room]
    n_above = 0
    if room < n_other:
        for i in range(n):
            if not c_protect[i] and c_pre[i] > thr:
                n_above += 1
    ties_left = room - n_above if room < n_other else n_other
    m = 0
    prot_left = n_keep - room
    for i in range(n):
        if c_protect[i]:
            if prot_left > 0:
                keep[m] = i
                m += 1
                prot_left -= 1
        elif room >= n_other or c_pre[i] > thr:
            if room > 0:
                keep[m] = i
                m += 1
        elif c_pre[i] == thr and ties_left > 0 and room > 0:
            keep[m] = i
            m += 1
            ties_left -= 1
    return m


@njit(cache=True, nogil=True)
def _shortlist(m_label, m_strength, m_kind, lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk,
               st_lab_ptr, st_lab, pk_prior, pk_flags, label_unit, v_st, v_pk, st_last,
               protect_after, fallback, cap, pre_w, seen, slot, pk_seen, pk_cnt, stamp, c_st,
               c_bs, c_kind, c_lab, c_pre, c_protect, keep, q, capacity):  # pragma: no cover
    """The keystroke's candidates before their features: collect, pre-score, cap.

    Returns ``(n, m, total)``: stickers collected (also ``stamp[1]``), kept (``keep[:m]``
    indexes ``c_*``), and the summed match strength (the query vector ``q`` is their
    strength-weighted mean label embedding). Arguments as in :func:`assemble`.
    """
    n = _collect(m_label, m_strength, m_kind, lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk,
                 st_lab_ptr, st_lab, pk_flags, v_pk, fallback, seen, slot, pk_seen, pk_cnt,
                 stamp, c_st, c_bs, c_kind, c_lab)
    stamp[1] = n
    if n == 0:
        return 0, 0, 0.0
    d = q.shape[0]
    for t in range(d):
        q[t] = 0.0
    total = 0.0
    for j in range(m_label.shape[0]):
        w = m_strength[j]
        total += w
        for t in range(d):
            q[t] += w * label_unit[m_label[j], t]
    if total > 0:
        for t in range(d):
            q[t] /= total
    if n <= cap and n <= capacity:
        # every candidate is kept whatever its pre-score or protection: no cap to apply
        for i in range(n):
            keep[i] = i
        return n, n, total
    for i in range(n):
        s = c_st[i]
        p = st_pk[s]
        c_protect[i] = st_last[s] >= protect_after
        c_pre[i] = (pre_w[0] * c_bs[i] + pre_w[1] * v_st[s, 0] + pre_w[2] * v_st[s, 1]
                    + pre_w[3] * v_pk[p, 0] + pk_prior[p])
    m = _select(n, c_pre, c_protect, cap, capacity, keep)
    return n, m, total


@njit(cache=True, nogil=True)
def assemble(m_label, m_strength, m_kind,
             lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk, st_lab_ptr, st_lab, pk_size,
             pk_factor, pk_unit, pk_premium, label_unit,
             pk_prior, pk_flags, v_st, v_pk, v_lb, st_last, subscriber, protect_after,
             fallback, cap, pre_w,
             seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind, c_lab, c_pre, c_protect,
             keep, q,
             o_st, o_pk, o_v, o_kw, o_prior, o_hist) -> int:  # pragma: no cover
    """Candidates of one keystroke written into the ``o_*`` buffers; returns their number.

    Parameters (all arrays; catalogue indices, not ids)
    ----------
    m_label, m_strength, m_kind : (m,) int32, float32, int8
        The keyword match (labels each once).
    lab_ptr, lab_st, lab_ptr_b, lab_st_b : int32
        Two CSRs of catalogue stickers carrying each label (e.g. the cluster's packages
        and the device's own; or the whole catalogue and an empty one).
    st_pk : (n_st,) int32
        Package of each sticker. ``st_lab_ptr``, ``st_lab``: CSR of each sticker's labels.
    pk_size : (n_pk,) int32; pk_factor, pk_unit : (n_pk, d) float32; pk_premium : (n_pk,) bool
    label_unit : (n_labels, d) float32
        Unit label embeddings (query cosine).
    pk_prior : (n_pk,) float32
        Stage-1 rank prior of the device's cluster list (the unlisted prior elsewhere).
    pk_flags : (n_pk,) int8
        Bit 1: in the cluster's stage-1 list.
    v_st, v_pk, v_lb : float32
        The history view (:func:`refresh_view`); a package with ``v_pk[p, 3] == 0`` (sent
        from or held) or in the list is in the device's catalogue view.
    st_last : (n_st,) float64
        Last send of each sticker; ``protect_after``: sends at or after it make a sticker
        "own recent" (never capped).
    subscriber : bool
    fallback : (f,) int32
        Candidates when nothing matches.
    cap : int
        Most candidates besides the protected ones.
    pre_w : (4,) float32
        Pre-score weights of best strength, sticker count, sticker recency, package count;
        plus the prior (weight 1).
    seen, slot, pk_seen, pk_cnt, stamp, c_*, keep, q
        Scratch (sized to the catalogue; ``q`` (d,); ``stamp`` (2,) int32: the visit
        counter, and on return the number collected before the cap).
    o_st, o_pk : int32; o_v (cap', d), o_kw (cap', 7), o_prior (cap',), o_hist (cap', 12)
        Outputs; ``cap'`` = capacity (the length of ``o_st``). ``o_v`` may have no rows
        (shape (0, d)): the package factors are then not copied (:func:`keystroke` reads
        them from ``pk_factor``).
    """
    n, m, total = _shortlist(m_label, m_strength, m_kind, lab_ptr, lab_st, lab_ptr_b,
                             lab_st_b, st_pk, st_lab_ptr, st_lab, pk_prior, pk_flags,
                             label_unit, v_st, v_pk, st_last, protect_after, fallback, cap,
                             pre_w, seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind,
                             c_lab, c_pre, c_protect, keep, q, o_st.shape[0])
    if n == 0:
        return 0
    d = q.shape[0]
    st_stamp = stamp[0]
    write_v = o_v.shape[0] > 0
    pk_cos = c_pre  # reused as per-package scratch once the pre-scores are spent
    if pk_cos.shape[0] < pk_size.shape[0]:
        pk_cos = np.empty(pk_size.shape[0], np.float32)
    for r in range(m):
        i = keep[r]
        s = c_st[i]
        p = st_pk[s]
        o_st[r] = s
        o_pk[r] = p
        if write_v:
            for t in range(d):
                o_v[r, t] = pk_factor[p, t]
        o_kw[r, 0] = c_bs[i]
        o_kw[r, 1] = 1.0 if c_kind[i] == 1 else 0.0
        o_kw[r, 2] = 1.0 if c_kind[i] == 2 else 0.0
        o_kw[r, 3] = 1.0 if c_kind[i] == 3 else 0.0
        cnt = min(float(pk_cnt[p]), float(pk_size[p]))
        o_kw[r, 4] = math.log1p(cnt)
        o_kw[r, 5] = cnt / max(float(pk_size[p]), 1.0)
        if pk_seen[p] != -st_stamp:  # the package's query cosine, once per keystroke
            pk_seen[p] = -st_stamp
            cos = 0.0
            if total > 0:
                for t in range(d):
                    cos += pk_unit[p, t] * q[t]
            pk_cos[p] = cos
        o_kw[r, 6] = pk_cos[p]
        o_prior[r] = pk_prior[p]
        # the history features (as _history_row), written in place
        lab = c_lab[i]
        o_hist[r, 0] = v_st[s, 0]
        o_hist[r, 1] = v_st[s, 1]
        o_hist[r, 2] = v_pk[p, 0]
        o_hist[r, 3] = v_pk[p, 1]
        o_hist[r, 4] = v_lb[lab, 0] if lab >= 0 else 0.0
        o_hist[r, 5] = v_lb[lab, 1] if lab >= 0 else 0.0
        o_hist[r, 6] = v_st[s, 2]
        o_hist[r, 7] = v_pk[p, 2]
        o_hist[r, 8] = v_pk[p, 3]
        o_hist[r, 9] = v_pk[p, 4]
        o_hist[r, 10] = 1.0 if (subscriber and pk_premium[p]) else 0.0
        o_hist[r, 11] = 1.0 if (pk_flags[p] & IN_STAGE1) != 0 else 0.0
    return m


@njit(cache=True, nogil=True)
def keystroke(m_label, m_strength, m_kind,
              lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk, st_lab_ptr, st_lab, pk_size,
              pk_factor, pk_unit, pk_premium, label_unit,
              pk_prior, pk_flags, v_st, v_pk, v_lb, st_last, subscriber, protect_after,
              fallback, cap, pre_w,
              seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind, c_lab, c_pre, c_protect,
              keep, q, o_st, o_pk,
              query, kw_w, prior_w, hist_w, pk_mark, pk_part, o_score,
              sticker_ids, package_ids, limit, row_stickers, row_packages,
              row_scores):  # pragma: no cover
    """One whole keystroke of the sticker row: the candidates of :func:`assemble`, the
    model's scores and the row, in one compiled call.

    The model is the linear form the ONNX graph computes (:meth:`reranker.OnnxScorer.
    linear_form`): ``s_i = v_i · query + kw_w · K_i + prior_w · r_i + hist_w · H_i`` with
    ``query = Wᵀu + c`` (the user tower, computed once per person) and ``K_i``, ``H_i``
    the features :func:`assemble` would write (as float32). Nothing per candidate is
    written but its sticker, package and score: the terms that depend only on the
    package (factor · query, prior, package counts, match count, query cosine, package
    history) are summed once per package per keystroke.

    Parameters
    ----------
    m_label … q, o_st, o_pk
        As in :func:`assemble` (its other outputs are not needed).
    query : (d,) float64
        The user tower's output for this person.
    kw_w : (k,) float64; prior_w : float; hist_w : (h,) float64
        The context weights.
    pk_mark : (n_pk,) int32; pk_part : (n_pk,) float64
        Scratch (``pk_mark`` starts at zeros and is kept between keystrokes).
    o_score : (cap',) float32
        Scores of the candidates (``[:n]`` written, in the order of ``o_st``).
    sticker_ids, package_ids : (n_st,), (n_pk,) int32
        Catalogue position → id.
    limit : int
        Row length wanted (``1 <= limit <= len(row_*)``).
    row_stickers, row_packages : (>= limit,) int64; row_scores : (>= limit,) float64
        The row, best first, ties in candidate order (as
        :func:`reranker._kernels.top_candidates`); ``[:m]`` written.

    Returns
    -------
    n, m : int
        Candidates scored, stickers in the row.
    """
    n_found, n, total = _shortlist(m_label, m_strength, m_kind, lab_ptr, lab_st, lab_ptr_b,
                                   lab_st_b, st_pk, st_lab_ptr, st_lab, pk_prior, pk_flags,
                                   label_unit, v_st, v_pk, st_last, protect_after, fallback,
                                   cap, pre_w, seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs,
                                   c_kind, c_lab, c_pre, c_protect, keep, q, o_st.shape[0])
    if n_found == 0:
        return 0, 0
    st_stamp = stamp[0]
    d = query.shape[0]
    for r in range(n):
        i = keep[r]
        s = c_st[i]
        p = st_pk[s]
        o_st[r] = s
        o_pk[r] = p
        if pk_mark[p] != st_stamp:  # the package's terms, once per keystroke
            pk_mark[p] = st_stamp
            acc = 0.0
            for t in range(d):
                acc += pk_factor[p, t] * query[t]
            cos = 0.0
            if total > 0:
                for t in range(d):
                    cos += pk_unit[p, t] * q[t]
            cnt = min(float(pk_cnt[p]), float(pk_size[p]))
            acc += (prior_w * pk_prior[p]
                    + kw_w[4] * np.float32(math.log1p(cnt))
                    + kw_w[5] * np.float32(cnt / max(float(pk_size[p]), 1.0))
                    + kw_w[6] * np.float32(cos)
                    + hist_w[2] * v_pk[p, 0] + hist_w[3] * v_pk[p, 1]
                    + hist_w[7] * v_pk[p, 2] + hist_w[8] * v_pk[p, 3]
                    + hist_w[9] * v_pk[p, 4])
            if subscriber and pk_premium[p]:
                acc += hist_w[10]
            if (pk_flags[p] & IN_STAGE1) != 0:
                acc += hist_w[11]
            pk_part[p] = acc
        score = (pk_part[p] + kw_w[0] * c_bs[i]
                 + hist_w[0] * v_st[s, 0] + hist_w[1] * v_st[s, 1] + hist_w[6] * v_st[s, 2])
        kind = c_kind[i]
        if 1 <= kind <= 3:
            score += kw_w[kind]
        lab = c_lab[i]
        if lab >= 0:
            score += hist_w[4] * v_lb[lab, 0] + hist_w[5] * v_lb[lab, 1]
        o_score[r] = score
    # the row: the best ``limit`` candidates, ties in candidate order
    index = keep  # reused: the kept indices are spent
    m = 0
    for i in range(n):
        m = push_top(o_score, i, index, m, limit)
    for j in range(m):
        i = index[j]
        row_stickers[j] = sticker_ids[o_st[i]]
        row_packages[j] = package_ids[o_pk[i]]
        row_scores[j] = o_score[i]
    return n, m


@njit(cache=True, nogil=True)
def _baseline_ranks(n: int, sent: int, st_pk, pk_flags, pk_prior, pk_seg, st_val, st_last,
                    pk_val, pk_last, now, half_life, c_st, c_bs, seen, stamp, pk_seen2,
                    pk_best, pk_bcount, pk_bstr, out) -> None:  # pragma: no cover
    """Ranks of the sent sticker under the no-model rows (``-1`` = not in the row at all).

    out[0] recents: the person's previously sent matching stickers by decayed count
    (recency-weighted frequency), ties by the later last send. out[1] stage-1 order and
    out[2] device counts: one sticker per matching stage-1 package (stage-1 order: its
    first sticker with the best label; device counts: its most-sent sticker, else that
    one), packages in stage-1 order / by decayed package count then stage-1 order.
    out[5] segment popularity: stage-1 order's shown stickers, packages by the
    device's segment key ``pk_seg`` (:class:`reranker._segment.SegmentPopularity`)
    then stage-1 order.
    """
    out[0] = -1
    out[1] = -1
    out[2] = -1
    out[5] = -1
    if sent < 0 or seen[sent] != stamp:
        return
    c_sent = _decayed(st_val[sent], st_last[sent], now, half_life)
    if st_last[sent] > NEVER:
        r = 0
        for i in range(n):
            s = c_st[i]
            if s == sent or st_last[s] <= NEVER:
                continue
            c = _decayed(st_val[s], st_last[s], now, half_life)
            if c > c_sent or (c == c_sent and st_last[s] > st_last[sent]):
                r += 1
        out[0] = r
    p_sent = st_pk[sent]
    if (pk_flags[p_sent] & IN_STAGE1) == 0:
        return
    # per stage-1 package: first sticker with the best strength; most-sent sticker
    for i in range(n):
        s = c_st[i]
        p = st_pk[s]
        if (pk_flags[p] & IN_STAGE1) == 0:
            continue
        c = _decayed(st_val[s], st_last[s], now, half_life)
        if pk_seen2[p] != stamp:
            pk_seen2[p] = stamp
            pk_best[p] = i
            pk_bstr[p] = c_bs[i]
            pk_bcount[p] = i if c > 0 else -1
        else:
            if c_bs[i] > pk_bstr[p] or (c_bs[i] == pk_bstr[p] and s < c_st[pk_best[p]]):
                pk_best[p] = i
                pk_bstr[p] = c_bs[i]
            if c > 0:
                b = pk_bcount[p]
                if b < 0:
                    pk_bcount[p] = i
                else:
                    cb = _decayed(st_val[c_st[b]], st_last[c_st[b]], now, half_life)
                    if c > cb or (c == cb and s < c_st[b]):
                        pk_bcount[p] = i
    shown_s1 = c_st[pk_best[p_sent]]
    shown_dc = c_st[pk_bcount[p_sent]] if pk_bcount[p_sent] >= 0 else shown_s1
    c_p = _decayed(pk_val[p_sent], pk_last[p_sent], now, half_life)
    r1 = 0
    r2 = 0
    r5 = 0
    for i in range(n):
        s = c_st[i]
        p = st_pk[s]
        if (pk_flags[p] & IN_STAGE1) == 0 or p == p_sent or pk_best[p] != i:
            continue  # each other stage-1 package once (at its shown row)
        if pk_prior[p] > pk_prior[p_sent]:
            r1 += 1
        if pk_seg[p] > pk_seg[p_sent] or (pk_seg[p] == pk_seg[p_sent]
                                          and pk_prior[p] > pk_prior[p_sent]):
            r5 += 1
        c = _decayed(pk_val[p], pk_last[p], now, half_life)
        if c > c_p or (c == c_p and pk_prior[p] > pk_prior[p_sent]):
            r2 += 1
    if shown_s1 == sent:
        out[1] = r1
        out[5] = r5
    if shown_dc == sent:
        out[2] = r2


@njit(cache=True, nogil=True)
def _owned_key(s: int, p: int, pk_flags, pk_arr, st_val, st_last, now: float,
               half_life: float) -> float:  # pragma: no cover
    """The ``owned`` row's key of sticker ``s`` (package ``p``); ``-1``: not held.

    As ``evaluation.DeviceHistory`` with holdings: a sticker the person sent scores
    ``2 + its decayed send count``, an unsent one of a held package
    ``0.5 ** (age of the package's arrival / half_life)``.
    """
    if st_last[s] > NEVER:
        return 2.0 + _decayed(st_val[s], st_last[s], now, half_life)
    if (pk_flags[p] & HELD) != 0:
        return math.pow(0.5, max(now - pk_arr[p], 0.0) / half_life)
    return -1.0


@njit(cache=True, nogil=True)
def _owned_ranks(n: int, sent: int, st_pk, pk_flags, pk_arr, st_val, st_last, now, half_life,
                 c_st, c_bs, out) -> None:  # pragma: no cover
    """Ranks of the sent sticker in the ``owned`` rows (``-1``: not in the row).

    out[3] ``owned``: every matched sticker the phone holds, by :func:`_owned_key`;
    out[4] ``owned_by_match``: by match strength first, that key breaking ties. Ties of
    both keys by catalogue order (the report's arms: by sticker id).
    """
    out[3] = -1
    out[4] = -1
    if sent < 0:
        return
    at = -1
    for i in range(n):
        if c_st[i] == sent:
            at = i
            break
    if at < 0:
        return
    k0 = _owned_key(sent, st_pk[sent], pk_flags, pk_arr, st_val, st_last, now, half_life)
    if k0 < 0:
        return
    m0 = c_bs[at] * 1e6 + k0
    r_own = 0
    r_match = 0
    for i in range(n):
        s = c_st[i]
        if s == sent:
            continue
        k = _owned_key(s, st_pk[s], pk_flags, pk_arr, st_val, st_last, now, half_life)
        if k < 0:
            continue
        if k > k0 or (k == k0 and s < sent):
            r_own += 1
        m = c_bs[i] * 1e6 + k
        if m > m0 or (m == m0 and s < sent):
            r_match += 1
    out[3] = r_own
    out[4] = r_match


@njit(cache=True, nogil=True)
def walk(dev_ptr, s_sig, s_ts, s_st, s_record, s_emit,
         sig_ptr, sig_label, sig_strength, sig_kind,
         acq_ptr, acq_pk, acq_ts, s1_ptr, s1_pk, s1_prior, s1_seg, unlisted_prior, subscriber,
         lab_ptr, lab_st, st_pk, st_lab_ptr, st_lab, pk_size, pk_factor, pk_unit, pk_premium,
         label_unit, half_life, tau, norm, protect_window, cap, pre_w,
         o_ptr, o_st, o_pk, o_kw, o_prior, o_hist, o_pos, o_info) -> int:  # pragma: no cover
    """Every emitted send of a batch of devices as an impression; returns rows written.

    Devices ``b`` own sessions ``dev_ptr[b]:dev_ptr[b+1]`` (time order). Before each
    session the device's acquisitions earlier than it are applied; the session, if
    ``s_emit``, becomes an impression assembled from the state (earlier sends only, the
    history view refreshed at the session's time); then, if ``s_record``, the send joins
    the state. Impression ``e`` has rows ``o_ptr[e]:o_ptr[e+1]``; ``o_pos[e]`` is the
    sent sticker's row (``-1``: not a candidate); ``o_info[e]`` = (recents rank, stage-1
    order rank, device-counts rank, sent package new to the device, sent sticker sent
    before, n collected before the cap, ``owned`` rank, ``owned_by_match`` rank,
    segment-popularity rank); ``s1_seg`` holds each stage-1 entry's segment key.
    Returns -1 when the buffers are too small.
    Factors are not copied (``o_pk`` indexes ``pk_factor``).
    """
    n_st = st_pk.shape[0]
    n_pk = pk_size.shape[0]
    n_lab = lab_ptr.shape[0] - 1
    d = pk_factor.shape[1]
    st_val = np.zeros(n_st)
    st_last = np.full(n_st, NEVER)
    pk_val = np.zeros(n_pk)
    pk_last = np.full(n_pk, NEVER)
    lb_val = np.zeros(n_lab)
    lb_last = np.full(n_lab, NEVER)
    tot = np.array([0.0, NEVER])
    v_st = np.zeros((n_st, 3), np.float32)
    v_pk = np.zeros((n_pk, 5), np.float32)
    v_pk[:, 3] = 1.0
    v_lb = np.zeros((n_lab, 2), np.float32)
    pk_flags = np.zeros(n_pk, np.int8)
    pk_prior = np.full(n_pk, unlisted_prior, np.float32)
    pk_seg = np.zeros(n_pk)
    pk_arr = np.full(n_pk, NEVER)
    seen = np.zeros(n_st, np.int32)
    slot = np.zeros(n_st, np.int32)
    pk_seen = np.zeros(n_pk, np.int32)
    pk_seen2 = np.zeros(n_pk, np.int32)
    pk_cnt = np.zeros(n_pk, np.int32)
    pk_best = np.zeros(n_pk, np.int64)
    pk_bcount = np.zeros(n_pk, np.int64)
    pk_bstr = np.zeros(n_pk, np.float32)
    stamp = np.zeros(2, np.int32)
    c_st = np.empty(n_st, np.int32)
    c_bs = np.empty(n_st, np.float32)
    c_kind = np.empty(n_st, np.int8)
    c_lab = np.empty(n_st, np.int32)
    c_pre = np.empty(n_st, np.float32)
    c_protect = np.empty(n_st, np.bool_)
    keep = np.empty(n_st, np.int64)
    q = np.empty(d, np.float32)
    capacity = o_st.shape[0]
    fallback = np.empty(0, np.int32)
    no_ptr = np.zeros(1, np.int32)
    no_st = np.empty(0, np.int32)
    v_buf = np.empty((n_st if n_st < 4096 else 4096, d), np.float32)
    t_st = np.empty(n_st, np.int32)
    t_pk = np.empty(n_pk, np.int32)
    t_lb = np.empty(n_lab, np.int32)
    m_st = np.zeros(n_st, np.bool_)
    m_pk = np.zeros(n_pk, np.bool_)
    m_lb = np.zeros(n_lab, np.bool_)
    e = 0
    row = 0
    o_ptr[0] = 0
    info = np.empty(6, np.int64)
    for b in range(dev_ptr.shape[0] - 1):
        for j in range(s1_ptr[b], s1_ptr[b + 1]):
            pk_flags[s1_pk[j]] |= IN_STAGE1
            pk_prior[s1_pk[j]] = s1_prior[j]
            pk_seg[s1_pk[j]] = s1_seg[j]
        n_tst = 0
        n_tpk = 0
        n_tlb = 0
        a = acq_ptr[b]
        for i in range(dev_ptr[b], dev_ptr[b + 1]):
            now = s_ts[i]
            while a < acq_ptr[b + 1] and acq_ts[a] < now:
                pk_flags[acq_pk[a]] |= HELD
                if pk_arr[acq_pk[a]] <= NEVER:
                    pk_arr[acq_pk[a]] = acq_ts[a]
                v_pk[acq_pk[a], 3] = 0.0
                v_pk[acq_pk[a], 4] = 1.0
                a += 1
            if s_emit[i]:
                g = s_sig[i]
                room = capacity - row
                out_cap = min(room, v_buf.shape[0])
                if out_cap < min(cap + 256, v_buf.shape[0]):
                    return -1  # the caller retries with larger buffers
                refresh_view(now, t_st[:n_tst], t_pk[:n_tpk], t_lb[:n_tlb], st_val, st_last,
                             pk_val, pk_last, lb_val, lb_last, tot, half_life, tau, norm,
                             v_st, v_pk, v_lb)
                m = assemble(sig_label[sig_ptr[g]:sig_ptr[g + 1]],
                             sig_strength[sig_ptr[g]:sig_ptr[g + 1]],
                             sig_kind[sig_ptr[g]:sig_ptr[g + 1]],
                             lab_ptr, lab_st, no_ptr, no_st, st_pk, st_lab_ptr, st_lab,
                             pk_size, pk_factor, pk_unit, pk_premium, label_unit, pk_prior,
                             pk_flags, v_st, v_pk, v_lb, st_last, subscriber[b],
                             now - protect_window, fallback, cap, pre_w, seen, slot,
                             pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind, c_lab, c_pre,
                             c_protect, keep, q,
                             o_st[row:row + out_cap], o_pk[row:row + out_cap],
                             v_buf[:out_cap], o_kw[row:row + out_cap],
                             o_prior[row:row + out_cap], o_hist[row:row + out_cap])
                sent = s_st[i]
                pos = -1
                for r in range(m):
                    if o_st[row + r] == sent:
                        pos = r
                        break
                n_found = stamp[1]
                _baseline_ranks(n_found, sent, st_pk, pk_flags, pk_prior, pk_seg, st_val,
                                st_last, pk_val, pk_last, now, half_life, c_st, c_bs, seen,
                                stamp[0], pk_seen2, pk_best, pk_bcount, pk_bstr, info)
                _owned_ranks(n_found, sent, st_pk, pk_flags, pk_arr, st_val, st_last, now,
                             half_life, c_st, c_bs, info)
                o_pos[e] = pos
                o_info[e, 0] = info[0]
                o_info[e, 1] = info[1]
                o_info[e, 2] = info[2]
                o_info[e, 3] = 1 if (sent >= 0 and pk_last[st_pk[sent]] <= NEVER) else 0
                o_info[e, 4] = 1 if (sent >= 0 and st_last[sent] > NEVER) else 0
                o_info[e, 5] = n_found
                o_info[e, 6] = info[3]
                o_info[e, 7] = info[4]
                o_info[e, 8] = info[5]
                row += m
                e += 1
                o_ptr[e] = row
            if s_record[i] and s_st[i] >= 0:
                s = s_st[i]
                record_send(s, s_ts[i], st_pk, st_lab_ptr, st_lab, st_val, st_last, pk_val,
                            pk_last, lb_val, lb_last, tot, half_life)
                if not m_st[s]:
                    m_st[s] = True
                    t_st[n_tst] = s
                    n_tst += 1
                p = st_pk[s]
                if not m_pk[p]:
                    m_pk[p] = True
                    t_pk[n_tpk] = p
                    n_tpk += 1
                for j in range(st_lab_ptr[s], st_lab_ptr[s + 1]):
                    lab = st_lab[j]
                    if not m_lb[lab]:
                        m_lb[lab] = True
                        t_lb[n_tlb] = lab
                        n_tlb += 1
        # reset the device's state (only what it touched)
        for j in range(n_tst):
            s = t_st[j]
            st_val[s] = 0.0
            st_last[s] = NEVER
            m_st[s] = False
            for t in range(3):
                v_st[s, t] = 0.0
        for j in range(n_tpk):
            p = t_pk[j]
            pk_val[p] = 0.0
            pk_last[p] = NEVER
            m_pk[p] = False
        for j in range(n_tlb):
            lab = t_lb[j]
            lb_val[lab] = 0.0
            lb_last[lab] = NEVER
            m_lb[lab] = False
            v_lb[lab, 0] = 0.0
            v_lb[lab, 1] = 0.0
        for j in range(n_tpk):
            p = t_pk[j]
            for t in range(5):
                v_pk[p, t] = 0.0
            v_pk[p, 3] = 1.0
        for j in range(acq_ptr[b], acq_ptr[b + 1]):
            pk_flags[acq_pk[j]] = 0
            pk_arr[acq_pk[j]] = NEVER
            for t in range(5):
                v_pk[acq_pk[j], t] = 0.0
            v_pk[acq_pk[j], 3] = 1.0
        tot[0] = 0.0
        tot[1] = NEVER
        for j in range(s1_ptr[b], s1_ptr[b + 1]):
            pk_flags[s1_pk[j]] = 0
            pk_prior[s1_pk[j]] = unlisted_prior
    return row


# ---------------------------------------------------------------- the keystroke with structs
INPUT_FIELDS = ("lab_ptr", "lab_st", "lab_ptr_b", "lab_st_b", "st_pk", "st_lab_ptr", "st_lab",
                "pk_size", "pk_factor", "pk_unit", "pk_premium", "label_unit", "pk_prior",
                "pk_flags", "v_st", "v_pk", "v_lb", "st_last", "sticker_ids", "package_ids",
                "fallback")
"""Fields of :class:`KeystrokeInputs`: :func:`keystroke`'s arguments of the same names
(``fallback``: the view's own no-match candidates, its listed packages' first stickers)."""
SCRATCH_FIELDS = ("pre_w", "seen", "slot", "pk_seen", "pk_cnt", "stamp", "c_st", "c_bs",
                  "c_kind", "c_lab", "c_pre", "c_protect", "keep", "q", "o_st", "o_pk",
                  "query0", "query", "kw_w", "prior_w", "hist_w", "pk_mark", "pk_part",
                  "o_score", "row_stickers", "row_packages", "row_scores", "cap", "explore")
"""Fields of :class:`KeystrokeScratch`: :func:`keystroke`'s arguments of the same names,
plus ``query0`` (the user tower of the zero embedding), ``query`` (a personal one) and
``explore`` (the row's exploration slots)."""


def _boxed(proxy: Any, ty: Any) -> Any:
    # numba's dispatch types an argument it has no fast path for by reading its
    # ``_numba_type_`` twice; StructRefProxy's is a Python property, a slot is read in C
    # (a few µs less per call on a server's cold caches)
    proxy._numba_type_ = ty
    return proxy


@structref.register
class KeystrokeInputsType(types.StructRef):
    """numba type of :class:`KeystrokeInputs` (its fields' types follow the arrays')."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class KeystrokeInputs(structref.StructRefProxy):
    """One device's catalogue (view) as a keystroke reads it, in one compiled struct.

    Fields :data:`INPUT_FIELDS` (arrays as in :func:`assemble`, plus ``sticker_ids``,
    ``package_ids``: catalogue position → id). It holds references, not copies: the
    arrays' contents may change in place (a gathered history view) and the struct sees
    it. Build it with :func:`new_keystroke_inputs` (compiled and cached; calling the class
    compiles its constructor anew in each process). Its fields are read by compiled code
    only.
    """

    __slots__ = ("_numba_type_",)

    @classmethod
    def _numba_box_(cls, ty, mi):
        return _boxed(super()._numba_box_(ty, mi), ty)


structref.define_proxy(KeystrokeInputs, KeystrokeInputsType, list(INPUT_FIELDS))


@structref.register
class KeystrokeScratchType(types.StructRef):
    """numba type of :class:`KeystrokeScratch`."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class KeystrokeScratch(structref.StructRefProxy):
    """One thread's keystroke buffers and one model's linear form, in one compiled struct.

    Fields :data:`SCRATCH_FIELDS`: the scratch and outputs of :func:`keystroke` (one
    thread's: never shared between threads), the form's weights ``kw_w``, ``prior_w``,
    ``hist_w``, the user towers ``query0`` (zero embedding) and ``query`` (the personal
    one, written in place), ``cap`` and ``explore`` (:class:`reranker.RowConfig`'s
    ``cap``, ``explore_slots``). Build it with :func:`new_keystroke_scratch`.
    """

    __slots__ = ("_numba_type_",)

    @classmethod
    def _numba_box_(cls, ty, mi):
        return _boxed(super()._numba_box_(ty, mi), ty)


structref.define_proxy(KeystrokeScratch, KeystrokeScratchType, list(SCRATCH_FIELDS))


@structref.register
class KeystrokeJobType(types.StructRef):
    """numba type of :class:`KeystrokeJob`."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class KeystrokeJob(structref.StructRefProxy):
    """A server thread's keystroke in one cluster: its :class:`KeystrokeInputs` (the
    empty device's view of the cluster) and the thread's :class:`KeystrokeScratch`, so
    :func:`keystroke_server` takes one struct. Build it with :func:`new_keystroke_job`.
    """

    __slots__ = ("_numba_type_",)

    @classmethod
    def _numba_box_(cls, ty, mi):
        return _boxed(super()._numba_box_(ty, mi), ty)


structref.define_proxy(KeystrokeJob, KeystrokeJobType, ["inputs", "scratch"])


@njit(cache=True)
def new_keystroke_inputs(lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk, st_lab_ptr, st_lab,
                         pk_size, pk_factor, pk_unit, pk_premium, label_unit, pk_prior,
                         pk_flags, v_st, v_pk, v_lb, st_last, sticker_ids, package_ids,
                         fallback):  # pragma: no cover
    """A :class:`KeystrokeInputs` of these arrays (compiled once, then cached on disk)."""
    return KeystrokeInputs(lab_ptr, lab_st, lab_ptr_b, lab_st_b, st_pk, st_lab_ptr, st_lab,
                           pk_size, pk_factor, pk_unit, pk_premium, label_unit, pk_prior,
                           pk_flags, v_st, v_pk, v_lb, st_last, sticker_ids, package_ids,
                           fallback)


@njit(cache=True)
def new_keystroke_job(inputs, scratch):  # pragma: no cover
    """A :class:`KeystrokeJob` of these structs (compiled once, then cached on disk)."""
    return KeystrokeJob(inputs, scratch)


@njit(cache=True)
def new_keystroke_scratch(pre_w, seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind, c_lab,
                          c_pre, c_protect, keep, q, o_st, o_pk, query0, query, kw_w, prior_w,
                          hist_w, pk_mark, pk_part, o_score, row_stickers, row_packages,
                          row_scores, cap, explore):  # pragma: no cover
    """A :class:`KeystrokeScratch` of these arrays and numbers (compiled once, cached)."""
    return KeystrokeScratch(pre_w, seen, slot, pk_seen, pk_cnt, stamp, c_st, c_bs, c_kind,
                            c_lab, c_pre, c_protect, keep, q, o_st, o_pk, query0, query, kw_w,
                            prior_w, hist_w, pk_mark, pk_part, o_score, row_stickers,
                            row_packages, row_scores, cap, explore)


@njit(cache=True, nogil=True)
def keystroke_rows(m_label, m_strength, m_kind, fallback, inputs, scratch, subscriber: bool,
                   protect_after: float, personal: bool,
                   limit: int) -> tuple[int, int, bool]:  # pragma: no cover
    """:func:`keystroke` with its arrays read from two structs (the same computation).

    Parameters
    ----------
    m_label, m_strength, m_kind, fallback, subscriber, protect_after, limit
        As in :func:`keystroke`.
    inputs : KeystrokeInputs
    scratch : KeystrokeScratch
        The row is written into its ``row_*`` buffers (``[:m]``), the scores into
        ``o_score`` (``[:n]``, candidates in the order of ``o_st``, ``o_pk``).
    personal : bool
        Score with ``scratch.query`` (else ``scratch.query0``, no personal term).

    Returns
    -------
    n, m : int
        As :func:`keystroke`.
    explore : bool
        ``scratch.explore > 0``, the row is not empty, none of its stickers is of a
        package new to the device (``v_pk[:, 3] > 0``) and some candidate's is: the
        caller gives the exploration slot(s) to the best new ones.
    """
    x = inputs
    w = scratch
    query = w.query if personal else w.query0
    n, m = keystroke(m_label, m_strength, m_kind, x.lab_ptr, x.lab_st, x.lab_ptr_b,
                     x.lab_st_b, x.st_pk, x.st_lab_ptr, x.st_lab, x.pk_size, x.pk_factor,
                     x.pk_unit, x.pk_premium, x.label_unit, x.pk_prior, x.pk_flags, x.v_st,
                     x.v_pk, x.v_lb, x.st_last, subscriber, protect_after, fallback, w.cap,
                     w.pre_w, w.seen, w.slot, w.pk_seen, w.pk_cnt, w.stamp, w.c_st, w.c_bs,
                     w.c_kind, w.c_lab, w.c_pre, w.c_protect, w.keep, w.q, w.o_st, w.o_pk,
                     query, w.kw_w, w.prior_w, w.hist_w, w.pk_mark, w.pk_part, w.o_score,
                     x.sticker_ids, x.package_ids, limit, w.row_stickers, w.row_packages,
                     w.row_scores)
    explore = False
    if w.explore > 0 and m > 0:
        v_pk = x.v_pk
        o_pk = w.o_pk
        row_new = False
        for j in range(m):  # keystroke leaves the row's candidate indices in keep[:m]
            if v_pk[o_pk[w.keep[j]], 3] > 0:
                row_new = True
                break
        if not row_new:
            for i in range(n):
                if v_pk[o_pk[i], 3] > 0:
                    explore = True
                    break
    return n, m, explore


def server_entry(job: Any) -> Callable[..., tuple[int, int, bool]]:
    """:func:`keystroke_server` compiled for ``job``'s type, to be called without numba's
    per-call dispatch.

    A dispatcher call resolves the numba type of every argument first; for a struct that
    is Python code, and on a busy server's cold caches it costs more than the ranking of
    an empty row. The entry point returned here is the same compiled function (loaded from
    the on-disk cache, or compiled, once) called directly: it unboxes its arguments as
    that signature says and checks only that each is an array of the right item size.
    So its callers pass what the signature names: ``m_label``, ``m_strength``, ``m_kind``
    as a :class:`keyword_index.Match` holds them (read-only, C-contiguous int32, float32,
    int8; the Match guarantees it), ``job``, then a float, a bool and an int.
    """
    def readonly(dtype: Any) -> np.ndarray:
        a = np.zeros(0, dtype)
        a.flags.writeable = False
        return a

    sample = (readonly(np.int32), readonly(np.float32), readonly(np.int8), job, 0.0, False, 1)
    dispatcher: Any = keystroke_server
    entry: Callable[..., tuple[int, int, bool]] = dispatcher.compile(
        tuple(dispatcher.typeof_pyval(value) for value in sample))
    return entry


@njit(cache=True, nogil=True)
def keystroke_server(m_label, m_strength, m_kind, job, protect_after: float, personal: bool,
                     limit: int) -> tuple[int, int, bool]:  # pragma: no cover
    """:func:`keystroke_rows` of a device with no history (what a server answers) with one
    struct argument: ``job`` (:class:`KeystrokeJob`) holds the inputs and the scratch; the
    device is not a subscriber and its no-match candidates are ``job.inputs.fallback``."""
    return keystroke_rows(m_label, m_strength, m_kind, job.inputs.fallback, job.inputs,
                          job.scratch, False, protect_after, personal, limit)
