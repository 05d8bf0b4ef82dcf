"""Segment popularity: what the server's log says a person's segment sends, before a cut.

The ``segment_popularity`` baseline (a row a server could build with no model and no
device history) orders the stage-1 candidates by the package's weight in the server log
before the cut among users of the person's segment (language × region × age bucket),
then among users of their language, then stage-1 order. The report's arm and the
federated per-round metric both read their keys from :class:`SegmentPopularity`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

__all__ = ["SEGMENT_KEY_WEIGHT", "SegmentPopularity"]

SEGMENT_KEY_WEIGHT = 1e6
"""Scale of ``log1p`` of the segment weight in a key; the language term (``10 ×
log1p``, < 1e5 for any real weight) only breaks its ties."""


class SegmentPopularity:
    """Per-segment and per-language package weights of the server log before ``cut_ts``.

    Parameters
    ----------
    dataset : data.Dataset
        Needs the ``users`` table (``user_id``, ``language``, ``region``,
        ``age_bucket``; missing values form their own segment) and ``interactions``
        (``user_id``, ``package_id``, ``weight``, ``ts``).
    cut_ts : float
        Only interactions strictly before it count (seconds since the epoch): the
        server knows nothing later.
    """

    def __init__(self, dataset: Any, cut_ts: float) -> None:
        users = dataset.table("users").select("user_id", "language", "region", "age_bucket")
        users = users.with_columns(
            (pl.struct("language", "region", "age_bucket").rank("dense").cast(pl.Int64) - 1)
            .alias("seg"),
            (pl.col("language").rank("dense").cast(pl.Int64) - 1).fill_null(-1).alias("lang"))
        self.cut_ts = float(cut_ts)
        ids = users["user_id"].to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        self._user_ids = ids[order]
        self._seg = users["seg"].to_numpy()[order]
        self._lang = users["lang"].to_numpy()[order]
        inter = (dataset.table("interactions")
                 .filter((pl.col("ts").dt.epoch("ms") / 1000.0) < self.cut_ts)
                 .select("user_id", "package_id", "weight")
                 .join(users.select("user_id", "seg", "lang"), on="user_id"))
        inter_lang = inter.filter(pl.col("lang") >= 0)
        n_pk = int(inter["package_id"].max() or 0) + 1 if inter.height else 1
        self._w_seg = self._matrix(inter, "seg", int(self._seg.max(initial=-1)) + 1, n_pk)
        self._w_lang = self._matrix(inter_lang, "lang", int(self._lang.max(initial=-1)) + 1, n_pk)

    @staticmethod
    def _matrix(inter: pl.DataFrame, group: str, n_rows: int, n_pk: int) -> sp.csr_matrix:
        agg = inter.group_by(group, "package_id").agg(pl.col("weight").sum())
        return sp.csr_matrix((agg["weight"].to_numpy().astype(np.float64),
                              (agg[group].to_numpy(), agg["package_id"].to_numpy())),
                             shape=(max(n_rows, 1), n_pk))

    def _lookup(self, matrix: sp.csr_matrix, rows: np.ndarray, packages: np.ndarray
                ) -> np.ndarray:
        ok = (rows >= 0) & (packages >= 0) & (packages < matrix.shape[1])
        out = np.zeros(packages.size)
        if ok.any():
            out[ok] = np.asarray(matrix[rows[ok], packages[ok]]).ravel()
        return out

    def keys(self, user_ids: np.ndarray, ptr: np.ndarray, packages: np.ndarray) -> np.ndarray:
        """Order keys of each user's packages (higher first; add stage-1 order last).

        Parameters
        ----------
        user_ids : ndarray of int, shape (B,)
        ptr : ndarray of int64, shape (B + 1,)
            User ``b``'s packages are ``packages[ptr[b]:ptr[b+1]]``.
        packages : ndarray of int, shape (E,)
            Package ids (``-1``: none, key 0).

        Returns
        -------
        ndarray of float64, shape (E,)
            ``log1p(segment weight) × 1e6 + 10 × log1p(language weight)``; a user absent
            from the users table gets 0 for every package.
        """
        user_ids = np.asarray(user_ids, np.int64)
        packages = np.asarray(packages, np.int64)
        at = np.searchsorted(self._user_ids, user_ids)
        at_c = np.minimum(at, max(self._user_ids.size - 1, 0))
        known = (self._user_ids.size > 0) & (self._user_ids[at_c] == user_ids)
        seg = np.where(known, self._seg[at_c] if self._seg.size else -1, -1)
        lang = np.where(known, self._lang[at_c] if self._lang.size else -1, -1)
        reps: np.ndarray = np.diff(np.asarray(ptr, dtype=np.int64)).astype(np.int64)
        w_seg = self._lookup(self._w_seg, np.repeat(seg, reps), packages)
        w_lang = self._lookup(self._w_lang, np.repeat(lang, reps), packages)
        return np.log1p(w_seg) * SEGMENT_KEY_WEIGHT + np.log1p(w_lang) * 10.0
