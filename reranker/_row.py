"""The sticker row: sticker-level candidates and the on-device history features.

Per keystroke the phone scores every sticker whose labels match the typed text, drawn
from its *catalogue view* — the packages of its cluster's stage-1 list, the packages it
holds (bought, downloaded) and the ones it has sent from — each sticker once, several
per package allowed, capped by a cheap pre-score that never drops the person's own
recent stickers (:mod:`reranker._row_kernels`). Each candidate gets, beside the package
factor, keyword features and stage-1 prior, the :data:`HISTORY_FEATURE_NAMES` computed
on the phone from its own sends (:class:`DeviceHistory`); they never leave it.

Every history feature lies in [0, 1] with a fixed scale (no per-device normalisation),
so a clipped update means the same on every device.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from data import ConfigSection
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._model import rank_prior

__all__ = ["HISTORY_FEATURE_NAMES", "CandidateRows", "CatalogView", "DeviceHistory",
           "RowConfig", "StickerCatalog", "sticker_candidates"]

DAY = 86_400.0

HISTORY_FEATURE_NAMES: tuple[str, ...] = (
    "sticker_count",
    "sticker_recency",
    "package_count",
    "package_recency",
    "label_count",
    "label_recency",
    "sticker_share",
    "package_share",
    "package_new",
    "package_held",
    "subscription",
    "in_stage1",
)
"""Columns of the history features (all in [0, 1], computed on the phone).

sticker_count, package_count, label_count
    ``min(log1p(c), log1p(count_norm)) / log1p(count_norm)`` of the person's decayed send
    count ``c`` (half-life ``half_life_days``) of the sticker / its package / its best
    matching label.
sticker_recency, package_recency, label_recency
    ``exp(-Δt / recency_days)`` since the last send (0 if never).
sticker_share, package_share
    Decayed count over the decayed count of all the person's sends.
package_new
    The person never sent from the package and does not hold it.
package_held
    The person acquired the package (bought or downloaded) before now.
subscription
    The person subscribes and the package is premium (usable through the subscription).
in_stage1
    The package is in the cluster's stage-1 list.
"""


class RowConfig(ConfigSection):
    """Settings of the sticker row (candidates, history features, exploration)."""

    cap: int = Field(500, ge=1, le=4000, description=(
        "Most scored candidates per keystroke besides the person's own recent stickers."))
    train_candidates: int = Field(64, ge=2, le=4000, description=(
        "Candidates per training impression (the cap used in on-device training)."))
    half_life_days: float = Field(30.0, gt=0, description="Half-life of decayed send counts.")
    recency_days: float = Field(7.0, gt=0, description="Time scale of the recency features.")
    count_norm: float = Field(100.0, gt=0, description=(
        "Decayed count at which a count feature reaches 1 (fixed scale)."))
    protect_days: float = Field(30.0, ge=0, description=(
        "Stickers the person sent within this many days are never dropped by the cap."))
    explore_slots: int = Field(0, ge=0, le=5, description=(
        "Row slots given to the best candidate from a package new to the device."))
    pre_weights: tuple[float, float, float, float] = Field((8.0, 4.0, 4.0, 2.0), description=(
        "Pre-score weights of best match strength, sticker count, sticker recency and "
        "package count (plus the stage-1 prior)."))

    @property
    def half_life_s(self) -> float:
        """Half-life in seconds."""
        return self.half_life_days * DAY

    @property
    def recency_s(self) -> float:
        """Recency time scale in seconds."""
        return self.recency_days * DAY

    @property
    def protect_s(self) -> float:
        """Protection window in seconds."""
        return self.protect_days * DAY


@dataclass
class StickerCatalog:
    """Stickers, packages and labels as dense arrays indexed by catalogue position.

    Stickers are ordered by (package, position). Built once per stage-1 version.

    Attributes
    ----------
    sticker_ids : ndarray of int32, shape (n_st,)
    st_pk : ndarray of int32, shape (n_st,)
        Catalogue package of each sticker.
    st_lab_ptr, st_lab : ndarray of int32, shapes (n_st + 1,), (L,)
        CSR of each sticker's labels.
    lab_ptr, lab_st : ndarray of int32, shapes (n_labels + 1,), (L,)
        CSR of each label's stickers (catalogue order).
    package_ids : ndarray of int32, shape (n_pk,)
    pk_size : ndarray of int32, shape (n_pk,)
    pk_factor, pk_unit : ndarray of float32, shape (n_pk, d)
        Stage-1 factor (zeros when stage 1 never saw the package) and its unit vector.
    pk_premium : ndarray of bool, shape (n_pk,)
    label_unit : ndarray of float32, shape (n_labels, d)
    sticker_index, package_index : ndarray of int64
        Id → catalogue position (``-1``: unknown).
    cluster_pk : list of ndarray of int32
        Each cluster's stage-1 packages (catalogue positions, rank order).
    cluster_prior : list of ndarray of float32
        Their rank prior.
    unlisted_prior : float
        Prior of a package outside the cluster's list (as if ranked just after it).
    """

    sticker_ids: np.ndarray
    st_pk: np.ndarray
    st_lab_ptr: np.ndarray
    st_lab: np.ndarray
    lab_ptr: np.ndarray
    lab_st: np.ndarray
    package_ids: np.ndarray
    pk_size: np.ndarray
    pk_factor: np.ndarray
    pk_unit: np.ndarray
    pk_premium: np.ndarray
    label_unit: np.ndarray
    sticker_index: np.ndarray
    package_index: np.ndarray
    cluster_pk: list[np.ndarray]
    cluster_prior: list[np.ndarray]
    unlisted_prior: float
    _cluster_flags: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _cluster_csr: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_stickers(self) -> int:
        """n_st."""
        return int(self.sticker_ids.shape[0])

    @property
    def n_packages(self) -> int:
        """n_pk."""
        return int(self.package_ids.shape[0])

    @property
    def n_labels(self) -> int:
        """Number of labels."""
        return int(self.lab_ptr.shape[0] - 1)

    @classmethod
    def build(cls, context: RankingContext) -> StickerCatalog:
        """The catalogue of ``context``'s dataset and stage-1 version."""
        ds = context.dataset
        stickers = ds.table("stickers").sort("package_id", "position")
        packages = ds.table("packages").sort("package_id")
        package_ids = packages["package_id"].to_numpy().astype(np.int32)
        package_index = np.full(int(package_ids.max(initial=0)) + 1, -1, np.int64)
        package_index[package_ids] = np.arange(package_ids.size)
        sticker_ids = stickers["sticker_id"].to_numpy().astype(np.int32)
        st_pk_id = stickers["package_id"].to_numpy()
        known = (st_pk_id < package_index.size)
        if not known.all() or (package_index[st_pk_id] < 0).any():
            raise RerankerInputError(f"{ds.root}: stickers refer to packages missing from the "
                                     "packages table")
        st_pk = package_index[st_pk_id].astype(np.int32)
        sticker_index = np.full(int(sticker_ids.max(initial=0)) + 1, -1, np.int64)
        sticker_index[sticker_ids] = np.arange(sticker_ids.size)
        n_labels = context.label_embeddings.shape[0]
        lengths = stickers["label_ids"].list.len().fill_null(0).to_numpy()
        flat = (stickers["label_ids"].explode().drop_nulls().to_numpy().astype(np.int32)
                if lengths.sum() else np.zeros(0, np.int32))
        st_of_flat = np.repeat(np.arange(sticker_ids.size, dtype=np.int32), lengths)
        ok = (flat >= 0) & (flat < n_labels)
        flat, st_of_flat = flat[ok], st_of_flat[ok]
        st_lab_ptr = np.zeros(sticker_ids.size + 1, np.int32)
        np.cumsum(np.bincount(st_of_flat, minlength=sticker_ids.size), out=st_lab_ptr[1:])
        order = np.lexsort((st_of_flat, flat))
        lab_ptr = np.zeros(n_labels + 1, np.int32)
        np.cumsum(np.bincount(flat, minlength=n_labels), out=lab_ptr[1:])
        d = context.layout.n_factors
        pk_factor = np.zeros((package_ids.size, d), np.float32)
        factors = context.stage1.package_factors.astype(np.float32)
        for pid, row in context.package_row.items():
            if 0 <= pid < package_index.size and package_index[pid] >= 0:
                pk_factor[package_index[pid]] = factors[row]
        norms = np.linalg.norm(pk_factor, axis=1, keepdims=True)
        labels = np.asarray(context.label_embeddings, np.float32)
        lnorms = np.linalg.norm(labels, axis=1, keepdims=True)
        cluster_pk, cluster_prior = [], []
        for c in range(context.n_clusters):
            ids = context.cluster_candidates(c)
            cluster_pk.append(package_index[ids].astype(np.int32))
            cluster_prior.append(np.ascontiguousarray(context.prior[: ids.size]))
        width = context.candidate_ids.shape[1]
        return cls(
            sticker_ids=sticker_ids, st_pk=st_pk, st_lab_ptr=st_lab_ptr, st_lab=flat,
            lab_ptr=lab_ptr, lab_st=st_of_flat[order].astype(np.int32),
            package_ids=package_ids,
            pk_size=np.bincount(st_pk, minlength=package_ids.size).astype(np.int32),
            pk_factor=pk_factor,
            pk_unit=(pk_factor / np.where(norms > 0, norms, 1.0)).astype(np.float32),
            pk_premium=packages["premium"].to_numpy().astype(bool),
            label_unit=(labels / np.where(lnorms > 0, lnorms, 1.0)).astype(np.float32),
            sticker_index=sticker_index, package_index=package_index,
            cluster_pk=cluster_pk, cluster_prior=cluster_prior,
            unlisted_prior=float(rank_prior(np.array([width]))[0]))

    def stickers_of(self, sticker_ids: np.ndarray) -> np.ndarray:
        """Catalogue positions (int64) of sticker ids (``-1`` for unknown ones)."""
        ids = np.asarray(sticker_ids, np.int64)
        ok = (ids >= 0) & (ids < self.sticker_index.size)
        return np.where(ok, self.sticker_index[np.where(ok, ids, 0)], -1)

    def packages_of(self, package_ids: np.ndarray) -> np.ndarray:
        """Catalogue positions (int64) of package ids (``-1`` for unknown ones)."""
        ids = np.asarray(package_ids, np.int64)
        ok = (ids >= 0) & (ids < self.package_index.size)
        return np.where(ok, self.package_index[np.where(ok, ids, 0)], -1)

    def label_csr(self, packages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label → sticker CSR (``lab_ptr`` (n_labels + 1,), ``lab_st``; int32) restricted to
        the stickers of ``packages`` (catalogue positions)."""
        keep = np.zeros(self.n_packages, bool)
        keep[np.asarray(packages, np.int64)] = True
        entries = keep[self.st_pk[self.lab_st]]
        label_of = np.repeat(np.arange(self.n_labels), np.diff(self.lab_ptr))[entries]
        ptr = np.zeros(self.n_labels + 1, np.int32)
        np.cumsum(np.bincount(label_of, minlength=self.n_labels), out=ptr[1:])
        return ptr, np.ascontiguousarray(self.lab_st[entries], dtype=np.int32)

    def cluster_csr(self, cluster_id: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`label_csr` of a cluster's stage-1 packages (cached)."""
        csr = self._cluster_csr.get(cluster_id)
        if csr is None:
            csr = self._cluster_csr[cluster_id] = self.label_csr(self.cluster_pk[cluster_id])
        return csr

    def cluster_view(self, cluster_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-package flags (int8: bit 1 = in the cluster's list) and prior (float32) of a
        cluster, (n_pk,) each; cached, read-only."""
        view = self._cluster_flags.get(cluster_id)
        if view is None:
            flags = np.zeros(self.n_packages, np.int8)
            prior = np.full(self.n_packages, self.unlisted_prior, np.float32)
            flags[self.cluster_pk[cluster_id]] = 1
            prior[self.cluster_pk[cluster_id]] = self.cluster_prior[cluster_id]
            flags.flags.writeable = False
            prior.flags.writeable = False
            view = self._cluster_flags[cluster_id] = (flags, prior)
        return view


_NEVER = -1.0e300


class DeviceHistory:
    """A phone's private history state: decayed send counts and last sends, holdings.

    Kept on the device (SQLite, :meth:`save` / :meth:`load`), updated on every send
    (:meth:`record_send`), so the row adapts at once. Nothing here is uploaded: federated
    updates carry only shared-weight deltas.

    Parameters
    ----------
    catalog : StickerCatalog
    config : RowConfig
    subscriber : bool
        The person subscribes (premium packages usable through the subscription).
    """

    def __init__(self, catalog: StickerCatalog, config: RowConfig | None = None, *,
                 subscriber: bool = False) -> None:
        self.catalog = catalog
        self.config = config or RowConfig()
        self.subscriber = bool(subscriber)
        self.st_val = np.zeros(catalog.n_stickers)
        self.st_last = np.full(catalog.n_stickers, _NEVER)
        self.pk_val = np.zeros(catalog.n_packages)
        self.pk_last = np.full(catalog.n_packages, _NEVER)
        self.lb_val = np.zeros(catalog.n_labels)
        self.lb_last = np.full(catalog.n_labels, _NEVER)
        self.total = np.array([0.0, _NEVER])
        self.held = np.zeros(catalog.n_packages, bool)
        self.sent: list[int] = []  # catalogue positions ever sent (for the store)
        # The history view: every history feature that does not depend on the keystroke,
        # refreshed when a send or holding changes it or the clock moves on (view()).
        self.v_st = np.zeros((catalog.n_stickers, 3), np.float32)
        self.v_pk = np.zeros((catalog.n_packages, 5), np.float32)
        self.v_pk[:, 3] = 1.0
        self.v_lb = np.zeros((catalog.n_labels, 2), np.float32)
        self._touched: tuple[set[int], set[int], set[int]] = (set(), set(), set())
        self._view_at: float | None = None
        self._own_csr: tuple[np.ndarray, np.ndarray] | None = None
        # Change counters for the compact views built on this state (CatalogView): the
        # history view's values, and the set of packages the device holds or sent from.
        self.view_epoch = 0
        self.own_epoch = 0
        self._catalog_views: dict[int, CatalogView] = {}

    @property
    def is_empty(self) -> bool:
        """No send and no holding recorded."""
        return self.total[1] <= _NEVER and not self.held.any()

    def record_send(self, sticker_id: int, ts: float) -> None:
        """Count one send of ``sticker_id`` at ``ts`` (seconds); unknown stickers are ignored."""
        from reranker import _row_kernels as k

        s = int(self.catalog.stickers_of(np.array([sticker_id]))[0])
        if s < 0:
            return
        c = self.catalog
        k.record_send(s, float(ts), c.st_pk, c.st_lab_ptr, c.st_lab, self.st_val,
                      self.st_last, self.pk_val, self.pk_last, self.lb_val, self.lb_last,
                      self.total, self.config.half_life_s)
        self._touch(s)

    def _touch(self, s: int) -> None:
        c = self.catalog
        sts, pks, lbs = self._touched
        p = int(c.st_pk[s])
        if p not in pks and not self.held[p]:
            self._own_csr = None  # a package joins the device's catalogue view
            self.own_epoch += 1
        sts.add(s)
        pks.add(p)
        lbs.update(int(x) for x in c.st_lab[c.st_lab_ptr[s]:c.st_lab_ptr[s + 1]])
        self.sent.append(s)
        self._view_at = None

    def acquire(self, package_id: int) -> None:
        """Mark a package as held (bought or downloaded)."""
        p = int(self.catalog.packages_of(np.array([package_id]))[0])
        if p >= 0 and not self.held[p]:
            self.held[p] = True
            self.v_pk[p, 3], self.v_pk[p, 4] = 0.0, 1.0
            self._own_csr = None
            self.own_epoch += 1
            self.view_epoch += 1

    VIEW_REFRESH_S = 60.0
    """How far the clock may move before the view is recomputed (its features move by
    under 1e-3 in a minute at day-scale decays)."""

    def view(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The history view ``(v_st, v_pk, v_lb)`` at ``now`` (refreshed when stale)."""
        if self._view_at is None or abs(now - self._view_at) > self.VIEW_REFRESH_S:
            from reranker import _row_kernels as k

            sts, pks, lbs = (np.fromiter(x, np.int64, len(x)) for x in self._touched)
            cfg = self.config
            k.refresh_view(float(now), sts, pks, lbs, self.st_val, self.st_last, self.pk_val,
                           self.pk_last, self.lb_val, self.lb_last, self.total,
                           cfg.half_life_s, cfg.recency_s, cfg.count_norm, self.v_st,
                           self.v_pk, self.v_lb)
            self._view_at = float(now)
            self.view_epoch += 1
        return self.v_st, self.v_pk, self.v_lb

    MAX_CATALOG_VIEWS = 64
    """Most compact views kept per state (one per cluster it was asked for; a server's
    shared empty state sees many clusters)."""

    def catalog_view(self, cluster_id: int, now: float) -> CatalogView:
        """The device's compact catalogue view in ``cluster_id`` at ``now`` (cached, rebuilt
        when the device's own packages change, its history gathered when the view moved).

        Not thread-safe for a state that is being updated (as the state itself).
        """
        self.view(now)
        view = self._catalog_views.get(cluster_id)
        if view is None or view.own_epoch != self.own_epoch:
            if len(self._catalog_views) >= self.MAX_CATALOG_VIEWS:
                self._catalog_views.pop(next(iter(self._catalog_views)))
            view = self._catalog_views[cluster_id] = CatalogView(self.catalog, cluster_id, self)
        if view.view_epoch != self.view_epoch:
            view.gather(self)
        return view

    def own_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """Label → sticker CSR of the packages the device holds or has sent from (cached)."""
        if self._own_csr is None:
            own = np.flatnonzero(self.held | (self.pk_last > _NEVER))
            self._own_csr = self.catalog.label_csr(own)
        return self._own_csr

    def forget(self) -> None:
        """Delete every count and holding (the person's deletion request)."""
        epochs = (self.view_epoch + 1, self.own_epoch + 1)
        self.__init__(self.catalog, self.config, subscriber=self.subscriber)  # type: ignore[misc]
        self.view_epoch, self.own_epoch = epochs

    def recent_stickers(self, now: float) -> np.ndarray:
        """Catalogue positions of stickers sent within ``protect_days`` before ``now``."""
        return np.flatnonzero(self.st_last >= now - self.config.protect_s)

    @classmethod
    def from_sends(cls, catalog: StickerCatalog, sticker_ids: np.ndarray, ts: np.ndarray,
                   config: RowConfig | None = None, *, held_package_ids: np.ndarray | None = None,
                   subscriber: bool = False) -> DeviceHistory:
        """The state after the given sends (any order; replayed in time order)."""
        history = cls(catalog, config, subscriber=subscriber)
        order = np.argsort(np.asarray(ts, np.float64), kind="stable")
        for i in order.tolist():
            history.record_send(int(sticker_ids[i]), float(ts[i]))
        if held_package_ids is not None:
            for p in np.asarray(held_package_ids).tolist():
                history.acquire(int(p))
        return history

    # ------------------------------------------------------------------ the local store
    def summary(self) -> dict[str, Any]:
        """The state as plain JSON-ready values (the explicit thin-client option, and the
        rows of the local store): per sent sticker id its decayed count and last send,
        held package ids, subscriber flag. Label and package counts follow from these."""
        sent = np.flatnonzero(self.st_last > _NEVER)
        return {"stickers": [[int(self.catalog.sticker_ids[s]), float(self.st_val[s]),
                              float(self.st_last[s])] for s in sent.tolist()],
                "held": [int(x) for x in self.catalog.package_ids[self.held].tolist()],
                "subscriber": self.subscriber}

    @classmethod
    def from_summary(cls, catalog: StickerCatalog, summary: dict[str, Any],
                     config: RowConfig | None = None) -> DeviceHistory:
        """Rebuild a state from :meth:`summary` (package, label and total counts are the
        decayed sums of the stickers' counts at their last sends).

        Raises
        ------
        RerankerInputError
            A malformed summary.
        """
        try:
            rows = [(int(a), float(b), float(c)) for a, b, c in summary.get("stickers", [])]
            held = [int(x) for x in summary.get("held", [])]
            subscriber = bool(summary.get("subscriber", False))
        except (TypeError, ValueError) as exc:
            raise RerankerInputError(f"history summary is malformed ({exc}); expected "
                                     "{'stickers': [[sticker_id, count, last_ts], ...], "
                                     "'held': [package_id, ...], 'subscriber': bool}") from exc
        history = cls(catalog, config, subscriber=subscriber)
        hl = history.config.half_life_s
        for sid, val, last in sorted(rows, key=lambda r: r[2]):
            s = int(catalog.stickers_of(np.array([sid]))[0])
            if s < 0 or not np.isfinite(val) or not np.isfinite(last) or val < 0:
                continue
            history.st_val[s], history.st_last[s] = val, last
            for arr_val, arr_last, idx in (
                    [(history.pk_val, history.pk_last, int(catalog.st_pk[s]))]
                    + [(history.lb_val, history.lb_last, int(lab)) for lab in
                       catalog.st_lab[catalog.st_lab_ptr[s]:catalog.st_lab_ptr[s + 1]]]):
                prev = (arr_val[idx] * 2.0 ** (-(last - arr_last[idx]) / hl)
                        if arr_last[idx] > _NEVER else 0.0)
                arr_val[idx], arr_last[idx] = prev + val, last
            prev = (history.total[0] * 2.0 ** (-(last - history.total[1]) / hl)
                    if history.total[1] > _NEVER else 0.0)
            history.total[:] = (prev + val, last)
            history._touch(s)
        for p in held:
            history.acquire(p)
        return history

    def save(self, path: str | Path) -> None:
        """Write the state to the device's SQLite store (replacing what was there)."""
        summary = self.summary()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS sticker_counts (sticker_id INTEGER PRIMARY "
                       "KEY, count REAL NOT NULL, last_ts REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS held_packages (package_id INTEGER PRIMARY "
                       "KEY)")
            db.execute("CREATE TABLE IF NOT EXISTS device_flags (name TEXT PRIMARY KEY, "
                       "value INTEGER NOT NULL)")
            db.execute("DELETE FROM sticker_counts")
            db.execute("DELETE FROM held_packages")
            db.executemany("INSERT INTO sticker_counts VALUES (?, ?, ?)", summary["stickers"])
            db.executemany("INSERT INTO held_packages VALUES (?)",
                           [(p,) for p in summary["held"]])
            db.execute("INSERT OR REPLACE INTO device_flags VALUES ('subscriber', ?)",
                       (int(self.subscriber),))

    @classmethod
    def load(cls, catalog: StickerCatalog, path: str | Path,
             config: RowConfig | None = None) -> DeviceHistory:
        """The state saved by :meth:`save` (an empty state if the store has none)."""
        with sqlite3.connect(path) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "sticker_counts" not in tables:
                return cls(catalog, config)
            stickers = db.execute("SELECT sticker_id, count, last_ts FROM sticker_counts"
                                  ).fetchall()
            held = [r[0] for r in db.execute("SELECT package_id FROM held_packages")]
            flag = db.execute("SELECT value FROM device_flags WHERE name = 'subscriber'"
                              ).fetchone()
        return cls.from_summary(catalog, {"stickers": stickers, "held": held,
                                          "subscriber": bool(flag and flag[0])}, config)


class CatalogView:
    """One device's catalogue view in one cluster, as compact arrays (the keystroke's data).

    The stickers a keystroke can score are those of the cluster's stage-1 packages and of
    the packages the device holds or has sent from: a few thousand of the catalogue's
    stickers. Renumbered densely (in catalogue order, so every walk and tie-break is the
    same as over the whole catalogue), their arrays fit in a core's cache, where the
    catalogue-wide ones (~10⁵ stickers) cost a cache miss per touched sticker. Built
    when the device's own packages change; the history features are gathered from the
    state's view when it changes (:meth:`gather`).

    Parameters
    ----------
    catalog : StickerCatalog
    cluster_id : int
    history : DeviceHistory

    Attributes
    ----------
    g_st : ndarray of int64, shape (n,)
        Catalogue position of each local sticker (increasing).
    g_pk : ndarray of int64, shape (m,)
        Catalogue position of each local package (increasing).
    st_pk, st_lab_ptr, st_lab, pk_size, pk_factor, pk_unit, pk_premium
        The catalogue's arrays of the same names restricted and renumbered (labels keep
        their catalogue ids).
    pk_flags, pk_prior : ndarray, shape (m,)
        :meth:`StickerCatalog.cluster_view` restricted.
    lab_ptr, lab_st, own_ptr, own_st : ndarray of int32
        Label → local sticker CSRs: the cluster's listed packages, and the device's own.
    sticker_ids, package_ids : ndarray of int32, shapes (n,), (m,)
    first_listed : ndarray of int32
        Local first sticker of each listed package (stage-1 order; the no-match fallback).
    v_st (n, 3), v_pk (m, 5) float32; st_last (n,) float64
        The gathered history view (``v_lb`` stays catalogue-wide: labels are few).
    """

    def __init__(self, catalog: StickerCatalog, cluster_id: int, history: DeviceHistory) -> None:
        c = catalog
        listed = c.cluster_pk[cluster_id].astype(np.int64)
        own = np.flatnonzero(history.held | (history.pk_last > _NEVER))
        g_pk = np.union1d(listed, own).astype(np.int64)
        first = np.searchsorted(c.st_pk, g_pk)
        size = c.pk_size[g_pk].astype(np.int64)
        g_st = (np.repeat(first - np.cumsum(size) + size, size) + np.arange(size.sum())
                ).astype(np.int64)
        self.cluster_id = cluster_id
        self.own_epoch = history.own_epoch
        self.view_epoch = -1
        self.g_st, self.g_pk = g_st, g_pk
        local_st = np.full(c.n_stickers, -1, np.int64)
        local_st[g_st] = np.arange(g_st.size)
        self.st_pk = np.searchsorted(g_pk, c.st_pk[g_st]).astype(np.int32)
        lens = (c.st_lab_ptr[g_st + 1] - c.st_lab_ptr[g_st]).astype(np.int64)
        self.st_lab_ptr = np.zeros(g_st.size + 1, np.int32)
        np.cumsum(lens, out=self.st_lab_ptr[1:])
        starts = np.repeat(c.st_lab_ptr[g_st] - self.st_lab_ptr[:-1], lens)
        self.st_lab = np.ascontiguousarray(
            c.st_lab[starts + np.arange(int(lens.sum()))], dtype=np.int32)
        self.pk_size = np.ascontiguousarray(c.pk_size[g_pk])
        self.pk_factor = np.ascontiguousarray(c.pk_factor[g_pk])
        self.pk_unit = np.ascontiguousarray(c.pk_unit[g_pk])
        self.pk_premium = np.ascontiguousarray(c.pk_premium[g_pk])
        flags, prior = c.cluster_view(cluster_id)
        self.pk_flags = np.ascontiguousarray(flags[g_pk])
        self.pk_prior = np.ascontiguousarray(prior[g_pk])
        self.lab_ptr, self.lab_st = self._local_csr(c.cluster_csr(cluster_id), local_st)
        self.own_ptr, self.own_st = self._local_csr(history.own_csr(), local_st)
        self.sticker_ids = np.ascontiguousarray(c.sticker_ids[g_st])
        self.package_ids = np.ascontiguousarray(c.package_ids[g_pk])
        listed = listed[c.pk_size[listed] > 0]
        self.first_listed = local_st[np.searchsorted(c.st_pk, listed)].astype(np.int32)
        self.v_st = np.zeros((g_st.size, 3), np.float32)
        self.v_pk = np.zeros((g_pk.size, 5), np.float32)
        self.st_last = np.zeros(g_st.size)

    @staticmethod
    def _local_csr(csr: tuple[np.ndarray, np.ndarray], local_st: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """A label → catalogue sticker CSR renumbered to local stickers (all must be local)."""
        ptr, st = csr
        return ptr, np.ascontiguousarray(local_st[st], dtype=np.int32)

    @property
    def n_stickers(self) -> int:
        """n, the stickers of the view."""
        return int(self.g_st.size)

    def gather(self, history: DeviceHistory) -> None:
        """Copy the state's current history view into the local arrays."""
        np.take(history.v_st, self.g_st, axis=0, out=self.v_st)
        np.take(history.v_pk, self.g_pk, axis=0, out=self.v_pk)
        np.take(history.st_last, self.g_st, out=self.st_last)
        self.view_epoch = history.view_epoch

    def recent_stickers(self, after: float) -> np.ndarray:
        """Local positions (int32) of stickers last sent at or after ``after`` (seconds)."""
        return np.flatnonzero(self.st_last >= after).astype(np.int32)


@dataclass(frozen=True)
class CandidateRows:
    """One keystroke's candidates and the model inputs of each (n rows).

    Attributes
    ----------
    sticker_ids, package_ids : ndarray of int64, shape (n,)
    factors : ndarray of float32, shape (n, d)
    keyword : ndarray of float32, shape (n, k)
    prior : ndarray of float32, shape (n,)
    history : ndarray of float32, shape (n, h)
        Columns :data:`HISTORY_FEATURE_NAMES`.
    n_matched : int
        Stickers matched before the cap.
    """

    sticker_ids: np.ndarray
    package_ids: np.ndarray
    factors: np.ndarray
    keyword: np.ndarray
    prior: np.ndarray
    history: np.ndarray
    n_matched: int


def sticker_candidates(catalog: StickerCatalog, config: RowConfig, cluster_id: int,
                       label_ids: np.ndarray, strengths: np.ndarray, kinds: np.ndarray,
                       history: DeviceHistory, now: float) -> CandidateRows:
    """The sticker candidates of one keystroke with their features (fresh arrays).

    The same compiled assembly as the keyboard's (:func:`reranker._row_kernels.assemble`),
    allocating its buffers per call: for tests, tools and evaluation, not the hot path.

    Parameters
    ----------
    catalog : StickerCatalog
    config : RowConfig
    cluster_id : int
    label_ids, strengths, kinds : ndarray, shape (m,)
        The keyword match (``keyword_index.Match`` fields).
    history : DeviceHistory
    now : float
        Seconds since the epoch.
    """
    from reranker import _row_kernels as k

    n_st, n_pk, d = catalog.n_stickers, catalog.n_packages, catalog.pk_factor.shape[1]
    flags, prior = catalog.cluster_view(cluster_id)
    v_st, v_pk, v_lb = history.view(now)
    capacity = min(config.cap + n_st, n_st)
    o_st = np.empty(capacity, np.int32)
    o_pk = np.empty(capacity, np.int32)
    o_v = np.empty((capacity, d), np.float32)
    o_kw = np.empty((capacity, 7), np.float32)
    o_prior = np.empty(capacity, np.float32)
    o_hist = np.empty((capacity, k.N_HISTORY), np.float32)
    stamp = np.zeros(2, np.int32)
    fallback = np.zeros(0, np.int32)
    if len(label_ids) == 0:
        first = np.searchsorted(catalog.st_pk, catalog.cluster_pk[cluster_id]).astype(np.int32)
        fallback = np.concatenate([history.recent_stickers(now).astype(np.int32), first])
    n = k.assemble(
        np.asarray(label_ids, np.int32), np.asarray(strengths, np.float32),
        np.asarray(kinds, np.int8), catalog.lab_ptr, catalog.lab_st,
        np.zeros(1, np.int32), np.zeros(0, np.int32), catalog.st_pk, catalog.st_lab_ptr,
        catalog.st_lab, catalog.pk_size, catalog.pk_factor, catalog.pk_unit,
        catalog.pk_premium, catalog.label_unit, prior, flags, v_st, v_pk, v_lb,
        history.st_last, history.subscriber, float(now) - config.protect_s, fallback,
        config.cap, np.asarray(config.pre_weights, np.float32), np.zeros(n_st, np.int32),
        np.zeros(n_st, np.int32), np.zeros(n_pk, np.int32), np.zeros(n_pk, np.int32), stamp,
        np.empty(n_st, np.int32), np.empty(n_st, np.float32), np.empty(n_st, np.int8),
        np.empty(n_st, np.int32), np.empty(n_st, np.float32), np.empty(n_st, np.bool_),
        np.empty(n_st, np.int64), np.empty(d, np.float32),
        o_st, o_pk, o_v, o_kw, o_prior, o_hist)
    return CandidateRows(
        sticker_ids=catalog.sticker_ids[o_st[:n]].astype(np.int64),
        package_ids=catalog.package_ids[o_pk[:n]].astype(np.int64), factors=o_v[:n].copy(),
        keyword=o_kw[:n].copy(), prior=o_prior[:n].copy(), history=o_hist[:n].copy(),
        n_matched=int(stamp[1]))
