"""Baselines that train nothing: what a keyboard or a server can do with what it knows.

Each is computed only from information its owner really has at the moment of the
keystroke:

- ``recents`` (the keyboard's own row): the person's previously sent stickers whose
  labels match the typed text, by recency-weighted frequency
  ``Σ_sends 0.5 ** (age / half_life)``; not limited to stage-1 candidates. A phone knows
  all of its own earlier sends, so held-out sessions before the replayed one count.
- ``device_counts``: the cluster's stage-1 candidates, keyword-matched first, then by
  the device's decayed send count of each package, then stage-1 order; each package
  shows the device's most-sent sticker of it that matches the text (else the default).
  With no history it is exactly stage-1 order.
- ``owned``: the keyboard's plain row over everything the phone holds: every sticker
  of a package it holds at that moment (bought, downloaded, subscription, gift — or
  has sent from) whose labels match the text; stickers it has sent first, by
  recency-weighted send count, then the others by how recently their package arrived
  (newest first). No model, no stage 1.
- ``segment_popularity``: the stage-1 candidates, keyword-matched first, then by the
  package's weight in the server log before the split among users of the person's
  segment (language × region × age), then of their language, then stage-1 order.

:class:`DeviceHistory` holds, per replayed session, the device's earlier sends
aggregated per sticker (CSR, best first) and per cluster candidate; both baselines and
the new-vs-repeat split of the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evaluation._errors import EvaluationError
from reranker import RankingContext, SegmentPopularity

__all__ = ["DAY_S", "KEY_WEIGHT", "MATCHED_WEIGHT", "DeviceHistory", "Holdings",
           "segment_popularity_scores", "sticker_label_table"]

DAY_S = 86_400.0
"""Seconds in a day."""

MATCHED_WEIGHT = 1e12
"""Lexicographic keys fold into one float64 score: keyword match × this, then the arm's
own key (< 1e12), then stage-1 order (the prior lies in [0, 1])."""
KEY_WEIGHT = 1e6
"""Scale of an arm's own key (resolution ~1e-6 of it stays above the stage-1 prior)."""


@dataclass
class DeviceHistory:
    """Every replayed session's view of its device's earlier sends.

    Attributes
    ----------
    ptr : ndarray of int64, shape (S + 1,)
        Session ``s``'s stickers are entries ``ptr[s]:ptr[s+1]``, best first.
    sticker, package : ndarray of int32, shape (E,)
        Each entry's sticker and its package.
    score : ndarray of float64, shape (E,)
        Recency-weighted send count of the sticker at the session's send time.
    cand_pos : ndarray of int16, shape (E,)
        Position of the entry's package among the session's cluster candidates (-1: none).
    package_score : ndarray of float64, shape (S, n_cand)
        Recency-weighted send count of each cluster candidate package.
    seen_sticker, seen_package : ndarray of bool, shape (S,)
        The device had sent the session's sticker / a sticker of its package before.
    half_life_s : float
    """

    ptr: np.ndarray
    sticker: np.ndarray
    package: np.ndarray
    score: np.ndarray
    cand_pos: np.ndarray
    package_score: np.ndarray
    seen_sticker: np.ndarray
    seen_package: np.ndarray
    half_life_s: float
    _last_match: tuple[Any, tuple[np.ndarray, ...]] | None = field(
        default=None, repr=False, compare=False)

    @classmethod
    def build(cls, context: RankingContext, device: np.ndarray, ts: np.ndarray,
              cluster: np.ndarray, sent_sticker: np.ndarray, sent_package: np.ndarray,
              history_device: np.ndarray, history_ts: np.ndarray,
              history_sticker: np.ndarray, history_package: np.ndarray,
              half_life_days: float, holdings: Holdings | None = None) -> DeviceHistory:
        """Aggregate each session's earlier sends (pre-split and earlier held-out ones).

        With ``holdings``, entries also hold every sticker of each package the device
        holds at the session's time, and are ordered sent-first: a sent sticker scores
        ``2 + its weighted count``, an unsent one ``0.5 ** (age of its package's
        arrival / half-life)`` (in ``(0, 1]``).

        Parameters
        ----------
        context : RankingContext
        device, ts, cluster, sent_sticker, sent_package : ndarray, shape (S,)
            The replayed sessions, sorted by device then time (``ts`` in seconds).
        history_device, history_ts, history_sticker, history_package : ndarray, shape (H,)
            The same devices' sends before the split.
        half_life_days : float
            Half-life of a send's weight.
        holdings : Holdings, optional
            What each device holds and since when (the ``owned`` baseline).
        """
        if half_life_days <= 0:
            raise EvaluationError(f"half_life_days={half_life_days} should be > 0")
        hl = float(half_life_days) * DAY_S
        n_sess = device.size
        # every send of the sampled devices, in (device, time) order
        all_dev = np.concatenate([history_device, device]).astype(np.int64)
        all_ts = np.concatenate([history_ts, ts]).astype(np.float64)
        all_st = np.concatenate([history_sticker, sent_sticker]).astype(np.int32)
        all_pk = np.concatenate([history_package, sent_package]).astype(np.int32)
        order = np.lexsort((all_ts, all_dev))
        all_dev, all_ts, all_st, all_pk = (all_dev[order], all_ts[order], all_st[order],
                                           all_pk[order])
        n_dev = int(max(all_dev.max(initial=-1), device.max(initial=-1))) + 1
        dev_start = np.searchsorted(all_dev, np.arange(n_dev + 1))
        cand = context.candidate_ids
        n_cand = cand.shape[1]
        pos_of = [{int(p): i for i, p in enumerate(row.tolist()) if p >= 0} for row in cand]

        ptr = np.zeros(n_sess + 1, np.int64)
        stickers: list[np.ndarray] = []
        packages: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        package_score = np.zeros((n_sess, n_cand), np.float64)
        seen_sticker = np.zeros(n_sess, bool)
        seen_package = np.zeros(n_sess, bool)
        for s in range(n_sess):
            lo, hi = dev_start[device[s]], dev_start[device[s] + 1]
            # strictly earlier sends only: the session being replayed is not yet sent
            end = lo + int(np.searchsorted(all_ts[lo:hi], ts[s], side="left"))
            st, pk = all_st[lo:end], all_pk[lo:end]
            w = np.power(0.5, (ts[s] - all_ts[lo:end]) / hl)
            uniq, inv = np.unique(st, return_inverse=True)
            sc = np.bincount(inv, weights=w, minlength=uniq.size)
            pk_of = np.zeros(uniq.size, np.int32)
            pk_of[inv] = pk
            if holdings is not None:
                h_st, h_pk, h_sc = holdings.unsent(int(device[s]), float(ts[s]), uniq, hl)
                uniq = np.concatenate([uniq, h_st])
                sc = np.concatenate([2.0 + sc, h_sc])
                pk_of = np.concatenate([pk_of, h_pk])
            best = np.lexsort((uniq, -sc))  # best first; ties by sticker id
            uniq, sc, pk_of = uniq[best], sc[best], pk_of[best]
            lookup = pos_of[int(cluster[s])]
            pos = np.array([lookup.get(int(p), -1) for p in pk_of.tolist()], np.int16)
            ok = pos >= 0
            if holdings is None:  # (with holdings the per-package counts are not used)
                np.add.at(package_score[s], pos[ok].astype(np.int64), sc[ok])
            seen_sticker[s] = bool(np.any(st == sent_sticker[s]))
            seen_package[s] = bool(np.any(pk == sent_package[s]))
            stickers.append(uniq.astype(np.int32))
            packages.append(pk_of)
            scores.append(sc)
            positions.append(pos)
            ptr[s + 1] = ptr[s] + uniq.size

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return cls(ptr=ptr, sticker=cat(stickers, np.int32), package=cat(packages, np.int32),
                   score=cat(scores, np.float64), cand_pos=cat(positions, np.int16),
                   package_score=package_score, seen_sticker=seen_sticker,
                   seen_package=seen_package, half_life_s=hl)

    @property
    def n_sessions(self) -> int:
        """S."""
        return int(self.ptr.shape[0] - 1)

    def matching_entries(self, session: np.ndarray, signature: np.ndarray,
                         label_keys: np.ndarray, sticker_labels: np.ndarray,
                         n_label_slots: int, label_strengths: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """History entries of each keystroke whose sticker matches the keystroke's text.

        Parameters
        ----------
        session, signature : ndarray of int64, shape (B,)
            Each keystroke's session and match signature.
        label_keys : ndarray of int64, shape (M,)
            Sorted ``signature * n_label_slots + label`` of every matched label.
        sticker_labels : ndarray of int32, shape (n_stickers, 3)
            Labels of each sticker (``-1`` padding).
        n_label_slots : int
            More than the largest label id.
        label_strengths : ndarray of float32, shape (M,), optional
            Match strength of each of ``label_keys`` (default: 1 for every one).

        Returns
        -------
        row, col, entry : ndarray of int64, shape (m,)
            Keystroke, position in the session's entry list (best first) and entry index
            of every matching entry, in keystroke then entry order.
        strength : ndarray of float64, shape (m,)
            Strongest match among each entry's sticker's labels.
        """
        # the arms reading one history (recents and device counts; owned and owned by
        # match) ask for the same keystroke batch in turn: answer the last one again
        memo = (session.tobytes(), signature.tobytes(), id(label_keys), id(sticker_labels),
                n_label_slots, id(label_strengths))
        if self._last_match is not None and self._last_match[0] == memo:
            row_, col_, entry_, strength_ = self._last_match[1]
            return row_, col_, entry_, strength_
        out = self._matching_entries(session, signature, label_keys, sticker_labels,
                                     n_label_slots, label_strengths)
        for a in out:
            a.flags.writeable = False
        self._last_match = (memo, out)
        return out

    def _matching_entries(self, session: np.ndarray, signature: np.ndarray,
                          label_keys: np.ndarray, sticker_labels: np.ndarray,
                          n_label_slots: int, label_strengths: np.ndarray | None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        start, stop = self.ptr[session], self.ptr[session + 1]
        counts = stop - start
        total = int(counts.sum())
        if total == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, np.zeros(0)
        row = np.repeat(np.arange(session.size, dtype=np.int64), counts)
        offsets = np.cumsum(counts) - counts
        col = np.arange(total, dtype=np.int64) - np.repeat(offsets, counts)
        entry = np.repeat(start, counts) + col
        labels = sticker_labels[self.sticker[entry]].astype(np.int64)  # (total, 3)
        keys = signature[row][:, None] * n_label_slots + labels
        hit = np.zeros(keys.shape, bool)
        strength = np.zeros(keys.shape)
        if label_keys.size:
            at = np.minimum(np.searchsorted(label_keys, keys), label_keys.size - 1)
            hit = (label_keys[at] == keys) & (labels >= 0)
            known = (label_strengths[at] if label_strengths is not None
                     and label_strengths.size == label_keys.size else 1.0)
            strength = np.where(hit, known, 0.0)
        keep = hit.any(axis=1)
        return row[keep], col[keep], entry[keep], strength[keep].max(axis=1, initial=0.0)


@dataclass
class Holdings:
    """What each sampled device holds, since when, and the stickers of every package.

    Attributes
    ----------
    ptr : ndarray of int64, shape (N + 1,)
        Device ``i``'s holdings are ``ptr[i]:ptr[i+1]``.
    package : ndarray of int32, shape (M,)
    since : ndarray of float64, shape (M,)
        When the device came to hold the package (seconds since the epoch).
    stickers_of : dict of int to ndarray of int32
        Each package's stickers.
    """

    ptr: np.ndarray
    package: np.ndarray
    since: np.ndarray
    stickers_of: dict[int, np.ndarray]

    @classmethod
    def build(cls, n_devices: int, device: np.ndarray, package: np.ndarray, since: np.ndarray,
              stickers: pl.DataFrame) -> Holdings:
        """From acquisition rows ``(device, package, since)``, each shape (M,)."""
        order = np.lexsort((since, device))
        device, package, since = device[order], package[order], since[order]
        grouped = stickers.group_by("package_id").agg(pl.col("sticker_id").sort())
        stickers_of = {int(p): np.asarray(s, np.int32) for p, s in grouped.iter_rows()}
        return cls(ptr=np.searchsorted(device, np.arange(n_devices + 1)),
                   package=package.astype(np.int32), since=since.astype(np.float64),
                   stickers_of=stickers_of)

    def unsent(self, device: int, t: float, sent: np.ndarray, half_life_s: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stickers of packages held at ``t`` that are not in ``sent``: ids, packages, scores.

        Score ``0.5 ** ((t - arrival) / half_life)`` of the package's first arrival.
        """
        lo, hi = self.ptr[device], self.ptr[device + 1]
        held = self.since[lo:hi] <= t
        first: dict[int, float] = {}
        for p, when in zip(self.package[lo:hi][held].tolist(), self.since[lo:hi][held].tolist(),
                           strict=True):
            first.setdefault(p, when)  # rows are in time order: the first is the arrival
        ids, pks, scores = [], [], []
        for p, when in first.items():
            st = self.stickers_of.get(p)
            if st is None:
                continue
            st = st[~np.isin(st, sent)]
            ids.append(st)
            pks.append(np.full(st.size, p, np.int32))
            scores.append(np.full(st.size, 0.5 ** ((t - when) / half_life_s)))
        if not ids:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0)
        return np.concatenate(ids), np.concatenate(pks), np.concatenate(scores)


def segment_popularity_scores(context: RankingContext, user_ids: np.ndarray,
                              split_ts: float) -> np.ndarray:
    """Order keys (N, n_cand) of each device's cluster candidates by segment popularity.

    Key: ``log1p`` of the package's server-log weight before ``split_ts`` among users of
    the device's segment (language × region × age bucket; missing values form their own
    segment) times ``1e6``, plus ``10 × log1p`` of its weight among users of the
    device's language (breaks the segment's ties); the arm adds stage-1 order last
    (:class:`reranker._segment.SegmentPopularity`, which the per-round metric shares).

    Parameters
    ----------
    context : RankingContext
    user_ids : ndarray of int32, shape (N,)
        The device's users (their demographics are the server's own user features).
    split_ts : float
        Only server interactions before it count (seconds since the epoch).

    Returns
    -------
    ndarray of float64, shape (N, n_cand)
    """
    cluster = np.asarray(context.stage1.cluster_of(np.asarray(user_ids)), np.int64)
    cand = np.asarray(context.candidate_ids[np.maximum(cluster, 0)], np.int64)  # (N, n_cand)
    n, n_cand = cand.shape
    keys = SegmentPopularity(context.dataset, split_ts).keys(
        np.asarray(user_ids), np.arange(n + 1, dtype=np.int64) * n_cand, cand.ravel())
    return keys.reshape(n, n_cand)


def sticker_label_table(stickers: pl.DataFrame) -> np.ndarray:
    """Labels of each sticker, (n_stickers, max labels) int32, ``-1`` padded.

    Row ``i`` is sticker id ``i`` (ids are dense in generated and loaded catalogues;
    rows of absent ids stay ``-1``).
    """
    ids = stickers["sticker_id"].to_numpy()
    lists = stickers["label_ids"].to_list()
    width = max((len(x) for x in lists), default=1) or 1
    out = np.full((int(ids.max(initial=-1)) + 1, width), -1, np.int32)
    for i, labels in zip(ids.tolist(), lists, strict=True):
        out[i, : len(labels)] = labels
    return out
