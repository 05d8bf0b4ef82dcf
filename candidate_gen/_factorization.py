"""Matrix factorisation with ``implicit``: ALS by default, BPR for comparison.

implicit runs its own thread pool; as its documentation asks, OpenBLAS/MKL are held to
one thread (``threadpoolctl.threadpool_limits(1, "blas")``) while the model is built and
fitted, or the two pools fight and the fit slows down severalfold. implicit is imported at
module load so that every BLAS it pulls in (scipy's) exists before the limit is applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import structlog
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import bm25_weight
from threadpoolctl import threadpool_limits

from candidate_gen._config import ALSConfig
from data import progress

__all__ = ["FactorModel", "confidence_matrix", "fit_factors", "make_model"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FactorModel:
    """Fitted factors; ``user_factors @ package_factors.T`` scores packages for users.

    Attributes
    ----------
    user_factors : ndarray of float32, shape (n_users, d)
    package_factors : ndarray of float32, shape (n_packages, d)
        ``d`` is ``factors`` for ALS and ``factors + 1`` for BPR (a bias column).
    model : implicit model
        The fitted implicit model (used for per-user top-k in the evaluation).
    seconds : float
        Wall time of ``fit``.
    """

    user_factors: np.ndarray
    package_factors: np.ndarray
    model: Any
    seconds: float


def confidence_matrix(train: sp.csr_matrix, config: ALSConfig) -> sp.csr_matrix:
    """ALS confidences of observed pairs (Hu, Koren & Volinsky 2008), per ``confidence``.

    ``linear``: ``1 + alpha·w``; ``log``: ``1 + alpha·log(1 + w)``; ``bm25``:
    ``1 + alpha·bm25(w)`` with implicit's :func:`~implicit.nearest_neighbours.bm25_weight`
    (``bm25_k1``, ``bm25_b``). implicit uses the stored value itself as the confidence
    (unobserved pairs count 1), so a decayed weight below 1 would make an observed package
    count *less* than an unobserved one; adding 1 keeps every observed pair above the
    unobserved baseline. BPR gets ``train`` unchanged (it only reads which pairs exist).

    Parameters
    ----------
    train : csr_matrix of float32, shape (n_users, n_packages)
        Confidence weights (>= 0).
    config : ALSConfig

    Returns
    -------
    csr_matrix of float32, same shape and sparsity
    """
    if config.algorithm == "bpr":
        return train
    if config.confidence == "bm25":
        weighted = sp.csr_matrix(bm25_weight(train, K1=config.bm25_k1, B=config.bm25_b))
        weighted.sort_indices()
        data = weighted.data.astype(np.float32)
        data *= np.float32(config.alpha)
        data += np.float32(1.0)
        return sp.csr_matrix((data, weighted.indices, weighted.indptr), shape=train.shape,
                             copy=False)
    if config.confidence == "log":
        data = np.log1p(train.data, dtype=np.float32)
        data *= np.float32(config.alpha)
    else:
        data = np.multiply(train.data, np.float32(config.alpha), dtype=np.float32)
    data += np.float32(1.0)
    # Shares the index arrays with ``train`` (read-only use by implicit): no copy of them.
    return sp.csr_matrix((data, train.indices, train.indptr), shape=train.shape, copy=False)


def make_model(config: ALSConfig, seed: int) -> Any:
    """An unfitted CPU implicit model for ``config`` (build it under one BLAS thread).

    The model is fed :func:`confidence_matrix`, so implicit's own ``alpha`` stays 1.
    """
    if config.algorithm == "bpr":
        return BayesianPersonalizedRanking(
            factors=config.factors, learning_rate=config.learning_rate,
            regularization=config.regularization, iterations=config.iterations,
            num_threads=config.num_threads, random_state=seed,
        )
    return AlternatingLeastSquares(
        factors=config.factors, regularization=config.regularization, alpha=1.0,
        iterations=config.iterations, num_threads=config.num_threads, random_state=seed,
    )


def fit_factors(
    train: sp.csr_matrix, config: ALSConfig, seed: int, *, show_progress: bool = False
) -> FactorModel:
    """Fit ALS (or BPR) on the train matrix.

    Parameters
    ----------
    train : scipy.sparse.csr_matrix of float32, shape (n_users, n_packages)
        Interaction weights; ALS fits :func:`confidence_matrix` of them, BPR only uses
        which entries are non-zero.
    config : ALSConfig
    seed : int
        Seeds the initial factors.
    show_progress : bool
        Show a progress bar over iterations.
    """
    with threadpool_limits(1, "blas"), progress(
        f"{config.algorithm.upper()} fit", total=config.iterations, show=show_progress
    ) as bar:
        model = make_model(config, seed)
        start = time.perf_counter()
        model.fit(confidence_matrix(train, config), show_progress=False,
                  callback=lambda *_: bar.advance())
        seconds = time.perf_counter() - start
    user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    package_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    log.info("factorised", algorithm=config.algorithm, factors=config.factors,
             iterations=config.iterations, seconds=round(seconds, 2))
    return FactorModel(user_factors, package_factors, model, seconds)
