"""User clusters: faiss k-means, then k-anonymity by merging small clusters.

The clustering space joins L2-normalised user factors (taste) with one-hot user
features scaled to a configurable norm (demographics, language). k-means runs on a
seeded sample of users (``max_points_per_centroid`` per centroid); every user is then
assigned to its nearest centroid, and every cluster smaller than ``min_cluster_size`` is
merged into the cluster whose centroid is nearest, smallest first, until none is small.
A candidate list therefore never describes fewer than ``min_cluster_size`` people.
"""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp
import structlog

from candidate_gen._search import search
from data import ConfigError

__all__ = ["UserClusterer", "cluster_means", "merge_small_clusters"]

log = structlog.get_logger(__name__)


def cluster_means(
    x: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums' means and sizes.

    Parameters
    ----------
    x : ndarray of float32, shape (n, d)
    labels : ndarray of int, shape (n,)
        Cluster of each row, in ``[0, n_clusters)``.

    Returns
    -------
    means : ndarray of float32, shape (n_clusters, d)
        Zero rows for empty clusters.
    sizes : ndarray of int64, shape (n_clusters,)
    """
    n = len(labels)
    indicator = sp.csr_matrix(
        (np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(n_clusters, n)
    )
    sums = np.asarray(indicator @ x, dtype=np.float64)
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    means = sums / np.maximum(sizes, 1)[:, None]
    return means.astype(np.float32), sizes


def merge_small_clusters(
    labels: np.ndarray, means: np.ndarray, sizes: np.ndarray, min_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Merge every cluster below ``min_size`` into its nearest neighbour, smallest first.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
    means : ndarray of float32, shape (k, d)
        Exact means of each cluster's points.
    sizes : ndarray of int, shape (k,)
    min_size : int

    Returns
    -------
    labels : ndarray of int32, shape (n,)
        Relabelled to ``0 .. k' - 1`` (surviving clusters keep their relative order).
    means : ndarray of float32, shape (k', d)
    sizes : ndarray of int64, shape (k',)
    n_merged : int
        How many clusters were merged away (empty ones are dropped, not counted).

    Raises
    ------
    ConfigError
        If there are fewer than ``min_size`` points altogether.
    """
    total = int(sizes.sum())
    if total < min_size:
        raise ConfigError(
            f"n_users={total} should be >= clusters.min_cluster_size={min_size}; "
            "k-anonymity cannot hold with fewer users than the minimum cluster size"
        )
    sums = means.astype(np.float64) * sizes[:, None]
    size = sizes.astype(np.int64).copy()
    centre = means.astype(np.float64).copy()
    alive = size > 0
    target = np.arange(len(size))
    n_merged = 0
    while True:
        small = np.flatnonzero(alive & (size < min_size))
        if len(small) == 0:
            break
        s = int(small[np.argmin(size[small])])
        others = np.flatnonzero(alive)
        others = others[others != s]
        d2 = ((centre[others] - centre[s]) ** 2).sum(axis=1)
        t = int(others[np.argmin(d2)])
        sums[t] += sums[s]
        size[t] += size[s]
        centre[t] = sums[t] / size[t]
        alive[s] = False
        target[s] = t
        n_merged += 1
    # Follow merge chains (a cluster merged into one that was merged later).
    final = target.copy()
    for _ in range(len(final)):
        nxt = target[final]
        if np.array_equal(nxt, final):
            break
        final = nxt
    survivors = np.flatnonzero(alive)
    compact = np.full(len(size), -1, dtype=np.int32)
    compact[survivors] = np.arange(len(survivors), dtype=np.int32)
    new_labels = compact[final[labels]]
    return new_labels, centre[survivors].astype(np.float32), size[survivors], n_merged


class UserClusterer:
    """k-means with a minimum cluster size (k-anonymity), sklearn style.

    Parameters
    ----------
    n_clusters : int
        Requested clusters; capped at ``n_samples // min_cluster_size`` since more could
        never all reach the minimum.
    min_cluster_size : int
    niter : int
    max_points_per_centroid : int
    seed : int

    Attributes
    ----------
    cluster_centers_ : ndarray of float32, shape (n_clusters_, d)
        Exact means of the final clusters in the clustering space.
    labels_ : ndarray of int32, shape (n_samples,)
    sizes_ : ndarray of int64, shape (n_clusters_,)
    n_clusters_ : int
    n_merged_ : int
        Clusters merged away to reach the minimum size.
    k_used_ : int
        The k given to k-means after the cap.
    """

    def __init__(self, n_clusters: int = 256, min_cluster_size: int = 50, niter: int = 20,
                 max_points_per_centroid: int = 128, seed: int = 0) -> None:
        self.n_clusters = n_clusters
        self.min_cluster_size = min_cluster_size
        self.niter = niter
        self.max_points_per_centroid = max_points_per_centroid
        self.seed = seed

    def fit(self, x: np.ndarray) -> UserClusterer:
        """Cluster the rows of ``x`` (float32, shape (n_samples, d))."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        if n < self.min_cluster_size:
            raise ConfigError(
                f"n_users={n} should be >= clusters.min_cluster_size={self.min_cluster_size}; "
                "k-anonymity cannot hold with fewer users than the minimum cluster size"
            )
        k = max(1, min(self.n_clusters, n // self.min_cluster_size))
        if k < self.n_clusters:
            log.info("capping clusters for k-anonymity", requested=self.n_clusters, used=k,
                     users=n, min_cluster_size=self.min_cluster_size)
        if k > 1:
            kmeans = faiss.Kmeans(
                d, k, niter=self.niter, seed=self.seed, verbose=False,
                max_points_per_centroid=self.max_points_per_centroid,
                min_points_per_centroid=1,
            )
            kmeans.train(x)
            _, assigned = search(kmeans.index, x, 1)
            labels = assigned[:, 0].astype(np.int64)
        else:
            labels = np.zeros(n, dtype=np.int64)
        return self._merge(x, labels, k)

    def fit_groups(self, x: np.ndarray, groups: np.ndarray) -> UserClusterer:
        """Take given groups as the clusters (no k-means), then merge the small ones.

        Parameters
        ----------
        x : ndarray of float32, shape (n_samples, d)
            The clustering space: a group smaller than ``min_cluster_size`` is merged into
            the group whose mean in it is nearest, as after k-means.
        groups : ndarray of int, shape (n_samples,)
            Group of every row (e.g. its demographic segment), ``>= 0``.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) < self.min_cluster_size:
            raise ConfigError(
                f"n_users={len(x)} should be >= clusters.min_cluster_size="
                f"{self.min_cluster_size}; k-anonymity cannot hold with fewer users than "
                "the minimum cluster size"
            )
        labels = np.asarray(groups, dtype=np.int64)
        k = int(labels.max()) + 1 if len(labels) else 1
        return self._merge(x, labels, k)

    def _merge(self, x: np.ndarray, labels: np.ndarray, k: int) -> UserClusterer:
        means, sizes = cluster_means(x, labels, k)
        self.labels_, self.cluster_centers_, self.sizes_, self.n_merged_ = merge_small_clusters(
            labels, means, sizes, self.min_cluster_size
        )
        self.n_clusters_ = len(self.sizes_)
        self.k_used_ = k
        return self
