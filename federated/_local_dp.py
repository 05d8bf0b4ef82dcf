"""Device-side local differential privacy: clip each update, then add Gaussian noise.

Pure functions. The Gaussian mechanism on L2-clipped updates follows DP-FedAvg
(McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent
Language Models", Alg. 1) with the noise added on the device instead of the server, as
in local DP. Noise comes only from the ``rng`` passed in, never from a global RNG.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_gaussian_noise", "clip_deltas", "l2_norms"]


def l2_norms(deltas: np.ndarray) -> np.ndarray:
    """Row L2 norms of ``deltas`` (B, P), computed in float64; shape (B,)."""
    d = deltas.astype(np.float64, copy=False)
    return np.sqrt(np.einsum("bp,bp->b", d, d))


def clip_deltas(deltas: np.ndarray, clip_norm: float) -> np.ndarray:
    """Scale each row of ``deltas`` (B, P) to L2 norm at most ``clip_norm`` (C).

    ``delta * min(1, C / ||delta||)`` (McMahan et al. 2018, eq. "flat clipping").
    Returns a new float32 array of shape (B, P); rows already within C are unchanged.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm={clip_norm} should be > 0")
    norms = l2_norms(deltas)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-30))
    # float32 rounding can land a hair above C; shave it so the bound is exact.
    clipped = (deltas * scale[:, None]).astype(np.float32)
    over = l2_norms(clipped) > clip_norm
    if over.any():
        clipped[over] *= np.float32(1.0 - 1e-6)
    return clipped


def add_gaussian_noise(deltas: np.ndarray, clip_norm: float, noise_multiplier: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Add N(0, (σ·C)²) to every coordinate of ``deltas`` (B, P); returns float32 (B, P).

    ``noise_multiplier`` is σ, ``clip_norm`` is C: the standard deviation is relative to
    the clipping bound, as in the Gaussian mechanism of DP-SGD (Abadi et al. 2016).
    """
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} should be >= 0")
    if noise_multiplier == 0:
        return deltas.astype(np.float32, copy=True)
    noise = rng.standard_normal(deltas.shape, dtype=np.float32)
    noise *= np.float32(noise_multiplier * clip_norm)
    return (deltas + noise).astype(np.float32, copy=False)
