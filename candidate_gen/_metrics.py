"""Offline metrics on the time-based holdout: recall@k of three kinds of list.

For each evaluation user, recall@k = |held-out packages ∩ list[:k]| / |held-out packages|,
averaged over users. Lists compared:

* ``cluster``: the user's cluster list (shared by the cluster; owned packages stay in);
* ``cold_start``: the list of the cluster the user's features alone would assign;
* ``popularity``: the k available packages with the most train users;
* ``als_user``: the user's own top-k from the factor model over available packages,
  excluding packages already in the user's train history (an upper bound for a shared
  list: held-out packages are never in train, so excluding them costs it nothing).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from candidate_gen._matrix import Holdout
from candidate_gen._search import search

__all__ = ["list_recall", "popularity_top", "recall_report", "user_top_k"]


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
               owned: sp.csr_matrix, k: int) -> np.ndarray:
    """Each user's own top-k available packages, excluding those they own (faiss search).

    Parameters
    ----------
    user_factors : ndarray of float32, shape (n, d)
    package_factors : ndarray of float32, shape (n_packages, d)
    available : ndarray of bool, shape (n_packages,)
    owned : csr_matrix, shape (n, n_packages)
        Packages to exclude per user (their train history).
    k : int

    Returns
    -------
    ndarray of int64, shape (n, k)
        Package indices, best first; -1 pads rows with fewer than ``k`` candidates.
    """
    avail = np.flatnonzero(available)
    index = faiss.IndexFlatIP(package_factors.shape[1])
    index.add(np.ascontiguousarray(package_factors[avail], dtype=np.float32))
    queries = np.ascontiguousarray(user_factors, dtype=np.float32)
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


def popularity_top(train: sp.csr_matrix, available: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` available packages with the most train users, most popular first (int32)."""
    users_per_package = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
    users_per_package[~available] = -1.0
    order = np.argsort(-users_per_package, kind="stable")
    return order[: min(k, int(available.sum()))].astype(np.int32)


def recall_report(
    holdout: Holdout,
    train: sp.csr_matrix,
    available: np.ndarray,
    cluster_lists: np.ndarray,
    user_cluster: np.ndarray,
    cold_cluster: np.ndarray,
    user_factors: np.ndarray,
    package_factors: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """Recall@k of cluster lists, cold-start lists, popularity and per-user ALS.

    Parameters
    ----------
    holdout : Holdout
    train : csr_matrix, shape (n_users, n_packages)
    available : ndarray of bool, shape (n_packages,)
    cluster_lists : ndarray of int32, shape (n_clusters, n)
        Package indices of each cluster's candidates, best first.
    user_cluster : ndarray of int32, shape (n_users,)
        Cluster of every matrix row.
    cold_cluster : ndarray of int32, shape (n_eval,)
        Cluster each evaluation user would get from features alone.
    user_factors : ndarray of float32, shape (n_users, d)
    package_factors : ndarray of float32, shape (n_packages, d)
        The fitted factors; give each user's own top-k.
    k : int
        Cut-off, lowered to the cluster lists' length if they are shorter.

    Returns
    -------
    dict
        ``k``, ``eval_users``, ``held_out_pairs``, ``recall_cluster``,
        ``recall_cold_start``, ``recall_popularity``, ``recall_als_user`` (all recall@k)
        and ``cluster_vs_popularity`` (ratio).
    """
    rows, test = holdout.rows, holdout.test
    k = min(k, cluster_lists.shape[1])  # every list compared has the cluster lists' length
    lists = cluster_lists[:, :k]
    recall_cluster = list_recall(test, lists, user_cluster[rows])
    recall_cold = list_recall(test, lists, cold_cluster)
    popular = popularity_top(train, available, k)
    recall_popular = list_recall(test, popular[None, :], np.zeros(len(rows), dtype=np.int64))
    own = user_top_k(user_factors[rows], package_factors, available, train[rows], k)
    recall_own = list_recall(test, own, np.arange(len(rows)))
    return {
        "k": k,
        "eval_users": len(rows),
        "held_out_pairs": int(test.nnz),
        "recall_cluster": round(recall_cluster, 5),
        "recall_cold_start": round(recall_cold, 5),
        "recall_popularity": round(recall_popular, 5),
        "recall_als_user": round(recall_own, 5),
        "cluster_vs_popularity": round(recall_cluster / recall_popular, 3)
        if recall_popular > 0 else None,
    }
