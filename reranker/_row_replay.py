"""Keystroke replay of held-out sessions under a sticker-row model (for the A/B report).

The report replays each held-out session keystroke by keystroke. On each keystroke a
phone running the row assembles its candidates from its history *as of that send*
(every earlier send: pre-split ones and earlier held-out ones) and its holdings, then
scores them. :class:`RowReplay` does exactly that for a batch of keystrokes with the
same compiled walk as training (:func:`reranker._sessions.walk_impressions`): per
device, the earlier sends join the history, each keystroke of a replayed session
becomes an impression, then the session's own send joins the history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from keyword_index import Match
from reranker._context import RankingContext
from reranker._model import ParameterLayout
from reranker._row import HISTORY_FEATURE_NAMES, RowConfig, StickerCatalog
from reranker._row_task import PipelineSplit, RowTask, RowTaskConfig, row_scores
from reranker._sessions import (
    RowImpressions,
    RowSessions,
    _concat,
    build_row_sessions,
    walk_impressions,
)

__all__ = ["RowReplay", "with_exploration"]


class RowReplay:
    """The sticker row on held-out keystrokes of a device sample.

    Parameters
    ----------
    context : RankingContext
    user_ids : ndarray of int32, shape (N,)
        The sampled devices.
    history_logs : polars.DataFrame
        Their pre-split device logs (schema ``device_logs``).
    split_ts : float
        Start of the held-out period (seconds).
    device, ts, sent_sticker : ndarray, shape (S,)
        The held-out sessions (device index, send time, sent sticker id), sorted by
        device then time.
    config : RowConfig, optional
        The row's settings (those the model was trained with).
    """

    def __init__(self, context: RankingContext, user_ids: np.ndarray, history_logs: pl.DataFrame,
                 split_ts: float, device: np.ndarray, ts: np.ndarray, sent_sticker: np.ndarray,
                 config: RowConfig | None = None, catalog: StickerCatalog | None = None) -> None:
        self.context = context
        self.config = config or RowConfig()
        self.catalog = catalog or StickerCatalog.build(context)
        self.split_ts = float(split_ts)
        self.history = build_row_sessions(context, self.catalog, history_logs,
                                          user_ids=np.asarray(user_ids), show_progress=False)
        if self.history.n_devices != np.asarray(user_ids).size:
            raise ValueError("every sampled device needs a stage-1 cluster")
        self.held_device = np.asarray(device, np.int64)
        self.held_ts = np.asarray(ts, np.float64)
        self.held_sticker = self.catalog.stickers_of(np.asarray(sent_sticker)).astype(np.int32)
        self.held_ptr = np.searchsorted(self.held_device, np.arange(self.history.n_devices + 1))
        self._last: tuple[Any, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._walked: tuple[Any, _Walked] | None = None

    def personalize(self, theta: np.ndarray) -> np.ndarray:
        """Embeddings (N, d) the phones derive for ``theta`` from their pre-split history."""
        split = PipelineSplit(self.split_ts - 1.0, self.split_ts, 0.0, "")
        task = RowTask(self.context, self.catalog, self.history, split,
                       RowTaskConfig(row=self.config))
        return task.personalize(np.asarray(theta, np.float32), np.arange(self.history.n_devices))

    def score_keystrokes(self, theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
                         session: np.ndarray, signature: np.ndarray, matches: list[Match], *,
                         explore_slots: int = 0, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Scores and stickers (B, L) of keystrokes (``-inf`` / ``-1`` pad), best-first order
        not implied.

        With ``explore_slots`` the row of ``k`` shows the exploration slot(s) as the phone
        does (:func:`reranker.row_hits`): when none of the best ``k`` candidates is from a
        package new to the device, the best new ones take the last slots. The returned
        scores then only order the candidates (``-position`` in that ordering; the rest
        keep their order below the row). The candidates of one batch are scored once for
        both settings (the last call is remembered).

        Parameters
        ----------
        theta : ndarray, shape (P,)
        layout : ParameterLayout
        users : ndarray, shape (N, d)
            Personal embeddings of the sample's devices.
        session : ndarray of int64, shape (B,)
            Held-out session of each keystroke (non-decreasing).
        signature : ndarray of int64, shape (B,)
            Index into ``matches`` of each keystroke's match.
        matches : list of Match
        """
        key = (hashlib.sha256(np.ascontiguousarray(theta, np.float32).tobytes()).hexdigest(),
               hashlib.sha256(np.ascontiguousarray(users, np.float32).tobytes()).hexdigest(),
               np.asarray(session).tobytes(), np.asarray(signature).tobytes(), id(matches))
        if self._last is None or self._last[0] != key:
            self._last = (key, *self._score(theta, layout, users, session, signature, matches))
        _, out_s, out_i, new = self._last
        if explore_slots > 0:
            return with_exploration(out_s, new, k, explore_slots), out_i
        return out_s, out_i

    def _score(self, theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
               session: np.ndarray, signature: np.ndarray, matches: list[Match]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, stickers and package-new flags (B, L) of keystrokes (see
        :meth:`score_keystrokes`).

        The walk (candidates and features of every keystroke) does not depend on the
        weights: every arm scoring the same batch (treatment, central, fold-in only)
        reuses the last batch's walk and only computes its own scores.
        """
        key = (np.asarray(session).tobytes(), np.asarray(signature).tobytes(), id(matches))
        if self._walked is None or self._walked[0] != key:
            self._walked = (key, self._walk(session, signature, matches))
        w = self._walked[1]
        scores = row_scores(np.asarray(theta, np.float32), layout, users[w.devices], w.imp,
                            self.catalog.pk_factor)
        out_s = np.full(w.shape, -np.inf)
        out_s[w.row_of, w.col] = scores
        return out_s, w.items, w.new

    def _walk(self, session: np.ndarray, signature: np.ndarray, matches: list[Match]
              ) -> _Walked:
        """The compiled walk of a batch of keystrokes (see :meth:`score_keystrokes`)."""
        h = self.history
        b_ = session.size
        devices = np.unique(self.held_device[session])
        # per device: pre-split sends, then held-out sessions up to the batch's last one;
        # each replayed session contributes one pseudo-session per keystroke (emit only)
        # followed by its own send (record only)
        ts_l: list[np.ndarray] = []
        sig_l: list[np.ndarray] = []
        st_l: list[np.ndarray] = []
        rec_l: list[np.ndarray] = []
        emit_l: list[np.ndarray] = []
        key_l: list[np.ndarray] = []
        dev_ptr = [0]
        order = np.argsort(session, kind="stable")
        sess_sorted = session[order]
        for dv in devices.tolist():
            lo, hi = h.dev_ptr[dv], h.dev_ptr[dv + 1]
            n0 = hi - lo
            count = n0
            ts_l.append(h.ts[lo:hi])
            sig_l.append(np.full(n0, -1, np.int64))
            st_l.append(h.sticker[lo:hi])
            rec_l.append(np.ones(n0, bool))
            emit_l.append(np.zeros(n0, bool))
            key_l.append(np.full(n0, -1, np.int64))
            last = int(session[self.held_device[session] == dv].max())
            for s in range(int(self.held_ptr[dv]), last + 1):
                a, b = np.searchsorted(sess_sorted, [s, s + 1])
                keys = order[a:b]
                t = self.held_ts[s]
                ts_l.append(np.full(keys.size + 1, t))
                sig_l.append(np.append(signature[keys], -1))
                st_l.append(np.full(keys.size + 1, self.held_sticker[s], np.int32))
                rec_l.append(np.append(np.zeros(keys.size, bool), True))
                emit_l.append(np.append(np.ones(keys.size, bool), False))
                key_l.append(np.append(keys, -1))
                count += keys.size + 1
            dev_ptr.append(dev_ptr[-1] + count)
        ts = np.concatenate(ts_l)
        sig = np.concatenate(sig_l)
        sig[sig < 0] = len(matches)  # an empty match for sends that only record
        sig_ptr = np.zeros(len(matches) + 2, np.int64)
        sig_ptr[1:-1] = np.cumsum([len(m) for m in matches])
        sig_ptr[-1] = sig_ptr[-2]
        rs = RowSessions(
            user_ids=h.user_ids[devices], cluster=h.cluster[devices],
            subscriber=h.subscriber[devices], dev_ptr=np.asarray(dev_ptr, np.int64), ts=ts,
            sig=sig, sticker=np.concatenate(st_l).astype(np.int32),
            package=np.zeros(ts.size, np.int32), sent_row=np.full(ts.size, -1, np.int64),
            sig_ptr=sig_ptr, sig_label=_concat([m.label_ids for m in matches], np.int32),
            sig_strength=_concat([m.strengths for m in matches], np.float32),
            sig_kind=_concat([m.kinds for m in matches], np.int8),
            acq_ptr=np.zeros(devices.size + 1, np.int64), acq_pk=h.acq_pk, acq_ts=h.acq_ts)
        a_lo, a_hi = h.acq_ptr[devices], h.acq_ptr[devices + 1]
        aidx = (np.concatenate([np.arange(x, y) for x, y in zip(a_lo, a_hi, strict=True)])
                if devices.size else np.zeros(0, np.int64))
        rs = replace(rs, acq_pk=h.acq_pk[aidx], acq_ts=h.acq_ts[aidx],
                     acq_ptr=np.concatenate([[0], np.cumsum(a_hi - a_lo)]).astype(np.int64))
        emit = np.concatenate(emit_l)
        keystroke = np.concatenate(key_l)
        imp = walk_impressions(rs, self.catalog, self.config, np.arange(devices.size), emit,
                               np.concatenate(rec_l), self.config.cap)
        sizes = imp.sizes
        width = max(int(sizes.max(initial=0)), 1)
        out_i = np.full((b_, width), -1, np.int32)
        rows = keystroke[imp.session]
        row_of = np.repeat(rows, sizes)
        col = np.arange(sizes.sum()) - np.repeat(imp.ptr[:-1], sizes)
        out_i[row_of, col] = self.catalog.sticker_ids[imp.sticker]
        new = np.zeros((b_, width), bool)
        new[row_of, col] = imp.history[:, HISTORY_FEATURE_NAMES.index("package_new")] > 0
        out_i.flags.writeable = False  # shared by every arm scoring this batch
        new.flags.writeable = False
        return _Walked(devices=devices, imp=imp, shape=(b_, width), row_of=row_of, col=col,
                       items=out_i, new=new)


@dataclass(frozen=True)
class _Walked:
    """One batch's walk: impressions and where each row lands in the (B, L) output."""

    devices: np.ndarray
    imp: RowImpressions
    shape: tuple[int, int]
    row_of: np.ndarray
    col: np.ndarray
    items: np.ndarray
    new: np.ndarray


def with_exploration(scores: np.ndarray, new: np.ndarray, k: int, slots: int) -> np.ndarray:
    """Scores (B, L) that order each keystroke's candidates as its row with exploration.

    Parameters
    ----------
    scores : ndarray of float64, shape (B, L)
        ``-inf`` marks padding.
    new : ndarray of bool, shape (B, L)
        The candidate's package is new to the device.
    k, slots : int
        Row length and exploration slots.

    Returns
    -------
    ndarray of float64, shape (B, L)
        ``-position`` in the ordering (ties in candidate order, as the row), ``-inf`` kept.
    """
    out = scores.copy()
    order = np.argsort(-scores, axis=1, kind="stable")
    for b in range(scores.shape[0]):
        o = order[b][np.isfinite(scores[b, order[b]])]
        is_new = new[b, o]
        if is_new[:k].any() or not is_new.any():
            out[b, o] = -np.arange(o.size, dtype=np.float64)
            continue
        extra = o[k:][is_new[k:]][:slots]
        kept = o[: max(k - extra.size, 0)]
        rest = np.setdiff1d(o, np.concatenate([kept, extra]), assume_unique=True)
        rest = o[np.isin(o, rest)]  # in score order
        final = np.concatenate([kept, extra, rest])
        out[b, final] = -np.arange(final.size, dtype=np.float64)
    return out
