"""Offline metrics forward in time: recall@k of the cluster lists and of every baseline.

For each evaluation user, recall@k = |new packages ∩ list[:k]| / |new packages|, averaged
over users, where the new packages are those the user acquires in the evaluation window
and did not hold before the split. Every list is built from the train matrix alone
(interactions before the split). Lists compared (:data:`LISTS`):

* ``cluster_lists``: the user's cluster list (shared; owned packages stay in);
* ``global_popularity``: the k available packages with the most train users;
* ``language_popularity``: the same within the user's language;
* ``segment_popularity``: the same within the user's segment (language × region × age);
* ``demographics_assignment``: the list of the cluster the user's features alone assign;
* ``own_factorisation_top_k``: the user's own top-k from the factor model, excluding the
  packages they already hold: standardised factor scores plus ``als.popularity_prior``
  times standardised log global popularity (:func:`user_top_k`). Not a shareable list,
  and not an upper bound of one: it is what the factorisation predicts for one person.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from candidate_gen._candidates import top_stable
from candidate_gen._matrix import Holdout, group_order
from candidate_gen._search import map_slices, search

__all__ = [
    "BASELINES",
    "LISTS",
    "aggregate_groups",
    "evaluation_top_k",
    "group_popularity_top",
    "holder_counts",
    "list_recall",
    "popularity_top",
    "recall_report",
    "top_of_counts",
    "user_top_k",
]


def list_recall(test: sp.csr_matrix, lists: np.ndarray, list_of_user: np.ndarray) -> float:
    """Mean recall of shared lists.

    Parameters
    ----------
    test : csr_matrix, shape (n_eval, n_packages)
        Held-out pairs (non-zero entries).
    lists : ndarray of int, shape (n_lists, k)
        Package indices of each list (-1 = empty slot).
    list_of_user : ndarray of int, shape (n_eval,)
        Which list each evaluation user gets.

    Returns
    -------
    float
        Mean over users with at least one held-out package.
    """
    n_packages = test.shape[1]
    keys = (np.arange(len(lists), dtype=np.int64)[:, None] * n_packages + lists).ravel()
    keys = np.sort(keys[lists.ravel() >= 0])
    user = np.repeat(np.arange(test.shape[0]), np.diff(test.indptr))
    pair_keys = list_of_user[user].astype(np.int64) * n_packages + test.indices
    pos = np.searchsorted(keys, pair_keys)
    pos[pos >= len(keys)] = 0
    hit = keys[pos] == pair_keys if len(keys) else np.zeros(len(pair_keys), dtype=bool)
    return _mean_recall(hit, user, test)


def _mean_recall(hit: np.ndarray, user: np.ndarray, test: sp.csr_matrix) -> float:
    n_test = np.diff(test.indptr)
    hits = np.bincount(user, weights=hit.astype(np.float64), minlength=test.shape[0])
    ok = n_test > 0
    return float(np.mean(hits[ok] / n_test[ok])) if ok.any() else float("nan")


def user_top_k(user_factors: np.ndarray, package_factors: np.ndarray, available: np.ndarray,
               owned: sp.csr_matrix, k: int, popularity: np.ndarray | None = None,
               popularity_prior: float = 0.0) -> np.ndarray:
    """Each user's own top-k available packages, excluding those they own (faiss search).

    A user's score of package ``p`` is ``x_u · q_p / σ_u + w · z_p``: the factor score
    standardised over the available packages (``σ_u² = x_uᵀ Cov(q) x_u``; the per-user
    mean does not change the order) plus ``w = popularity_prior`` times ``z_p``, the
    standardised ``log(1 + popularity)``. Both terms are one inner product of vectors
    with one more dimension, so one exact faiss search ranks them.

    Parameters
    ----------
    user_factors : ndarray of float32, shape (n, d)
    package_factors : ndarray of float32, shape (n_packages, d)
    available : ndarray of bool, shape (n_packages,)
    owned : csr_matrix, shape (n, n_packages)
        Packages to exclude per user (their train history).
    k : int
    popularity : ndarray, shape (n_packages,), optional
        Holders of each package (needed when ``popularity_prior > 0``).
    popularity_prior : float
        ``w`` above; 0 ranks by the raw factor score ``x_u · q_p``.

    Returns
    -------
    ndarray of int64, shape (n, k)
        Package indices, best first; -1 pads rows with fewer than ``k`` candidates.
    """
    avail = np.flatnonzero(available)
    items = np.ascontiguousarray(package_factors[avail], dtype=np.float32)
    queries = np.ascontiguousarray(user_factors, dtype=np.float32)
    if popularity_prior > 0 and popularity is not None and len(avail) > 1:
        log_pop = np.log1p(np.asarray(popularity, dtype=np.float64)[avail])
        spread = log_pop.std()
        z = (log_pop - log_pop.mean()) / (spread if spread > 0 else 1.0)
        centred = items.astype(np.float64) - items.mean(axis=0)
        cov = centred.T @ centred / len(avail)
        sigma = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", queries, cov, queries), 0.0))
        scale = np.where(sigma > 0, 1.0 / np.maximum(sigma, 1e-30), 0.0)
        queries = np.hstack([queries * scale[:, None].astype(np.float32),
                             np.full((len(queries), 1), popularity_prior, np.float32)])
        items = np.hstack([items, z[:, None].astype(np.float32)])
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    n_owned = np.diff(owned.indptr)
    # Over-fetch by what most users own, then drop owned packages; the few heavier users
    # who come up short are searched again with their own reach, so the answer is exact.
    typical = int(np.percentile(n_owned, 95)) if len(n_owned) else 0
    out = _top_unowned(index, avail, queries, owned, package_factors.shape[0], k,
                       min(len(avail), k + typical))
    short = np.flatnonzero((out[:, -1] < 0) & (k + n_owned > k + typical)
                           & (len(avail) > k + typical))
    if len(short):
        reach = min(len(avail), k + int(n_owned[short].max()))
        out[short] = _top_unowned(index, avail, queries[short], owned[short],
                                  package_factors.shape[0], k, reach)
    return out


def _top_unowned(index: faiss.Index, avail: np.ndarray, queries: np.ndarray,
                 owned: sp.csr_matrix, n_packages: int, k: int, reach: int) -> np.ndarray:
    _, local = search(index, queries, reach)
    found = np.where(local >= 0, avail[np.maximum(local, 0)], -1)
    owned_keys = np.sort(
        np.repeat(np.arange(owned.shape[0], dtype=np.int64), np.diff(owned.indptr)) * n_packages
        + owned.indices
    )
    keys = np.arange(len(found), dtype=np.int64)[:, None] * n_packages + found
    pos = np.searchsorted(owned_keys, keys)
    pos[pos >= len(owned_keys)] = 0
    drop = (found < 0) | (owned_keys[pos] == keys if len(owned_keys) else False)
    keep = ~drop & (np.cumsum(~drop, axis=1) <= k)
    out = np.full((len(found), k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    slot = np.cumsum(keep, axis=1)[rows, cols] - 1
    out[rows, slot] = found[rows, cols]
    return out


def evaluation_top_k(holdout: Holdout, train: sp.csr_matrix, available: np.ndarray,
                     user_factors: np.ndarray, package_factors: np.ndarray, k: int,
                     popularity_prior: float = 0.0) -> np.ndarray:
    """The evaluation users' own top-k (:func:`user_top_k`) against global popularity.

    Needs only the factors and the train matrix, not the clusters: the job searches it
    beside its cluster and candidates steps.

    Parameters
    ----------
    holdout : Holdout
        ``rows`` are the users searched.
    train : csr_matrix, shape (n_users, n_packages)
        Canonical (one entry per held pair): its column counts are each package's holders.
    available : ndarray of bool, shape (n_packages,)
    user_factors : ndarray of float32, shape (n_users, d)
    package_factors : ndarray of float32, shape (n_packages, d)
    k : int
    popularity_prior : float

    Returns
    -------
    ndarray of int64, shape (len(holdout.rows), k)
    """
    rows = holdout.rows
    holders = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
    return user_top_k(user_factors[rows], package_factors, available, train[rows], k,
                      holders, popularity_prior)


def popularity_top(train: sp.csr_matrix, available: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` available packages with the most train users, most popular first (int32)."""
    return group_popularity_top(train, np.zeros(train.shape[0], dtype=np.int64), 1,
                                available, k)[0]


def group_popularity_top(train: sp.csr_matrix, group: np.ndarray, n_groups: int,
                         available: np.ndarray, k: int) -> np.ndarray:
    """Each group's ``k`` available packages with the most train users in the group.

    Parameters
    ----------
    train : csr_matrix, shape (n_users, n_packages)
    group : ndarray of int, shape (n_users,)
        Group of every user, in ``[0, n_groups)``.
    n_groups : int
    available : ndarray of bool, shape (n_packages,)
    k : int

    Returns
    -------
    ndarray of int32, shape (n_groups, min(k, available packages))
        Most popular first; ties by package index.
    """
    return top_of_counts(holder_counts(train, group, n_groups), available, k)


def top_of_counts(counts: np.ndarray, available: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` available columns with the highest counts, ties by column (int32).

    ``counts`` (n_groups, n_packages) is left unchanged; returns (n_groups, min(k, n_avail)).
    The same as a stable descending sort cut at ``k``, by partition (O(n_packages) a row).
    """
    avail = np.flatnonzero(available)
    n = min(k, len(avail))
    out = np.empty((len(counts), n), dtype=np.int32)
    for g in range(len(counts)):
        out[g] = avail[top_stable(counts[g, avail], n)]
    return out


def holder_counts(train: sp.csr_matrix, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Distinct users holding each package, per group (float32, shape (n_groups, n_packages)).

    ``group`` (n_users,) may hold -1 for users to leave out. The users' rows are gathered
    group by group and each group's packages counted with one ``bincount`` over a
    package-sized array (cache resident): ~3.5× faster than one scatter into
    ``n_groups × n_packages`` bins on the large world.
    """
    n_packages = train.shape[1]
    group = np.asarray(group, dtype=np.int64)
    member = np.flatnonzero(group >= 0)
    order = member[group_order(group[member], n_groups)]
    grouped = train[order]  # scipy's C++ row gather: each group's rows are one slice
    ends = np.cumsum(np.bincount(group[order], minlength=n_groups))
    bounds = grouped.indptr[np.concatenate([[0], ends])]
    out = np.empty((n_groups, n_packages), dtype=np.float32)

    def count(first: int, last: int) -> None:
        for g in range(first, last):  # bincount releases the GIL: slices run in parallel
            out[g] = np.bincount(grouped.indices[bounds[g]:bounds[g + 1]],
                                 minlength=n_packages)

    map_slices(count, n_groups)
    return out


def aggregate_groups(counts: np.ndarray, parent: np.ndarray, n_parents: int) -> np.ndarray:
    """Sum the rows of ``counts`` into their parent groups.

    Parameters
    ----------
    counts : ndarray, shape (n_groups, n_packages)
        E.g. holder counts per fine segment.
    parent : ndarray of int, shape (n_groups,)
        Parent of every group, in ``[0, n_parents)`` (e.g. the language of each segment).
    n_parents : int

    Returns
    -------
    ndarray of float32, shape (n_parents, n_packages)
    """
    n = len(parent)
    indicator = sp.csr_matrix((np.ones(n, dtype=np.float32), (parent, np.arange(n))),
                              shape=(n_parents, n))
    return np.asarray(indicator @ np.asarray(counts, dtype=np.float32), dtype=np.float32)


LISTS = ("cluster_lists", "global_popularity", "language_popularity", "segment_popularity",
         "demographics_assignment", "own_factorisation_top_k")
"""Names of the lists compared, in table order."""
BASELINES = ("global_popularity", "language_popularity", "segment_popularity",
             "demographics_assignment")
"""The shareable lists that need no behaviour model: the cluster lists must beat the best."""


def recall_report(
    holdout: Holdout,
    train: sp.csr_matrix,
    available: np.ndarray,
    cluster_lists: np.ndarray,
    user_cluster: np.ndarray,
    feature_cluster: np.ndarray,
    user_factors: np.ndarray,
    package_factors: np.ndarray,
    popularity: dict[str, tuple[np.ndarray, np.ndarray]],
    k: int,
    popularity_prior: float = 0.0,
    own_top_k: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recall@k of the cluster lists and of every baseline on the same users.

    Parameters
    ----------
    holdout : Holdout
    train : csr_matrix, shape (n_users, n_packages)
        The fit's matrix (interactions before the split only).
    available : ndarray of bool, shape (n_packages,)
    cluster_lists : ndarray of int32, shape (n_clusters, n)
        Package indices of each cluster's candidates, best first.
    user_cluster : ndarray of int32, shape (n_users,)
        Cluster of every matrix row (from features for users without history).
    feature_cluster : ndarray of int32, shape (n_users,)
        Cluster every user's features alone would assign.
    user_factors : ndarray of float32, shape (n_users, d)
    package_factors : ndarray of float32, shape (n_packages, d)
    popularity : dict
        ``"global"``, ``"language"`` and ``"segment"`` → (holder counts of the train
        matrix per group, shape (n_groups, n_packages); group of every user, (n_users,)).
    k : int
        Cut-off, lowered to the cluster lists' length if they are shorter.
    popularity_prior : float
        Weight of global popularity in each user's own top-k (:func:`user_top_k`).
    own_top_k : ndarray of int64, shape (n_eval, k), optional
        The evaluation users' own top-k (:func:`evaluation_top_k`), when already searched
        (the job searches it while it clusters); default: searched here.

    Returns
    -------
    dict
        ``k``, ``window`` (seconds), ``eval_users``, ``held_out_pairs``, ``recall`` (list
        name → recall@k, see :data:`LISTS`), ``best_baseline``,
        ``cluster_vs_best_baseline``, ``own_vs_global_popularity``, and ``new_users``
        (the same for sampled users without history: their cluster comes from features).
    """
    k = min(k, cluster_lists.shape[1])  # every list compared has the cluster lists' length
    lists = cluster_lists[:, :k]
    popular = {f"{name}_popularity": (top_of_counts(counts, available, k), group)
               for name, (counts, group) in popularity.items()}

    def shared(rows: np.ndarray, test: sp.csr_matrix) -> dict[str, float]:
        out = {"cluster_lists": list_recall(test, lists, user_cluster[rows])}
        for name, (top, group) in popular.items():
            out[name] = list_recall(test, top, group[rows])
        out["demographics_assignment"] = list_recall(test, lists, feature_cluster[rows])
        return out

    rows, test = holdout.rows, holdout.test
    recall = shared(rows, test)
    if own_top_k is not None and own_top_k.shape == (len(rows), k):
        own = own_top_k
    else:
        own = evaluation_top_k(holdout, train, available, user_factors, package_factors, k,
                               popularity_prior)
    recall["own_factorisation_top_k"] = list_recall(test, own, np.arange(len(rows)))
    best = max(BASELINES, key=lambda name: recall[name])
    report: dict[str, Any] = {
        "k": k,
        "window": [round(holdout.window[0], 3), round(holdout.window[1], 3)],
        "eval_users": len(rows),
        "held_out_pairs": int(test.nnz),
        "recall": {name: round(recall[name], 5) for name in LISTS},
        "best_baseline": best,
        "cluster_vs_best_baseline": _ratio(recall["cluster_lists"], recall[best]),
        "own_vs_global_popularity": _ratio(recall["own_factorisation_top_k"],
                                           recall["global_popularity"]),
    }
    if len(holdout.new_rows):
        new = shared(holdout.new_rows, holdout.new_test)
        new.pop("demographics_assignment")  # the cluster list itself, for these users
        report["new_users"] = {
            "eval_users": len(holdout.new_rows),
            "held_out_pairs": int(holdout.new_test.nnz),
            "recall": {name: round(value, 5) for name, value in new.items()},
        }
    return report


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None
