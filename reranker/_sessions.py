"""Device logs turned into impressions the reranker learns from and is evaluated on.

The sticker row (:class:`RowSessions`, :func:`walk_impressions`): each send becomes an
impression of sticker candidates assembled as the phone would at that moment, with the
device's history features from its earlier sends only. Below, the package-level table
of the previous row (one sticker per stage-1 package), kept for its readers.

A session (one sticker sent) becomes one impression: the candidates of the user's
cluster as shown for the text typed when the sticker was sent, with their keyword
features, and the position of the sent package among them (``-1`` when stage 1 did
not shortlist it: no reranker can recover that). Keyword features are sparse (most
candidates match nothing), so they are stored per distinct ``(cluster, language, text)``
as the rows of matching candidates only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from data import progress
from keyword_index import Match
from reranker._context import RankingContext
from reranker._row import RowConfig, StickerCatalog
from reranker._segment import SegmentPopularity

__all__ = ["RowImpressions", "RowSessions", "SessionTable", "build_row_sessions",
           "build_sessions", "split_time", "walk_impressions"]


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


@dataclass
class RowSessions:
    """Every device's sends, prepared for the sticker row's impressions (see :meth:`walk`).

    Sessions are sorted by device then time. Matches are stored once per distinct match
    signature (CSR). A device's history at a send is built from its earlier sends only.

    Attributes
    ----------
    user_ids : ndarray of int32, shape (N,)
    cluster : ndarray of int32, shape (N,)
        Each device's stage-1 cluster.
    subscriber : ndarray of bool, shape (N,)
    dev_ptr : ndarray of int64, shape (N + 1,)
        Sessions of device ``i`` are ``dev_ptr[i]:dev_ptr[i+1]``.
    ts : ndarray of float64, shape (S,)
        Send time, seconds since the epoch.
    sig : ndarray of int64, shape (S,)
        Match signature of the text sent with.
    sticker : ndarray of int32, shape (S,)
        Catalogue position of the sent sticker (``-1``: unknown).
    package : ndarray of int32, shape (S,)
        Catalogue position of its package.
    sent_row : ndarray of int64, shape (S,)
        Stage-1 factor row of the sent package (``-1``: stage 1 never saw it).
    sig_ptr, sig_label, sig_strength, sig_kind : ndarrays
        CSR of the matched labels of each signature.
    acq_ptr, acq_pk, acq_ts : ndarrays
        Each device's acquisitions (catalogue package, seconds), by time.
    """

    user_ids: np.ndarray
    cluster: np.ndarray
    subscriber: np.ndarray
    dev_ptr: np.ndarray
    ts: np.ndarray
    sig: np.ndarray
    sticker: np.ndarray
    package: np.ndarray
    sent_row: np.ndarray
    sig_ptr: np.ndarray
    sig_label: np.ndarray
    sig_strength: np.ndarray
    sig_kind: np.ndarray
    acq_ptr: np.ndarray
    acq_pk: np.ndarray
    acq_ts: np.ndarray

    @property
    def n_devices(self) -> int:
        """N."""
        return int(self.user_ids.shape[0])

    @property
    def n_sessions(self) -> int:
        """S."""
        return int(self.ts.shape[0])

    @property
    def device(self) -> np.ndarray:
        """Device index (S,) of each session."""
        return np.repeat(np.arange(self.n_devices), np.diff(self.dev_ptr))


def build_row_sessions(context: RankingContext, catalog: StickerCatalog,
                       device_logs: pl.DataFrame, *, user_ids: np.ndarray | None = None,
                       interactions: pl.DataFrame | None = None,
                       show_progress: bool = True) -> RowSessions:
    """The sends of ``device_logs`` prepared for sticker-row impressions.

    Parameters
    ----------
    context : RankingContext
    catalog : StickerCatalog
    device_logs : polars.DataFrame
        Schema ``device_logs``; users without a cluster are skipped.
    user_ids : ndarray of int32, optional
        Device order (default: users of the logs, sorted).
    interactions : polars.DataFrame, optional
        The devices' own holdings (``user_id``, ``package_id``, ``ts``; a phone knows what
        it holds); default: the dataset's ``device_library`` when it has one, else its
        server log of purchases and downloads, filtered to these users.
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
    dev = pl.DataFrame({"user_id": users, "device": np.arange(users.size, dtype=np.int64)})
    logs = logs.join(dev, on="user_id", how="inner").sort("device", "ts")
    texts = logs.select("language", "text").unique(maintain_order=True)
    signature_of: dict[bytes, int] = {}
    matches: list[Match] = []
    text_sig = np.empty(texts.height, np.int64)
    with progress("matching texts", total=texts.height, show=show_progress) as bar:
        for i, (language, text) in enumerate(texts.iter_rows()):
            m = context.indexes[language].match(text)
            sig = m.label_ids.tobytes() + m.strengths.tobytes() + m.kinds.tobytes()
            if sig not in signature_of:
                signature_of[sig] = len(matches)
                matches.append(m)
            text_sig[i] = signature_of[sig]
            bar.advance()
    texts = texts.with_columns(pl.Series("sig", text_sig))
    logs = logs.join(texts, on=["language", "text"], how="left").sort("device", "ts")
    sig_ptr = np.zeros(len(matches) + 1, np.int64)
    sig_ptr[1:] = np.cumsum([len(m) for m in matches])
    device = logs["device"].to_numpy()
    dev_ptr = np.searchsorted(device, np.arange(users.size + 1))
    sticker = catalog.stickers_of(logs["sticker_id"].to_numpy()).astype(np.int32)
    package = catalog.packages_of(logs["package_id"].to_numpy()).astype(np.int32)
    row_of = np.full(max(context.package_row, default=0) + 1, -1, np.int64)
    row_of[list(context.package_row)] = list(context.package_row.values())
    sent = logs["package_id"].to_numpy().astype(np.int64)
    sent_row = np.where(sent < row_of.size, row_of[np.minimum(sent, row_of.size - 1)], -1)
    if interactions is not None:
        inter = interactions
    elif context.dataset.has("device_library"):  # what the phone holds, subscription included
        inter = context.dataset.table("device_library")
    else:
        inter = context.dataset.table("interactions")
    acq = (inter.select("user_id", "package_id", "ts").join(dev, on="user_id", how="inner")
           .sort("device", "ts"))
    acq_pk = catalog.packages_of(acq["package_id"].to_numpy())
    ok = acq_pk >= 0
    acq_dev = acq["device"].to_numpy()[ok]
    users_df = context.dataset.table("users").select("user_id", "subscriber")
    sub = dev.join(users_df, on="user_id", how="left").sort("device")["subscriber"]
    return RowSessions(
        user_ids=users, cluster=cluster_of.astype(np.int32),
        subscriber=sub.fill_null(False).to_numpy().astype(bool), dev_ptr=dev_ptr,
        ts=logs["ts"].cast(pl.Int64).to_numpy() / 1000.0, sig=logs["sig"].to_numpy(),
        sticker=sticker, package=package, sent_row=sent_row, sig_ptr=sig_ptr,
        sig_label=_concat([m.label_ids for m in matches], np.int32),
        sig_strength=_concat([m.strengths for m in matches], np.float32),
        sig_kind=_concat([m.kinds for m in matches], np.int8),
        acq_ptr=np.searchsorted(acq_dev, np.arange(users.size + 1)),
        acq_pk=acq_pk[ok].astype(np.int32),
        acq_ts=acq["ts"].cast(pl.Int64).to_numpy()[ok] / 1000.0)


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


@dataclass
class RowImpressions:
    """Sticker-row impressions of some sends (ragged: impression ``e`` has rows
    ``ptr[e]:ptr[e+1]``).

    Attributes
    ----------
    session : ndarray of int64, shape (E,)
        Session index of each impression.
    device : ndarray of int64, shape (E,)
        Position of its device in the batch walked.
    ptr : ndarray of int64, shape (E + 1,)
    sticker, package : ndarray of int32, shape (R,)
        Catalogue positions of each candidate row.
    keyword : ndarray of float32, shape (R, k)
    prior : ndarray of float32, shape (R,)
    history : ndarray of float32, shape (R, h)
    pos : ndarray of int64, shape (E,)
        Row (within the impression) of the sent sticker, ``-1``: not a candidate.
    info : ndarray of int64, shape (E, 8)
        Recents / stage-1 order / device-counts rank of the sent sticker (``-1``: not in
        that row), sent package new to the device, sent sticker sent before, stickers
        matched before the cap, ``owned`` / ``owned_by_match`` rank.
    """

    session: np.ndarray
    device: np.ndarray
    ptr: np.ndarray
    sticker: np.ndarray
    package: np.ndarray
    keyword: np.ndarray
    prior: np.ndarray
    history: np.ndarray
    pos: np.ndarray
    info: np.ndarray

    @property
    def n_impressions(self) -> int:
        """E."""
        return int(self.session.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Rows (E,) of each impression."""
        return np.diff(self.ptr)

    def context_features(self) -> np.ndarray:
        """``[K, r, H]`` (R, k + 1 + h) float32: the rows' non-factor inputs."""
        return np.concatenate([self.keyword, self.prior[:, None], self.history], axis=1)


def walk_impressions(sessions: RowSessions, catalog: StickerCatalog, config: RowConfig,
                     devices: np.ndarray, emit: np.ndarray, record: np.ndarray, cap: int,
                     segment: SegmentPopularity | None = None) -> RowImpressions:
    """Impressions of the sessions ``emit`` marks, for ``devices``, each from the device's
    earlier recorded sends (``record``) and acquisitions.

    Parameters
    ----------
    sessions : RowSessions
    catalog : StickerCatalog
    config : RowConfig
    devices : ndarray of int64, shape (B,)
        Device indices (any order; impressions come grouped in this order).
    emit, record : ndarray of bool, shape (S,)
        Sessions to turn into impressions; sends that join the history.
    cap : int
        Candidates per impression besides the protected recent stickers.
    segment : SegmentPopularity, optional
        The server's segment popularity, for the ``segment_popularity`` rank
        (``info[:, 8]``); without it that rank is stage-1 order's.
    """
    from reranker import _row_kernels as kernels

    devices = np.asarray(devices, np.int64)
    lo, hi = sessions.dev_ptr[devices], sessions.dev_ptr[devices + 1]
    idx = (np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
           if devices.size else np.zeros(0, np.int64))
    counts = hi - lo
    dev_ptr = np.zeros(devices.size + 1, np.int64)
    np.cumsum(counts, out=dev_ptr[1:])
    alo, ahi = sessions.acq_ptr[devices], sessions.acq_ptr[devices + 1]
    aidx = (np.concatenate([np.arange(a, b) for a, b in zip(alo, ahi, strict=True)])
            if devices.size else np.zeros(0, np.int64))
    acq_ptr = np.zeros(devices.size + 1, np.int64)
    np.cumsum(ahi - alo, out=acq_ptr[1:])
    clusters = sessions.cluster[devices]
    s1_lists = [catalog.cluster_pk[c] for c in clusters.tolist()]
    s1_ptr = np.zeros(devices.size + 1, np.int64)
    np.cumsum([x.size for x in s1_lists], out=s1_ptr[1:])
    s1_pk = (np.concatenate(s1_lists) if s1_lists else np.zeros(0, np.int32)).astype(np.int32)
    s1_prior = (np.concatenate([catalog.cluster_prior[c] for c in clusters.tolist()])
                if s1_lists else np.zeros(0, np.float32)).astype(np.float32)
    s1_seg = (segment.keys(sessions.user_ids[devices], s1_ptr, catalog.package_ids[s1_pk])
              if segment is not None else np.zeros(s1_pk.size))
    e_mask = emit[idx]
    n_emit = int(e_mask.sum())
    capacity = n_emit * (cap + 8) + 8192
    k, h = 7, kernels.N_HISTORY
    while True:
        out = _walk_into(kernels, sessions, catalog, config, devices, idx, dev_ptr, aidx,
                         acq_ptr, s1_ptr, s1_pk, s1_prior, s1_seg, record, e_mask, n_emit, cap,
                         capacity, k, h)
        if out is not None:
            break
        capacity *= 2
    rows, o_ptr, o_st, o_pk, o_kw, o_prior, o_hist, o_pos, o_info = out
    emitted = idx[e_mask]
    dev_of = np.repeat(np.arange(devices.size), counts)[e_mask]
    return RowImpressions(session=emitted, device=dev_of, ptr=o_ptr, sticker=o_st[:rows],
                          package=o_pk[:rows], keyword=o_kw[:rows], prior=o_prior[:rows],
                          history=o_hist[:rows], pos=o_pos, info=o_info)


def _walk_into(kernels: Any, sessions: RowSessions, catalog: StickerCatalog,
               config: RowConfig, devices: np.ndarray, idx: np.ndarray, dev_ptr: np.ndarray,
               aidx: np.ndarray, acq_ptr: np.ndarray, s1_ptr: np.ndarray, s1_pk: np.ndarray,
               s1_prior: np.ndarray, s1_seg: np.ndarray, record: np.ndarray,
               e_mask: np.ndarray, n_emit: int,
               cap: int, capacity: int, k: int, h: int) -> tuple[Any, ...] | None:
    """One run of the compiled walk into buffers of ``capacity`` rows (None: too small)."""
    o_ptr = np.zeros(n_emit + 1, np.int64)
    o_st = np.empty(capacity, np.int32)
    o_pk = np.empty(capacity, np.int32)
    o_kw = np.empty((capacity, k), np.float32)
    o_prior = np.empty(capacity, np.float32)
    o_hist = np.empty((capacity, h), np.float32)
    o_pos = np.empty(n_emit, np.int64)
    o_info = np.empty((n_emit, 9), np.int64)
    rows = kernels.walk(
        dev_ptr, sessions.sig[idx], sessions.ts[idx], sessions.sticker[idx],
        record[idx], e_mask, sessions.sig_ptr, sessions.sig_label, sessions.sig_strength,
        sessions.sig_kind, acq_ptr, sessions.acq_pk[aidx], sessions.acq_ts[aidx], s1_ptr,
        s1_pk, s1_prior, s1_seg, np.float32(catalog.unlisted_prior), sessions.subscriber[devices],
        catalog.lab_ptr, catalog.lab_st, catalog.st_pk, catalog.st_lab_ptr, catalog.st_lab,
        catalog.pk_size, catalog.pk_factor, catalog.pk_unit, catalog.pk_premium,
        catalog.label_unit, config.half_life_s, config.recency_s, config.count_norm,
        config.protect_s, cap, np.asarray(config.pre_weights, np.float32),
        o_ptr, o_st, o_pk, o_kw, o_prior, o_hist, o_pos, o_info)
    if rows < 0:
        return None
    return rows, o_ptr, o_st, o_pk, o_kw, o_prior, o_hist, o_pos, o_info
