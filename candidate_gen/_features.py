"""User features for clustering and cold start: one-hot demographics, naive-Bayes assignment.

Every feature is categorical (``subscriber`` becomes ``"true"``/``"false"``); the value
``"unknown"`` (external datasets) and values never seen in training encode as an
all-zero block, so they neither pull a user in the clustering space nor vote in the
cold-start assignment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from data import ConfigError

__all__ = ["UNKNOWN", "ColdStartAssigner", "UserFeatureEncoder"]

UNKNOWN = "unknown"


def _as_strings(column: pl.Series) -> pl.Series:
    if column.dtype == pl.Boolean:
        return column.cast(pl.String).str.to_lowercase()
    return column.cast(pl.String)


class UserFeatureEncoder:
    """One-hot encoding of user columns, sklearn style.

    Parameters
    ----------
    features : sequence of str
        Columns of the ``users`` table to encode, in order.

    Attributes
    ----------
    categories_ : dict[str, list[str]]
        Known values of each feature, sorted (``"unknown"`` excluded).
    n_features_out_ : int
        Width of the encoding (sum of the category counts).
    """

    def __init__(self, features: Sequence[str]) -> None:
        self.features = list(features)

    def fit(self, users: pl.DataFrame) -> UserFeatureEncoder:
        """Learn each feature's categories from the ``users`` table."""
        missing = [f for f in self.features if f not in users.columns]
        if missing:
            raise ConfigError(
                f"clusters.features names {missing}, which the users table lacks "
                f"(it has {users.columns})"
            )
        self.categories_ = {
            f: sorted(v for v in _as_strings(users[f]).unique().to_list()
                      if v is not None and v != UNKNOWN)
            for f in self.features
        }
        self.n_features_out_ = sum(len(c) for c in self.categories_.values())
        return self

    @property
    def block_sizes(self) -> list[int]:
        """Width of each feature's one-hot block, in feature order."""
        return [len(self.categories_[f]) for f in self.features]

    def has_informative_value(self, encoded: np.ndarray) -> np.ndarray:
        """Which encoded users know a value of a feature that has two or more categories.

        A feature with one known category (say a loader's constant ``subscriber=false``)
        is the same for everyone and cannot tell clusters apart.

        Parameters
        ----------
        encoded : ndarray of float32, shape (n_users, n_features_out)
            From :meth:`transform`.

        Returns
        -------
        ndarray of bool, shape (n_users,)
        """
        informative = np.repeat(np.asarray(self.block_sizes) >= 2, self.block_sizes)
        return np.asarray(encoded[:, informative].any(axis=1), dtype=bool)

    def transform(self, users: pl.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """Encode users as float32 one-hot rows, shape (n_users, n_features_out_).

        ``users`` is a frame with the feature columns, or one user as a mapping. A missing
        column or key counts as unknown.
        """
        frame = pl.DataFrame({k: [v] for k, v in users.items()}) if isinstance(
            users, Mapping) else users
        n = 1 if isinstance(users, Mapping) else frame.height  # {} is one user, all unknown
        out = np.zeros((n, self.n_features_out_), dtype=np.float32)
        offset = 0
        rows = np.arange(n)
        for feature in self.features:
            cats = self.categories_[feature]
            if feature in frame.columns and cats:
                codes = (
                    _as_strings(frame[feature])
                    .replace_strict(cats, list(range(len(cats))), default=-1,
                                    return_dtype=pl.Int32)
                    .to_numpy()
                )
                known = codes >= 0
                out[rows[known], offset + codes[known]] = 1.0
            offset += len(cats)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable spec that :meth:`from_dict` restores."""
        return {"features": self.features, "categories": self.categories_,
                "unknown": UNKNOWN}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> UserFeatureEncoder:
        """Restore an encoder written by :meth:`to_dict`."""
        encoder = cls(spec["features"])
        encoder.categories_ = {f: list(spec["categories"][f]) for f in encoder.features}
        encoder.n_features_out_ = sum(len(c) for c in encoder.categories_.values())
        return encoder


class ColdStartAssigner:
    """Assign a user with no history to the most probable cluster given their features.

    Naive Bayes over the one-hot blocks: ``argmax_c log n_c + Σ_f log P(f = v | c)`` with
    Laplace smoothing ``smoothing``; unknown features are left out of the sum. The model
    is the per-cluster *feature centroids* (mean one-hot rows) and cluster sizes, both
    published in the stage-1 artifact.

    Attributes
    ----------
    log_likelihood_ : ndarray of float32, shape (n_clusters, n_features_out)
    log_prior_ : ndarray of float32, shape (n_clusters,)
    """

    def __init__(self, block_sizes: Sequence[int], smoothing: float = 1.0) -> None:
        self.block_sizes = list(block_sizes)
        self.smoothing = smoothing

    def fit(self, feature_centroids: np.ndarray, sizes: np.ndarray) -> ColdStartAssigner:
        """Fit from centroids (shape (n_clusters, n_features_out)) and sizes (n_clusters,)."""
        sizes = np.asarray(sizes, dtype=np.float64)
        counts = np.asarray(feature_centroids, dtype=np.float64) * sizes[:, None]
        block_of = np.repeat(np.arange(len(self.block_sizes)), self.block_sizes)
        width = np.asarray(self.block_sizes, dtype=np.float64)[block_of]
        known = np.zeros((len(sizes), len(self.block_sizes)))
        for b in range(len(self.block_sizes)):
            known[:, b] = counts[:, block_of == b].sum(axis=1)
        denominator = known[:, block_of] + self.smoothing * width
        self.log_likelihood_ = (np.log(counts + self.smoothing) - np.log(denominator)).astype(
            np.float32)
        self.log_prior_ = np.log(np.maximum(sizes, 1e-12) / sizes.sum()).astype(np.float32)
        return self

    def predict(self, encoded: np.ndarray) -> np.ndarray:
        """Cluster of each encoded user (float32, shape (n, n_features_out)) → int32 (n,)."""
        scores = encoded @ self.log_likelihood_.T + self.log_prior_[None, :]
        return np.argmax(scores, axis=1).astype(np.int32)
