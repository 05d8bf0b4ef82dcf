"""The on-device reranking model: a bilinear user × package score plus keyword and prior terms.

For one keystroke the phone holds its personal user embedding ``u`` (d,), the
candidates' stage-1 package factors ``V`` (n, d), their keyword features ``K`` (n, k)
and the stage-1 rank prior ``r`` (n,). The score of candidate ``i`` is

    s_i = uᵀ W v_i + aᵀ K_i + b r_i + cᵀ v_i

with shared (global) weights ``θ = [vec(W) (d²), a (k), b (1), c (d)]``, P = d² + k + 1 + d
parameters. Equivalently ``s_i = θ · φ_i`` with the feature map
``φ_i = [vec(u v_iᵀ), K_i, r_i, v_i]``; :class:`StickerReranker` is the scikit-learn
estimator over ``φ`` (the form skl2onnx converts), and :func:`score_candidates` the
factorised numpy form ``V (Wᵀu + c) + K a + b r`` that never materialises ``φ``.
Training minimises the listwise softmax cross-entropy of the sent package among the
candidates shown (one group per impression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from reranker._errors import RerankerInputError

__all__ = [
    "ParameterLayout",
    "StickerReranker",
    "check_inputs",
    "feature_map",
    "initial_parameters",
    "rank_prior",
    "score_candidates",
    "score_row",
]


@dataclass(frozen=True)
class ParameterLayout:
    """Where each shared weight lives in the flat parameter vector θ.

    Attributes
    ----------
    n_factors : int
        d, the stage-1 factor dimension.
    n_keyword_features : int
        k, the number of keyword features per candidate.
    """

    n_factors: int
    n_keyword_features: int
    n_history_features: int = 0

    @property
    def n_parameters(self) -> int:
        """P = d² + k + 1 + d + h."""
        d, k = self.n_factors, self.n_keyword_features
        return d * d + k + 1 + d + self.n_history_features

    @property
    def package_level(self) -> ParameterLayout:
        """The layout without history weights: θ[:P₀] of a row model is a package model.

        History weights ``e`` come last in θ, so a package-level consumer (the old
        per-package row) reads the prefix of a row model's θ.
        """
        return ParameterLayout(self.n_factors, self.n_keyword_features)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """Views ``W`` (d, d), ``a`` (k,), ``b`` (scalar), ``c`` (d,) of θ (P,)."""
        d, k = self.n_factors, self.n_keyword_features
        w = theta[: d * d].reshape(d, d)
        a = theta[d * d: d * d + k]
        b = float(theta[d * d + k])
        c = theta[d * d + k + 1: d * d + k + 1 + d]
        return w, a, b, c

    def history_weights(self, theta: np.ndarray) -> np.ndarray:
        """View ``e`` (h,) of θ (P,): the weights of the on-device history features."""
        return theta[self.n_parameters - self.n_history_features: self.n_parameters]

    def unpack_batch(self, theta: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of a batch θ (B, P): W (B, d, d), a (B, k), b (B,), c (B, d)."""
        d, k = self.n_factors, self.n_keyword_features
        b_ = theta.shape[0]
        return (theta[:, : d * d].reshape(b_, d, d), theta[:, d * d: d * d + k],
                theta[:, d * d + k], theta[:, d * d + k + 1: d * d + k + 1 + d])

    def pack(self, w: np.ndarray, a: np.ndarray, b: float, c: np.ndarray,
             e: np.ndarray | None = None) -> np.ndarray:
        """θ (P,) float32 from its parts (``e`` (h,) defaults to zeros)."""
        e_ = np.zeros(self.n_history_features) if e is None else np.ravel(e)
        if e_.shape != (self.n_history_features,):
            raise RerankerInputError(f"history weights have shape {e_.shape}, expected "
                                     f"({self.n_history_features},)")
        return np.concatenate([np.ravel(w), np.ravel(a), [b], np.ravel(c), e_]
                              ).astype(np.float32)


def rank_prior(ranks: np.ndarray) -> np.ndarray:
    """Stage-1 rank prior ``-log1p(rank)`` (rank 0 = best), shape as ``ranks``, float32."""
    return (-np.log1p(np.asarray(ranks, dtype=np.float32))).astype(np.float32)


def initial_parameters(layout: ParameterLayout, keyword_weights: np.ndarray | None = None,
                       prior_weight: float = 1.0) -> np.ndarray:
    """Starting global weights: keyword match first, then stage-1 order; no personal term.

    With ``W = 0`` and ``c = 0`` the model reproduces the control arm (keyword-matched
    candidates in stage-1 order); federated training learns the personal terms.
    """
    d, k = layout.n_factors, layout.n_keyword_features
    a = np.zeros(k, np.float32)
    if keyword_weights is not None:
        a[:] = keyword_weights
    elif k:
        a[0] = 8.0  # first keyword feature: best match strength
    return layout.pack(np.zeros((d, d)), a, prior_weight, np.zeros(d),
                       np.zeros(layout.n_history_features))


def check_inputs(user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
                 keyword_features: np.ndarray, prior: np.ndarray,
                 layout: ParameterLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate one keystroke's inputs; return them as float32 arrays.

    Raises
    ------
    RerankerInputError
        Naming the input, its shape and the expected shape, or non-finite values.
    """
    d, k = layout.n_factors, layout.n_keyword_features
    u = np.asarray(user_embedding, dtype=np.float32)
    v = np.asarray(candidate_embeddings, dtype=np.float32)
    kf = np.asarray(keyword_features, dtype=np.float32)
    r = np.asarray(prior, dtype=np.float32)
    if u.shape != (d,):
        raise RerankerInputError(f"user_embedding has shape {u.shape}, expected ({d},)")
    if v.ndim != 2 or v.shape[1] != d:
        raise RerankerInputError(
            f"candidate_embeddings has shape {v.shape}, expected (n_candidates, {d})")
    n = v.shape[0]
    if kf.shape != (n, k):
        raise RerankerInputError(f"keyword_features has shape {kf.shape}, expected ({n}, {k})")
    if r.shape != (n,):
        raise RerankerInputError(f"prior has shape {r.shape}, expected ({n},)")
    for name, arr in (("user_embedding", u), ("candidate_embeddings", v),
                      ("keyword_features", kf), ("prior", r)):
        if not np.isfinite(arr).all():
            raise RerankerInputError(f"{name} contains NaN or infinite values")
    return u, v, kf, r


def score_candidates(theta: np.ndarray, layout: ParameterLayout, user_embedding: np.ndarray,
                     candidate_embeddings: np.ndarray, keyword_features: np.ndarray,
                     prior: np.ndarray) -> np.ndarray:
    """Scores (n,) float32 of one keystroke's candidates (inputs assumed valid).

    ``V (Wᵀu + c) + K a + b r`` — the same numbers as ``φ @ θ`` without building φ.
    """
    w, a, b, c = layout.unpack(theta)
    z = w.T @ user_embedding + c
    return (candidate_embeddings @ z + keyword_features @ a + b * prior).astype(np.float32)


def score_row(theta: np.ndarray, layout: ParameterLayout, user_embedding: np.ndarray,
              candidate_embeddings: np.ndarray, keyword_features: np.ndarray,
              prior: np.ndarray, history_features: np.ndarray) -> np.ndarray:
    """Scores (n,) float32 of one keystroke's sticker candidates (numpy reference).

    ``V (Wᵀu + c) + K a + b r + H e``; ``history_features`` (n, h).
    """
    base = score_candidates(theta, layout, user_embedding, candidate_embeddings,
                            keyword_features, prior)
    return (base + history_features @ layout.history_weights(theta)).astype(np.float32)


def feature_map(user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
                keyword_features: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """φ (n, P) float32: ``[vec(u v_iᵀ), K_i, r_i, v_i]`` per candidate (row-major vec)."""
    n, d = candidate_embeddings.shape
    outer = (user_embedding[None, :, None] * candidate_embeddings[:, None, :]).reshape(n, d * d)
    return np.concatenate(
        [outer, keyword_features, prior[:, None], candidate_embeddings], axis=1
    ).astype(np.float32)


def _group_softmax(scores: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Softmax within contiguous groups; ``starts`` (G,) are the groups' first rows."""
    group_max = np.maximum.reduceat(scores, starts)
    sizes = np.diff(np.append(starts, scores.size))
    e = np.exp(scores - np.repeat(group_max, sizes))
    return e / np.repeat(np.add.reduceat(e, starts), sizes)


class StickerReranker(BaseEstimator):
    """Listwise softmax reranker over the feature map φ (scikit-learn estimator).

    ``X`` rows are candidates (φ features, see :func:`feature_map`), ``y`` marks the
    sent candidate of each impression (exactly one 1 per group), ``groups`` gives each
    row's impression id (rows of a group contiguous). ``decision_function`` returns
    ``X @ coef_ + intercept_``.

    Parameters
    ----------
    n_factors : int
        d, the stage-1 factor dimension.
    n_keyword_features : int
        k, the number of keyword features.
    learning_rate : float
        SGD step size.
    epochs : int
        Passes over the data in :meth:`fit`.
    batch_groups : int
        Impressions per SGD step.
    l2 : float
        L2 penalty on the weights.
    random_state : int or None
        Seed of the shuffling of impressions.

    Attributes
    ----------
    coef_ : ndarray of shape (P,), float32
        θ, the shared weights.
    intercept_ : float
        Always 0 (a constant does not change a ranking); kept for converters.
    n_features_in_ : int
        P.
    """

    def __init__(self, n_factors: int = 32, n_keyword_features: int = 7,
                 learning_rate: float = 0.05, epochs: int = 5, batch_groups: int = 256,
                 l2: float = 1e-4, random_state: int | None = None) -> None:
        self.n_factors = n_factors
        self.n_keyword_features = n_keyword_features
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_groups = batch_groups
        self.l2 = l2
        self.random_state = random_state

    @property
    def layout(self) -> ParameterLayout:
        """The parameter layout implied by ``n_factors`` and ``n_keyword_features``."""
        return ParameterLayout(self.n_factors, self.n_keyword_features)

    @classmethod
    def from_parameters(cls, theta: np.ndarray, layout: ParameterLayout,
                        **params: object) -> StickerReranker:
        """A fitted estimator whose weights are θ (P,)."""
        est = cls(n_factors=layout.n_factors, n_keyword_features=layout.n_keyword_features,
                  **params)  # type: ignore[arg-type]
        theta = np.asarray(theta, dtype=np.float32)
        if theta.shape != (layout.n_parameters,):
            raise RerankerInputError(
                f"parameters have shape {theta.shape}, expected ({layout.n_parameters},)")
        est.coef_ = theta.copy()
        est.intercept_ = 0.0
        est.n_features_in_ = layout.n_parameters
        return est

    def _validate(self, X: np.ndarray, y: np.ndarray | None = None,
                  groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        p = self.layout.n_parameters
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != p:
            raise RerankerInputError(f"X has shape {X.shape}, expected (n_rows, {p}) for "
                                     f"n_factors={self.n_factors}, "
                                     f"n_keyword_features={self.n_keyword_features}")
        if not np.isfinite(X).all():
            raise RerankerInputError("X contains NaN or infinite values")
        if y is None or groups is None:
            return X, None, None
        y = np.asarray(y)
        groups = np.asarray(groups)
        if y.shape != (X.shape[0],) or groups.shape != (X.shape[0],):
            raise RerankerInputError(f"y {y.shape} and groups {groups.shape} should have shape "
                                     f"({X.shape[0]},)")
        if X.shape[0] and np.any(np.diff(groups) < 0):
            raise RerankerInputError("rows of each group should be contiguous, groups sorted")
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if X.shape[0] else \
            np.array([], dtype=np.int64)
        per_group = np.add.reduceat((y == 1).astype(np.int64), starts) if starts.size else starts
        if np.any(per_group != 1):
            bad = int(np.sum(per_group != 1))
            raise RerankerInputError(f"{bad} group(s) do not have exactly one sent row (y == 1)")
        return X, y.astype(np.int8), starts

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> StickerReranker:
        """Fit θ from scratch (keyword-first initialisation) by ``epochs`` of SGD."""
        self.coef_ = initial_parameters(self.layout)
        self.intercept_ = 0.0
        self.n_features_in_ = self.layout.n_parameters
        for _ in range(self.epochs):
            self._epoch(X, y, groups)
        return self

    def partial_fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> StickerReranker:
        """One epoch of SGD from the current weights (initialising them if unfitted)."""
        if not hasattr(self, "coef_"):
            self.coef_ = initial_parameters(self.layout)
            self.intercept_ = 0.0
            self.n_features_in_ = self.layout.n_parameters
        self._epoch(X, y, groups)
        return self

    def _epoch(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        X, y_, starts = self._validate(X, y, groups)
        assert y_ is not None and starts is not None
        rng = np.random.default_rng(self.random_state)
        ends = np.append(starts[1:], X.shape[0])
        order = rng.permutation(starts.size)
        for lo in range(0, order.size, self.batch_groups):
            sel = order[lo: lo + self.batch_groups]
            rows = np.concatenate([np.arange(starts[g], ends[g]) for g in sel])
            sizes = ends[sel] - starts[sel]
            local_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            xb = X[rows]
            pi = _group_softmax(xb @ self.coef_, local_starts)
            # gradient of mean cross-entropy: E_pi[phi] - phi_sent, per group
            grad = (pi - y_[rows]) @ xb / sel.size + self.l2 * self.coef_
            self.coef_ = (self.coef_ - self.learning_rate * grad).astype(np.float32)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores (n_rows,) float32 = ``X @ coef_``."""
        check_is_fitted(self, "coef_")
        X, _, _ = self._validate(X)
        return (X @ self.coef_ + self.intercept_).astype(np.float32)

    def predict_proba(self, X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Probability (n_rows,) of each row being the one sent, softmax within its group.

        Without ``groups`` all rows form one impression.
        """
        scores = self.decision_function(X)
        if groups is None:
            starts = np.array([0])
        else:
            g = np.asarray(groups)
            starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        return _group_softmax(scores.astype(np.float64), starts)
