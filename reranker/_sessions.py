"""Device logs turned into impressions the reranker learns from and is evaluated on.

A session (one sticker sent) becomes one impression: the candidates of the user's
cluster as shown for the text typed when the sticker was sent, with their keyword
features, and the position of the sent package among them (``-1`` when stage 1 did
not shortlist it: no reranker can recover that). Keyword features are sparse (most
candidates match nothing), so they are stored per distinct ``(cluster, language, text)``
as the rows of matching candidates only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from data import progress
from keyword_index import Match
from reranker._context import RankingContext

__all__ = ["SessionTable", "build_sessions", "split_time"]


@dataclass
class SessionTable:
    """Impressions of many devices, sorted by device then time.

    Attributes
    ----------
    device : ndarray of int64, shape (S,)
        Device index (row of ``user_ids``) of each session.
    user_ids : ndarray of int32, shape (N,)
        The user behind each device index (simulation bookkeeping; never uploaded).
    cluster : ndarray of int32, shape (S,)
    pos : ndarray of int32, shape (S,)
        Position of the sent package in its cluster's candidates, ``-1`` if absent.
    sticker_ok : ndarray of bool, shape (S,)
        The sticker shown for the sent package is the sticker that was sent.
    sent_row : ndarray of int64, shape (S,)
        Stage-1 factor row of the sent package (``-1`` if stage 1 never saw it).
    ts : ndarray of float64, shape (S,)
        Send time in seconds since the Unix epoch.
    key : ndarray of int64, shape (S,)
        Index of the session's distinct ``(cluster, language, text)``.
    key_ptr : ndarray of int64, shape (n_keys + 1,)
        CSR pointers into ``key_pos`` / ``key_feat``.
    key_pos : ndarray of int16, shape (M,)
        Candidate positions with a non-zero keyword feature row.
    key_feat : ndarray of float32, shape (M, k)
        Those rows.
    """

    device: np.ndarray
    user_ids: np.ndarray
    cluster: np.ndarray
    pos: np.ndarray
    sticker_ok: np.ndarray
    sent_row: np.ndarray
    ts: np.ndarray
    key: np.ndarray
    key_ptr: np.ndarray
    key_pos: np.ndarray
    key_feat: np.ndarray

    @property
    def n_sessions(self) -> int:
        """S."""
        return int(self.device.shape[0])

    @property
    def n_devices(self) -> int:
        """N."""
        return int(self.user_ids.shape[0])

    def device_starts(self) -> np.ndarray:
        """(N + 1,) offsets: sessions of device ``i`` are ``starts[i]:starts[i+1]``."""
        return np.searchsorted(self.device, np.arange(self.n_devices + 1))

    def keyword_tensor(self, sessions: np.ndarray, n_cand: int, k: int) -> np.ndarray:
        """Dense keyword features (len(sessions), n_cand, k) float32 of some sessions."""
        out = np.zeros((sessions.size, n_cand, k), np.float32)
        keys = self.key[sessions]
        lo, hi = self.key_ptr[keys], self.key_ptr[keys + 1]
        counts = hi - lo
        if counts.sum() == 0:
            return out
        rows = np.repeat(np.arange(sessions.size), counts)
        # CSR rows [lo, hi) of every session, concatenated without a Python loop
        src = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts - lo, counts)
        out[rows, self.key_pos[src]] = self.key_feat[src]
        return out


def build_sessions(context: RankingContext, device_logs: pl.DataFrame, *,
                   user_ids: np.ndarray | None = None,
                   show_progress: bool = True) -> SessionTable:
    """Impressions of ``device_logs`` under ``context``'s stage-1 version.

    Parameters
    ----------
    context : RankingContext
    device_logs : polars.DataFrame
        Schema ``device_logs``; users without a cluster are skipped.
    user_ids : ndarray of int32, optional
        Device order (default: users of the logs, sorted).
    show_progress : bool
        Progress bar over distinct texts.
    """
    stage1 = context.stage1
    logs = device_logs.select("user_id", "ts", "language", "text", "sticker_id", "package_id")
    logs = logs.filter(pl.col("language").is_in(context.languages))
    users = np.unique(logs["user_id"].to_numpy()) if user_ids is None else np.asarray(user_ids)
    cluster_of = np.asarray(stage1.cluster_of(users), dtype=np.int64)
    known = cluster_of >= 0
    users, cluster_of = users[known].astype(np.int32), cluster_of[known]
    dev = pl.DataFrame({"user_id": users, "device": np.arange(users.size, dtype=np.int64),
                        "cluster": cluster_of.astype(np.int32)})
    logs = logs.join(dev, on="user_id", how="inner").sort("device", "ts")
    # Distinct texts are matched once; texts with the same match (label, strength,
    # kind) share their features, so features are computed per (cluster, match).
    texts = logs.select("language", "text").unique(maintain_order=True)
    signature_of: dict[bytes, int] = {}
    matches: list[Match] = []
    text_sig = np.empty(texts.height, np.int64)
    for i, (language, text) in enumerate(texts.iter_rows()):
        m = context.indexes[language].match(text)
        sig = m.label_ids.tobytes() + m.strengths.tobytes() + m.kinds.tobytes()
        if sig not in signature_of:
            signature_of[sig] = len(matches)
            matches.append(m)
        text_sig[i] = signature_of[sig]
    texts = texts.with_columns(pl.Series("sig", text_sig))
    logs = logs.join(texts, on=["language", "text"], how="left")
    keys = logs.select("cluster", "sig").unique(maintain_order=True).with_row_index("key")
    logs = logs.join(keys, on=["cluster", "sig"], how="left").sort("device", "ts")

    # position of each session's package in its cluster's candidate list (-1: absent)
    cand = context.candidate_ids.astype(np.int64)
    c_idx, p_idx = np.nonzero(cand >= 0)
    cp_key = c_idx * (1 << 32) + cand[c_idx, p_idx]
    order = np.argsort(cp_key)
    cp_sorted, cp_pos = cp_key[order], p_idx[order]
    sess_cp = (logs["cluster"].to_numpy().astype(np.int64) * (1 << 32)
               + logs["package_id"].to_numpy())
    j = np.minimum(np.searchsorted(cp_sorted, sess_cp), max(cp_sorted.size - 1, 0))
    pos = np.where(cp_sorted[j] == sess_cp, cp_pos[j], -1).astype(np.int32)

    sticker = logs["sticker_id"].to_numpy()
    key_col = logs["key"].to_numpy().astype(np.int64)
    sticker_ok = np.zeros(logs.height, dtype=bool)
    sess_order = np.argsort(key_col, kind="stable")
    key_bounds = np.searchsorted(key_col[sess_order], np.arange(keys.height + 1))
    k = context.layout.n_keyword_features
    key_pos: list[np.ndarray] = [np.zeros(0, np.int16)] * keys.height
    key_feat: list[np.ndarray] = [np.zeros((0, k), np.float32)] * keys.height
    # keys sorted by cluster, so the featurizer's per-cluster table stays cached
    key_rows = keys.sort("cluster", "sig").select("key", "cluster", "sig")
    with progress("featurising impressions", total=key_rows.height, show=show_progress) as bar:
        for key, cluster, sig in key_rows.iter_rows():
            feats, shown = context.match_features(int(cluster), matches[sig])
            nz = np.flatnonzero(np.any(feats != 0, axis=1))
            key_pos[key], key_feat[key] = nz.astype(np.int16), feats[nz]
            members = sess_order[key_bounds[key]: key_bounds[key + 1]]
            p = pos[members]
            ok = p >= 0
            sticker_ok[members[ok]] = shown[p[ok]] == sticker[members[ok]]
            bar.advance()
    ptr = np.zeros(keys.height + 1, np.int64)
    ptr[1:] = np.cumsum([x.size for x in key_pos])
    row_of = np.full(max(context.package_row, default=0) + 1, -1, np.int64)
    row_of[list(context.package_row)] = list(context.package_row.values())
    sent = logs["package_id"].to_numpy().astype(np.int64)
    sent_row = np.where(sent < row_of.size, row_of[np.minimum(sent, row_of.size - 1)], -1)
    ts = logs["ts"].cast(pl.Int64).to_numpy() / 1000.0
    return SessionTable(
        device=logs["device"].to_numpy(), user_ids=users, cluster=logs["cluster"].to_numpy(),
        pos=pos, sticker_ok=sticker_ok, sent_row=sent_row, ts=ts, key=key_col, key_ptr=ptr,
        key_pos=np.concatenate(key_pos) if key_pos else np.zeros(0, np.int16),
        key_feat=np.concatenate(key_feat) if key_feat else np.zeros((0, k), np.float32),
    )


def split_time(table: SessionTable, quantile: float = 0.8) -> float:
    """The send time below which ``quantile`` of sessions fall (seconds)."""
    return float(np.quantile(table.ts, quantile)) if table.n_sessions else 0.0
