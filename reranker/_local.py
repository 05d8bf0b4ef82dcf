"""Vectorised on-device learning: user-embedding fold-in, local SGD, and scoring of impressions.

Everything here works on a *batch* of simulated devices at once (their sessions
concatenated, sorted by device), so thousands of devices train per second. Per device
``b`` with user embedding ``u_b`` and local weights ``θ_b = (W_b, a_b, b_b, c_b)`` the
log-likelihood of its impressions is ``Σ_s [s_pos − logsumexp_i s_i]`` with
``s_i = v_iᵀ (W_bᵀ u_b + c_b) + a_bᵀ K_i + b_b r_i``; its gradient is

    ∂/∂W = u_b ⊗ g,  ∂/∂c = g,  ∂/∂a = Σ_s (K_pos − E_π K),  ∂/∂b = Σ_s (r_pos − E_π r),
    ∂/∂u = W_b g,    with g = Σ_s (v_pos − E_π v)

— rank one in ``W``, so no (d × d) work per session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reranker._model import ParameterLayout

__all__ = ["LocalTrainingConfig", "fold_in", "local_sgd", "score_impressions"]


@dataclass(frozen=True)
class LocalTrainingConfig:
    """Hyper-parameters of on-device training.

    Attributes
    ----------
    steps : int
        Full-batch gradient steps on the device's impressions per participation.
    learning_rate : float
        Step size for the shared weights.
    embedding_learning_rate : float
        Step size for the personal user embedding.
    proximal : float
        Pull of the local weights toward the global ones (FedProx-style), per step.
    embedding_l2 : float
        Pull of the user embedding toward its ridge fold-in.
    """

    steps: int = 5
    learning_rate: float = 0.5
    embedding_learning_rate: float = 0.2
    proximal: float = 0.01
    embedding_l2: float = 0.1


def fold_in(device_of: np.ndarray, rows: np.ndarray, n_devices: int, factors: np.ndarray,
            gram: np.ndarray, regularization: float, alpha: float) -> np.ndarray:
    """Closed-form ridge fold-in of user embeddings from their history (implicit ALS).

    ``u = (YᵀY + Yₕᵀ(αC)Yₕ + λI)⁻¹ Yₕᵀ(1 + αC)·1`` over the packages ``h`` a device used,
    ``C`` their use counts (Hu, Koren, Volinsky 2008; as implicit's ``recalculate_user``).

    Parameters
    ----------
    device_of : ndarray of int64, shape (S,)
        Device (0 .. n_devices-1) of each used package.
    rows : ndarray of int64, shape (S,)
        Factor row of each used package (``-1`` = unknown, ignored).
    n_devices : int
        B.
    factors : ndarray of float32, shape (n_items, d)
        Stage-1 package factors ``Y``.
    gram : ndarray of float64, shape (d, d)
        ``YᵀY``.
    regularization, alpha : float
        Stage 1's ALS λ and confidence scale α.

    Returns
    -------
    ndarray of float32, shape (B, d)
        Zeros for devices with no known package.
    """
    d = factors.shape[1]
    ok = rows >= 0
    dev, rows = device_of[ok], rows[ok]
    y = factors[rows].astype(np.float64)
    a = np.broadcast_to(gram + regularization * np.eye(d), (n_devices, d, d)).copy()
    np.add.at(a, dev, alpha * y[:, :, None] * y[:, None, :])
    rhs = np.zeros((n_devices, d))
    np.add.at(rhs, dev, alpha * y)
    pairs = np.unique(dev * (factors.shape[0] + 1) + rows)
    np.add.at(rhs, pairs // (factors.shape[0] + 1), factors[pairs % (factors.shape[0] + 1)])
    out = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
    has = np.zeros(n_devices, bool)
    has[dev] = True
    out[~has] = 0.0
    return out.astype(np.float32)


def score_impressions(theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
                      cand_factors: np.ndarray, keyword: np.ndarray, prior: np.ndarray,
                      mask: np.ndarray) -> np.ndarray:
    """Scores (S, n) of impressions; masked (padding) candidates get ``-inf``.

    Parameters
    ----------
    theta : ndarray, shape (P,) or (S, P)
        Global weights, or per-impression weights (a device's local copy).
    users : ndarray, shape (S, d)
        User embedding of each impression's device.
    cand_factors : ndarray, shape (S, n, d)
    keyword : ndarray, shape (S, n, k)
    prior : ndarray, shape (n,)
    mask : ndarray of bool, shape (S, n)
    """
    if theta.ndim == 1:
        w, a, b, c = layout.unpack(theta)
        z = users @ w + c  # row s: W_ᵀ u_s + c, as u_sᵀ W
        scores = np.einsum("snd,sd->sn", cand_factors, z) + keyword @ a + b * prior
    else:
        wb, ab, bb, cb = layout.unpack_batch(theta)
        z = np.einsum("sd,sde->se", users, wb) + cb
        scores = (np.einsum("snd,sd->sn", cand_factors, z)
                  + np.einsum("snk,sk->sn", keyword, ab) + bb[:, None] * prior)
    return np.where(mask, scores, -np.inf)


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def local_sgd(theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
              starts: np.ndarray, cand_factors: np.ndarray, keyword: np.ndarray,
              prior: np.ndarray, mask: np.ndarray, pos: np.ndarray,
              config: LocalTrainingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local training of B devices from θ; returns their weights, embeddings and loss.

    Parameters
    ----------
    theta : ndarray, shape (P,)
        Global weights every device starts from.
    users : ndarray, shape (B, d)
        Each device's user embedding (its fold-in); refined here, stays on the device.
    starts : ndarray of int64, shape (B + 1,)
        Impressions of device ``b`` are ``starts[b]:starts[b+1]`` (each device ≥ 1).
    cand_factors, keyword, prior, mask
        As in :func:`score_impressions`, for the S impressions.
    pos : ndarray of int, shape (S,)
        Position of the sent package (all ``>= 0`` here).

    Returns
    -------
    local : ndarray, shape (B, P)
        Each device's locally trained weights.
    users : ndarray, shape (B, d)
        Refined user embeddings (personal).
    loss : ndarray, shape (B,)
        Mean cross-entropy before training.
    """
    b_ = users.shape[0]
    d = layout.n_factors
    n_imp = np.diff(starts).astype(np.float64)
    dev = np.repeat(np.arange(b_), np.diff(starts))
    local = np.broadcast_to(theta, (b_, theta.size)).astype(np.float64)
    u = users.astype(np.float64)
    u0 = u.copy()
    rows = np.arange(pos.size)
    v_pos = cand_factors[rows, pos]
    k_pos = keyword[rows, pos]
    r_pos = prior[pos]
    loss = np.zeros(b_)
    for step in range(config.steps):
        scores = score_impressions(local[dev], layout, u[dev], cand_factors, keyword,
                                   prior, mask)
        pi = _softmax(scores)
        if step == 0:
            logp = scores[rows, pos] - np.log(np.exp(scores - scores.max(1, keepdims=True))
                                              .sum(1)) - scores.max(1)
            loss = -np.add.reduceat(logp, starts[:-1]) / n_imp
        g_v = np.add.reduceat(v_pos - np.einsum("sn,snd->sd", pi, cand_factors),
                              starts[:-1]) / n_imp[:, None]
        g_k = np.add.reduceat(k_pos - np.einsum("sn,snk->sk", pi, keyword),
                              starts[:-1]) / n_imp[:, None]
        g_r = np.add.reduceat(r_pos - pi @ prior, starts[:-1]) / n_imp
        w, _, _, _ = layout.unpack_batch(local)
        g_u = np.einsum("bde,be->bd", w, g_v)
        grad = np.concatenate([(u[:, :, None] * g_v[:, None, :]).reshape(b_, d * d), g_k,
                               g_r[:, None], g_v], axis=1)
        local += config.learning_rate * (grad - config.proximal * (local - theta))
        u += config.embedding_learning_rate * (g_u - config.embedding_l2 * (u - u0))
    return local.astype(np.float32), u.astype(np.float32), loss.astype(np.float32)
