"""Per-cluster candidate lists with a label-coverage guarantee.

Scoring (:func:`cluster_scores`)
    A cluster's *item centroid* is the mean of its users' raw factors, so
    ``item_centroid · package_factor`` is the mean predicted preference of the cluster's
    users. The cluster's own popularity of a package is its share of the cluster's users
    holding it, shrunk towards the segment prior: ``(holders_c + m·prior_c) / (n_c + m)``,
    where ``prior_c`` is the holder share within the segments of the cluster's members
    (weighted by how many members each segment has). Both are standardised over the
    available packages of the cluster and blended with weight ``popularity_blend`` on
    popularity. Only *available* packages are scored (withdrawn ones are never
    candidates); each cluster's top ``n_candidates`` follow.

Label demand (what "labels the cluster's users use often" means here)
    The server never reads the private device logs, so demand is derived from the
    server-visible log: each holder of a package before the split spreads one unit over
    the package's labels in proportion to the share of its stickers carrying each label,
    summed over the cluster's users (:func:`holder_label_demand`; :func:`label_demand`
    does the same with confidence weights). A cluster's demanded labels are its
    ``top_labels`` labels by demand whose share of the cluster's demand is at least
    ``min_label_share``.

Coverage repair
    Each demanded label ``l`` must be carried (some sticker in the package has ``l``) by
    at least ``required(l) = min(min_packages_per_label, available packages carrying l)``
    candidates. Let ``R`` be, over the demanded labels, the union of the
    ``required(l)`` best-scoring available packages carrying ``l``. The final list is
    ``R`` plus the best-scoring remaining top-``n`` packages until ``n`` are chosen,
    ranked by score. Because the plain top-``n`` holds every package above its cut-off,
    this swaps in the best missing label carriers and drops the lowest-ranked packages
    that no demanded label needs; ``|R| <= top_labels × min_packages_per_label <= n``
    (checked by the config), so the guarantee always holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import structlog

from candidate_gen._config import CandidateConfig
from candidate_gen._matrix import concat_ranges, group_order, index_of
from candidate_gen._search import map_slices

__all__ = [
    "CandidateLists", "cluster_scores", "estimate_shrinkage", "holder_label_demand",
    "label_demand", "package_label_matrix",
    "select_candidates", "top_stable",
]

log = structlog.get_logger(__name__)


def package_label_matrix(
    stickers: pl.DataFrame, package_ids: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Share of each package's stickers that carry each label.

    Parameters
    ----------
    stickers : polars.DataFrame
        The ``stickers`` table.
    package_ids : ndarray of int32, shape (n_packages,)
        Sorted package ids (the matrix columns).

    Returns
    -------
    shares : scipy.sparse.csr_matrix of float32, shape (n_packages, n_labels)
    label_ids : ndarray of int32, shape (n_labels,)
        Sorted ids of the labels that occur.
    """
    # One (package, label) pair per label of each sticker: the flat label values, each
    # with its sticker's package (empty and null lists explode to nothing).
    labels = stickers["label_ids"]
    per_sticker = labels.list.len().fill_null(0).to_numpy()
    flat_labels = labels.explode(empty_as_null=False, keep_nulls=False)
    carried = flat_labels.is_not_null()
    flat_package = np.repeat(stickers["package_id"].to_numpy(), per_sticker)[
        carried.to_numpy()]
    flat_label = flat_labels.filter(carried).to_numpy()
    label_ids = np.unique(flat_label).astype(np.int32)
    rows = index_of(package_ids, flat_package)
    cols = index_of(label_ids, flat_label)
    known = rows >= 0
    counts = sp.csr_matrix(  # duplicates are summed: stickers of a package with the label
        (np.ones(int(known.sum()), dtype=np.float32), (rows[known], cols[known])),
        shape=(len(package_ids), len(label_ids)),
    )
    sticker_rows = index_of(package_ids, stickers["package_id"].to_numpy())
    n_stickers = np.bincount(sticker_rows[sticker_rows >= 0], minlength=len(package_ids))
    shares = sp.diags(1.0 / np.maximum(n_stickers, 1).astype(np.float32)) @ counts
    return sp.csr_matrix(shares, dtype=np.float32), label_ids


def label_demand(train: sp.csr_matrix, user_cluster: np.ndarray, n_clusters: int,
                 shares: sp.csr_matrix) -> np.ndarray:
    """Label demand of each cluster, as shares of its total (rows sum to 1 or 0).

    Parameters
    ----------
    train : csr_matrix, shape (n_users, n_packages)
        Confidence weights.
    user_cluster : ndarray of int, shape (n_users,)
        Cluster of each matrix row (-1 = leave out).
    shares : csr_matrix, shape (n_packages, n_labels)
        From :func:`package_label_matrix`.

    Returns
    -------
    ndarray of float32, shape (n_clusters, n_labels)
    """
    n_packages = train.shape[1]
    member = np.flatnonzero(user_cluster >= 0)
    by_cluster = member[group_order(user_cluster[member], n_clusters)]
    grouped = train[by_cluster]  # rows grouped by cluster: each cluster is one slice
    ends = np.cumsum(np.bincount(user_cluster[member], minlength=n_clusters))
    bounds = grouped.indptr[np.concatenate([[0], ends])]
    # One bincount per cluster over a package-sized (cache-resident) array: far cheaper
    # than a sparse product or a single scatter into n_clusters × n_packages bins; blocks
    # of clusters bound the memory of the dense per-package sums. ``shares.T`` stays CSC
    # (a free transpose): its product walks the per-package sums in order and scatters
    # into the small label × block result, ~6× faster than CSR's gather of package rows.
    shares_t = sp.csr_matrix(shares).T
    demand = np.zeros((n_clusters, shares.shape[1]), dtype=np.float64)
    block = 64
    for first in range(0, n_clusters, block):
        last = min(first + block, n_clusters)
        per_package = np.empty((last - first, n_packages), dtype=np.float64)
        for c in range(first, last):
            start, stop = bounds[c], bounds[c + 1]
            per_package[c - first] = np.bincount(
                grouped.indices[start:stop], weights=grouped.data[start:stop],
                minlength=n_packages)
        demand[first:last] = np.asarray(shares_t @ per_package.T).T
    total = demand.sum(axis=1, keepdims=True)
    return (demand / np.where(total > 0, total, 1.0)).astype(np.float32)


def holder_label_demand(holders: np.ndarray, shares: sp.csr_matrix) -> np.ndarray:
    """Label demand of each cluster from its holder counts, as shares of its total.

    Each holder of a package spreads one unit of demand over the package's labels in
    proportion to the share of its stickers carrying each label (the job's default: it
    reuses the holder counts the lists are scored from instead of another pass over the
    matrix, as :func:`label_demand` makes with confidence weights).

    Parameters
    ----------
    holders : ndarray, shape (n_clusters, n_packages)
        Users of each cluster holding each package.
    shares : csr_matrix, shape (n_packages, n_labels)
        From :func:`package_label_matrix`.

    Returns
    -------
    ndarray of float32, shape (n_clusters, n_labels)
        Rows sum to 1 (or 0 for a cluster holding nothing).
    """
    # shares.T stays CSC (a free transpose); the product walks the packages in order.
    demand = np.asarray(sp.csr_matrix(shares).T @ np.asarray(holders, dtype=np.float32).T,
                        dtype=np.float64).T
    total = demand.sum(axis=1, keepdims=True)
    return (demand / np.where(total > 0, total, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class CandidateLists:
    """The chosen candidates of every cluster.

    Attributes
    ----------
    packages : ndarray of int32, shape (n_clusters, n)
        Matrix columns (package indices) of each cluster's list, best first.
    scores : ndarray of float32, shape (n_clusters, n)
        The score of each listed package (:func:`cluster_scores`).
    coverage : polars.DataFrame
        One row per (cluster, demanded label): ``cluster_id``, ``label_id``,
        ``demand_share``, ``required``, ``n_available`` (available packages carrying the
        label), ``n_in_top`` (carriers in the plain top-n, before repair),
        ``n_candidates`` (carriers in the final list), ``covered``.
    n_swapped : int
        Packages swapped in by the coverage repair, over all clusters.
    """

    packages: np.ndarray
    scores: np.ndarray
    coverage: pl.DataFrame
    n_swapped: int

    def table(self, package_ids: np.ndarray) -> pl.DataFrame:
        """Long form: ``cluster_id``, ``rank`` (1 = best), ``package_id`` (i32), ``score`` (f32)."""
        k, n = self.packages.shape
        return pl.DataFrame({
            "cluster_id": np.repeat(np.arange(k, dtype=np.int32), n),
            "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), k),
            "package_id": package_ids[self.packages.ravel()].astype(np.int32),
            "score": self.scores.ravel().astype(np.float32),
        })


def top_stable(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest scores, best first, ties in position order.

    The same as ``np.argsort(-scores, kind="stable")[:n]`` in O(len + n log n).
    """
    if n >= len(scores):
        return np.argsort(-scores, kind="stable")[:n]
    threshold = np.partition(scores, len(scores) - n)[len(scores) - n]  # n-th largest
    above = np.flatnonzero(scores > threshold)
    ties = np.flatnonzero(scores == threshold)[: n - len(above)]
    pick = np.concatenate([above, ties])
    return pick[np.argsort(-scores[pick], kind="stable")]


_COVERAGE_SCHEMA = {
    "cluster_id": pl.Int32, "label_id": pl.Int32, "demand_share": pl.Float32,
    "required": pl.Int32, "n_available": pl.Int32, "n_in_top": pl.Int32,
    "n_candidates": pl.Int32, "covered": pl.Boolean,
}


def estimate_shrinkage(n_members: np.ndarray, floor: float = 0.0) -> float:
    """Pseudo-users ``m`` of the segment prior relative to the data: the median cluster.

    With ``m`` = the median number of members with history over the clusters, a median
    cluster's list weighs its own holders and its segments' prior equally, a smaller
    cluster leans on its segments and a bigger one on itself, whatever the log's size:
    the rule scales with the clusters instead of fixing a count on one world (800
    pseudo-users are a whole cluster of 100k users in 128 clusters, but an eighth of one
    of 1M users). ``floor`` keeps ``m`` from falling below a count of users: on a log of
    a few hundred users (MovieLens-100k: clusters of ~59) the median alone trusts the
    clusters' own counts too much (0.85× global popularity; 800 gives 1.02×). The
    in-sample method-of-moments estimate of a beta-binomial prior was tried and dropped:
    the clusters are chosen on the holdings it measures, so it finds 10-20× too little
    shrinkage (README, Stage 1).

    Parameters
    ----------
    n_members : ndarray of int, shape (n_clusters,)
        Users with history in each cluster.
    floor : float
        The least ``m`` returned (``candidates.min_shrinkage``).

    Returns
    -------
    float
        ``max(floor, the median over clusters with members)`` (``floor`` when no cluster
        has any).
    """
    sizes = np.asarray(n_members)
    sizes = sizes[sizes > 0]
    return max(float(floor), float(np.median(sizes)) if len(sizes) else 0.0)


def cluster_scores(
    item_centroids: np.ndarray,
    package_factors: np.ndarray,
    holders: np.ndarray,
    n_members: np.ndarray,
    prior: np.ndarray,
    config: CandidateConfig,
    shrinkage: float | None = None,
) -> np.ndarray:
    """Blended score of every package for every cluster (see the module docstring).

    Parameters
    ----------
    item_centroids : ndarray of float32, shape (n_clusters, d)
    package_factors : ndarray of float32, shape (n_scored, d)
        Factors of the packages to score (the available ones).
    holders : ndarray, shape (n_clusters, n_scored)
        Users of each cluster holding each package (before the split).
    n_members : ndarray of int, shape (n_clusters,)
        Users with history in each cluster.
    prior : ndarray, shape (n_clusters, n_scored)
        Segment prior holder share of each package for each cluster.
    config : CandidateConfig
        ``popularity_blend`` and ``shrinkage``.
    shrinkage : float, optional
        The pseudo-users to use; default ``config.shrinkage``, which must then be a
        number (the job resolves ``"auto"`` with :func:`estimate_shrinkage`).

    Returns
    -------
    ndarray of float32, shape (n_clusters, n_scored)
        The centroid score itself when ``popularity_blend == 0``; the shrunk holder share
        when it is 1; else the blend of both standardised.
    """
    beta = config.popularity_blend
    centroid = np.asarray(item_centroids, dtype=np.float32) @ np.asarray(
        package_factors, dtype=np.float32).T
    if beta == 0:
        return centroid
    if shrinkage is None:
        if not isinstance(config.shrinkage, float | int):
            raise ValueError(f"shrinkage={config.shrinkage!r} must be resolved to a number "
                             "(estimate_shrinkage) before scoring")
        shrinkage = float(config.shrinkage)
    m = np.float32(shrinkage)
    share = np.asarray(holders, dtype=np.float32)
    share += m * np.asarray(prior, dtype=np.float32)
    share /= (np.asarray(n_members, dtype=np.float32) + m)[:, None]
    if beta == 1:
        return share
    out = _standardise(centroid)
    out *= np.float32(1.0 - beta)
    out += np.float32(beta) * _standardise(share)
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (rows of zeros stay zero)."""
    x = x - x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    x /= np.where(std > 0, std, 1.0)
    return x


def select_candidates(
    scores: np.ndarray,
    available: np.ndarray,
    config: CandidateConfig,
    shares: sp.csr_matrix | None = None,
    demand: np.ndarray | None = None,
    label_ids: np.ndarray | None = None,
) -> CandidateLists:
    """Top packages per cluster by score, repaired for label coverage.

    Parameters
    ----------
    scores : ndarray of float32, shape (n_clusters, n_available)
        Score of every available package (columns in ``np.flatnonzero(available)``
        order) for every cluster, e.g. from :func:`cluster_scores`.
    available : ndarray of bool, shape (n_packages,)
        Only these packages may be candidates.
    config : CandidateConfig
    shares : csr_matrix, shape (n_packages, n_labels), optional
        Package → label shares; with ``demand`` and ``label_ids`` enables coverage.
    demand : ndarray of float32, shape (n_clusters, n_labels), optional
    label_ids : ndarray of int32, shape (n_labels,), optional

    Returns
    -------
    CandidateLists
        ``n = min(n_candidates, available packages)`` per cluster.
    """
    avail = np.flatnonzero(available).astype(np.int32)
    if len(avail) == 0:
        raise ValueError("no available package to recommend (packages.available is all false)")
    if scores.shape[1] != len(avail):
        raise ValueError(f"scores has {scores.shape[1]} columns, expected one per available "
                         f"package ({len(avail)})")
    n = min(config.n_candidates, len(avail))
    k = len(scores)
    top_local = np.empty((k, n), dtype=np.int64)

    def top_rows(first: int, last: int) -> None:
        for c in range(first, last):  # partition releases the GIL: slices run in parallel
            top_local[c] = top_stable(scores[c], n)

    map_slices(top_rows, k)
    top_scores = np.take_along_axis(scores, top_local, axis=1).astype(np.float32)
    coverage_on = (shares is not None and demand is not None and label_ids is not None
                   and config.top_labels > 0)
    if not coverage_on:
        return CandidateLists(avail[top_local].astype(np.int32), top_scores,
                              pl.DataFrame(schema=_COVERAGE_SCHEMA), 0)
    assert shares is not None and demand is not None and label_ids is not None
    carrying = sp.csr_matrix(shares[avail])  # available package -> its labels
    carrying.sort_indices()
    carriers_csc = carrying.tocsc()  # label -> available packages carrying it, ascending
    carriers_csc.sort_indices()
    n_carriers = np.diff(carriers_csc.indptr)
    packages = np.empty((k, n), dtype=np.int32)
    out_scores = np.empty((k, n), dtype=np.float32)
    in_top = np.zeros(len(avail), dtype=bool)
    records: dict[str, list[float | int | bool]] = {c: [] for c in _COVERAGE_SCHEMA}
    n_swapped = 0

    def label_pairs(local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(package, label) pairs of the given packages: labels are looked up from the
        short list's side, so no per-label pass over a label's (many) carriers is needed."""
        starts = carrying.indptr[local]
        lengths = carrying.indptr[local + 1] - starts
        return np.repeat(local, lengths), carrying.indices[concat_ranges(starts, lengths)]

    for c in range(k):
        top, top_score, package_scores = top_local[c], top_scores[c], scores[c]
        in_top[top] = True
        order = np.argsort(-demand[c], kind="stable")[: config.top_labels]
        labels = [int(j) for j in order if demand[c, j] >= config.min_label_share
                  and demand[c, j] > 0]
        top_packages, top_labels = label_pairs(top)
        required: dict[int, float] = {}  # local package index -> score
        counted: list[tuple[int, int, int]] = []
        for j in labels:
            start, stop = carriers_csc.indptr[j], carriers_csc.indptr[j + 1]
            need = min(config.min_packages_per_label, int(stop - start))
            hit = np.sort(top_packages[top_labels == j])  # carriers in the top list
            if len(hit) >= need:
                # The top list holds every package above its cut-off: its carriers are the best.
                hit_scores = package_scores[hit]
                pick = np.argsort(-hit_scores, kind="stable")[:need]
                best, best_scores = hit[pick], hit_scores[pick]
            else:
                carriers = carriers_csc.indices[start:stop]
                all_scores = package_scores[carriers]
                pick = top_stable(all_scores, need)
                best, best_scores = carriers[pick], all_scores[pick]
            required.update(zip(best.tolist(), best_scores.tolist(), strict=True))
            counted.append((j, need, len(hit)))
        extra = {p: s for p, s in required.items() if not in_top[p]}
        if extra:
            n_swapped += len(extra)
            keep = [(int(p), float(s)) for p, s in zip(top, top_score, strict=True)]
            # Drop the lowest-ranked top packages that no demanded label needs.
            droppable = [i for i in range(len(keep) - 1, -1, -1) if keep[i][0] not in required]
            dropped = set(droppable[: len(extra)])
            chosen = [pk for i, pk in enumerate(keep) if i not in dropped] + list(extra.items())
            chosen.sort(key=lambda ps: -ps[1])
            packages[c] = [p for p, _ in chosen]
            out_scores[c] = [s for _, s in chosen]
        else:
            packages[c] = top
            out_scores[c] = top_score
        in_top[top] = False
        n_final = np.bincount(label_pairs(packages[c])[1], minlength=carrying.shape[1])
        for j, need, n_hit in counted:
            for column, value in (
                ("cluster_id", c), ("label_id", int(label_ids[j])),
                ("demand_share", float(demand[c, j])), ("required", need),
                ("n_available", int(n_carriers[j])), ("n_in_top", n_hit),
                ("n_candidates", int(n_final[j])), ("covered", int(n_final[j]) >= need),
            ):
                records[column].append(value)
    coverage = pl.DataFrame(records, schema=_COVERAGE_SCHEMA)
    return CandidateLists(avail[packages].astype(np.int32), out_scores, coverage, n_swapped)
