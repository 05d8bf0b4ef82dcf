"""The distributed discrete Gaussian (DDG): on-device integer encoding and its accounting.

Kairouz, Liu & Steinke 2021, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation" (ICML; KLS21). Each device, on its clipped delta
x ∈ R^d (‖x‖₂ ≤ C):

1. pads x to D = 2^⌈log2 d⌉ and rotates it, y = H·diag(ξ)·x / √D (randomized Hadamard,
   signs ξ from the round's *public* seed), which flattens every coordinate;
2. scales by 1/γ and rounds stochastically to integers, redrawing until
   ‖z‖₂ ≤ Δ₂/γ (conditional randomized rounding, KLS21 Alg. 1, with β = e^-1/2);
3. adds discrete Gaussian noise N_Z(0, σ_z²) per coordinate, σ_z = σC/γ (exact
   sampler of Canonne, Kamath & Steinke 2020, Alg. 3, vectorised), and
4. reports z mod 2^b.

Secure aggregation sums the reports mod 2^b; the server maps the sum to
[-2^(b-1), 2^(b-1)), un-rotates it and multiplies by γ. The sum of any n ≥ n_min
survivors carries n_min·σ²C² or more noise, which is what the accountant assumes, so
dropouts never weaken the guarantee. γ is the smallest step for which the modular sum
of up to ``n_max`` reports wraps around with probability at most ``wrap_probability``
(sub-Gaussian tails, union bound over coordinates; see :meth:`DiscreteGaussianEncoding.plan`).

Accounting (:func:`ddg_round_rdp`): KLS21 Thm 1 — the sum of n discrete Gaussians of
variance σ_z² each, with L2 sensitivity Δ₂ (after rounding), is (α, ε(α))-RDP with
ε(α) = min(α s²/2 + τD, α/2 (s + τ√D)²), s = Δ₂/(√n σ), τ = 10 Σ_{k=1}^{n-1}
exp(-2π² σ_z² k/(k+1)); Poisson sampling at rate q amplifies each order by Zhu & Wang
2019 (Thm 5, integer orders); ``dp_accounting`` composes over rounds and converts to
(ε, δ). This is the two-term bound of the authors' code for the paper's client-dropout
figure (google-research/federated ``distributed_dp/accounting_utils.py`` @ 94b2854), whose
values the tests reproduce; their later code also takes Proposition 14's L1 term, which
can only lower ε, so ours is an upper bound of it.

Noise comes only from the ``rng`` passed in: in simulation a named numpy stream; in
deployment a generator over a cryptographically secure bit generator
(:func:`secure_noise_generator`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "DDG_RDP_ORDERS",
    "DiscreteGaussianEncoding",
    "ddg_round_rdp",
    "ddg_tau",
    "hadamard_transform",
    "rounded_l2_sensitivity",
    "sample_discrete_gaussian",
    "secure_noise_generator",
]

DDG_RDP_ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 192, 256)
"""Integer RDP orders (Zhu & Wang's bound needs integers)."""
BETA = math.exp(-0.5)
"""Conditional rounding's failure probability per draw (KLS21's choice)."""


def secure_noise_generator() -> np.random.Generator:
    """A numpy Generator seeded from the OS CSPRNG, for deployment.

    The simulator passes seeded streams so runs are reproducible; a real device draws
    its noise from this instead (fresh 256-bit OS entropy every call, PCG64DXSM).
    """
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(
        int.from_bytes(__import__("os").urandom(32), "big"))))


def hadamard_transform(x: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh–Hadamard transform of each row of ``x`` (B, D), D a power of 2.

    Returns float64 (B, D); it is its own inverse.
    """
    b, d = x.shape
    if d & (d - 1):
        raise ValueError(f"dimension {d} should be a power of 2")
    y = np.array(x, dtype=np.float64, copy=True)
    h = 1
    while h < d:
        y = y.reshape(b, d // (2 * h), 2, h)
        top, bottom = y[:, :, 0, :].copy(), y[:, :, 1, :]
        y[:, :, 0, :] += bottom
        y[:, :, 1, :] = top - bottom
        y = y.reshape(b, d)
        h *= 2
    return y / math.sqrt(d)


def sample_discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of N_Z(0, σ²), P[k] ∝ exp(-k²/2σ²) over the integers (int64).

    Canonne, Kamath & Steinke 2020, Alg. 3: discrete Laplace proposals with scale
    t = ⌊σ⌋ + 1, accepted with probability exp(-(|Y| - σ²/t)²/2σ²); vectorised with
    oversampling. σ = 0 gives zeros.
    """
    if sigma < 0:
        raise ValueError(f"sigma={sigma} should be >= 0")
    if sigma == 0 or size == 0:
        return np.zeros(size, np.int64)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    out = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        m = int((size - filled) * 1.6) + 16
        y = rng.geometric(p, m) - rng.geometric(p, m)  # discrete Laplace(t)
        accept = rng.random(m) < np.exp(-((np.abs(y) - sigma * sigma / t) ** 2)
                                        / (2.0 * sigma * sigma))
        take = y[accept][: size - filled]
        out[filled:filled + take.size] = take
        filled += take.size
    return out


def rounded_l2_sensitivity(clip_norm: float, gamma: float, dimension: int,
                           beta: float = BETA) -> float:
    """Δ₂: the L2 norm bound after conditional randomized rounding (KLS21 Thm 1).

    Δ₂² = min(C² + γ²D/4 + √(2 log(1/β))·γ·(C + γ√D/2), (C + γ√D)²).
    """
    c, g, d = clip_norm, gamma, dimension
    plain = (c + g * math.sqrt(d)) ** 2
    if beta <= 0:
        return math.sqrt(plain)
    conditional = c * c + g * g * d / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * g * (
        c + 0.5 * g * math.sqrt(d))
    return math.sqrt(min(plain, conditional))


def ddg_tau(sigma_z: float, n: int) -> float:
    """τ = 10 Σ_{k=1}^{n-1} exp(-2π² σ_z² k/(k+1)) (KLS21 Thm 1); 0 for n = 1."""
    if n <= 1:
        return 0.0
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.exp(-2.0 * math.pi ** 2 * sigma_z ** 2 * k / (k + 1.0)).sum())


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _poisson_subsampled_rdp(alpha: int, q: float, rdp: np.ndarray) -> float:
    """RDP of order α of a mechanism run on a Poisson sample at rate q.

    Zhu & Wang 2019, "Poisson Subsampled Rényi Differential Privacy" (ICML), Thm 5
    (the general upper bound, integer α ≥ 2)::

        (α-1) ε_q(α) <= log[ (1-q)^(α-1) (αq - q + 1)
                            + C(α,2) q² (1-q)^(α-2) e^ε(2)
                            + 3 Σ_{l=3..α} C(α,l) q^l (1-q)^(α-l) e^((l-1) ε(l)) ]

    ``rdp[j]`` is the unsampled mechanism's RDP at order j (j = 0..α).
    """
    log_q, log_1q = math.log(q), math.log1p(-q)
    logs = [(alpha - 1) * log_1q + math.log(alpha * q - q + 1),
            float(_log_comb(alpha, np.array(2))) + 2 * log_q + (alpha - 2) * log_1q
            + float(rdp[2])]
    if alpha >= 3:
        ls = np.arange(3, alpha + 1)
        logs += list(math.log(3.0) + _log_comb(alpha, ls) + ls * log_q + (alpha - ls) * log_1q
                     + (ls - 1) * rdp[ls])
    return float(special.logsumexp(logs) / (alpha - 1))


@functools.lru_cache(maxsize=256)
def ddg_round_rdp(q: float, scale: float, tau_dim: float, tau_sqrt_dim: float
                  ) -> tuple[float, ...]:
    """RDP at :data:`DDG_RDP_ORDERS` of one Poisson-sampled DDG round.

    Parameters
    ----------
    q : float
        Sampling rate.
    scale : float
        s = Δ₂ / (√n σ), sensitivity over the summed noise's standard deviation.
    tau_dim, tau_sqrt_dim : float
        τ·D and τ·√D (KLS21 Thm 1).
    """
    max_order = max(DDG_RDP_ORDERS)
    alphas = np.arange(max_order + 1, dtype=np.float64)
    plain = np.minimum(alphas * scale * scale / 2.0 + tau_dim,
                       alphas / 2.0 * (scale + tau_sqrt_dim) ** 2)
    out = []
    for alpha in DDG_RDP_ORDERS:
        sampled = _poisson_subsampled_rdp(alpha, q, plain) if q < 1 else plain[alpha]
        out.append(min(float(sampled), float(plain[alpha])))
    return tuple(out)


@dataclass(frozen=True)
class DiscreteGaussianEncoding:
    """How devices encode a clipped delta for secure aggregation, and how the server decodes.

    Attributes
    ----------
    dimension : int
        d, the model's parameter count.
    padded_dimension : int
        D = 2^⌈log2 d⌉ (the Hadamard rotation's size, and the SecAgg vector length).
    clip_norm : float
        C.
    noise_std : float
        σC: each device's noise standard deviation (in parameter units).
    gamma : float
        γ, the integer grid step (parameter units).
    bits : int
        b: reports and sums are in Z_{2^b}.
    n_max : int
        The largest cohort the wrap-around bound covers.
    wrap_probability : float
        Upper bound of the chance that a sum of ≤ n_max reports wraps around mod 2^b.
    sensitivity : float
        Δ₂ after rounding (≥ C).
    """

    dimension: int
    padded_dimension: int
    clip_norm: float
    noise_std: float
    gamma: float
    bits: int
    n_max: int
    wrap_probability: float
    sensitivity: float

    @classmethod
    def plan(cls, *, dimension: int, clip_norm: float, noise_multiplier: float, bits: int,
             n_max: int, wrap_probability: float = 1e-9) -> DiscreteGaussianEncoding:
        """The finest γ for which n_max reports wrap around with probability ≤ target.

        A coordinate of the sum of n reports (integer units) is sub-Gaussian with
        variance proxy v = (nC/γ)²/D (rotated signal: a Rademacher sum, ‖Σx‖ ≤ nC)
        + n/4 (rounding errors in [-1, 1], mean zero) + n σ_z² (discrete Gaussians are
        σ_z²-sub-Gaussian, CKS20). P[|coord| ≥ 2^(b-1)] ≤ 2 exp(-4^(b-1)/2v); a union
        bound over D coordinates gives P[wrap] ≤ 2D exp(-4^(b-1)/2v). Solving
        P[wrap] = target for γ: v_max = 4^(b-1) / (2 log(2D/target)) and
        γ = √(((nC)²/D + nσ²C²) / (v_max - n/4)).

        Raises
        ------
        ValueError
            If no γ fits (b too small for n_max).
        """
        if not 1 <= bits <= 32:
            raise ValueError(f"bits={bits} should be in [1, 32]")
        if not 0 < wrap_probability < 1:
            raise ValueError(f"wrap_probability={wrap_probability} should be in (0, 1)")
        big_d = 1 << max(0, math.ceil(math.log2(max(dimension, 1))))
        n, c = float(n_max), clip_norm
        v_max = 4.0 ** (bits - 1) / (2.0 * math.log(2.0 * big_d / wrap_probability))
        if v_max <= n / 4.0:
            raise ValueError(f"bits={bits} cannot hold the sum of n_max={n_max} reports "
                             f"without wrap-around above {wrap_probability:g}; raise bits")
        noise_std = noise_multiplier * clip_norm
        gamma = math.sqrt(((n * c) ** 2 / big_d + n * noise_std ** 2) / (v_max - n / 4.0))
        return cls(dimension=dimension, padded_dimension=big_d, clip_norm=clip_norm,
                   noise_std=noise_std, gamma=gamma, bits=bits, n_max=n_max,
                   wrap_probability=wrap_probability,
                   sensitivity=rounded_l2_sensitivity(clip_norm, gamma, big_d))

    @property
    def sigma_z(self) -> float:
        """Per-device noise standard deviation in integer units, σC/γ."""
        return self.noise_std / self.gamma

    def signs(self, rotation_seed: int) -> np.ndarray:
        """The public random signs ξ (D,) of a round's rotation."""
        rng = np.random.default_rng(np.random.SeedSequence(rotation_seed))
        return rng.integers(0, 2, self.padded_dimension, dtype=np.int8) * 2 - 1

    def encode(self, deltas: np.ndarray, rotation_seed: int, rounding_rng: np.random.Generator,
               noise_rng: np.random.Generator) -> np.ndarray:
        """Encode clipped deltas (B, d) to reports (B, D) uint32 in Z_{2^b}.

        ``deltas`` must already be clipped to C (L2). Rounding draws from
        ``rounding_rng``; the DP noise only from ``noise_rng``.
        """
        b, d = deltas.shape
        if d != self.dimension:
            raise ValueError(f"deltas have {d} columns, the encoding {self.dimension}")
        padded = np.zeros((b, self.padded_dimension), np.float64)
        padded[:, :d] = deltas
        rotated = hadamard_transform(padded * self.signs(rotation_seed)) / self.gamma
        bound_sq = (self.sensitivity / self.gamma) ** 2
        floor = np.floor(rotated)
        frac = rotated - floor
        z = np.empty((b, self.padded_dimension), np.int64)
        todo = np.arange(b)
        for _ in range(1000):
            draw = floor[todo] + (rounding_rng.random((todo.size, self.padded_dimension))
                                  < frac[todo])
            ok = np.einsum("ij,ij->i", draw, draw) <= bound_sq
            z[todo[ok]] = draw[ok].astype(np.int64)
            todo = todo[~ok]
            if not todo.size:
                break
        else:  # pragma: no cover - probability β^1000
            raise RuntimeError("conditional rounding did not converge")
        z += sample_discrete_gaussian(self.sigma_z, z.size, noise_rng).reshape(z.shape)
        return (z & ((1 << self.bits) - 1)).astype(np.uint32)

    def decode(self, total: np.ndarray, rotation_seed: int) -> np.ndarray:
        """The sum (d,) float64 in parameter units from a modular sum (D,) of reports."""
        half = 1 << (self.bits - 1)
        signed = ((total.astype(np.int64) + half) & ((1 << self.bits) - 1)) - half
        rotated = hadamard_transform(signed[None, :].astype(np.float64))[0]
        return (rotated * self.signs(rotation_seed) * self.gamma)[: self.dimension]

    def epsilon_terms(self, n_min: int) -> tuple[float, float, float]:
        """(s, τD, τ√D) of KLS21 Thm 1 for a sum of at least ``n_min`` reports.

        τ is taken at ``n_max`` (it grows with n) and s at n_min (it shrinks with n):
        an upper bound for every cohort size in between.
        """
        scale = self.sensitivity / (math.sqrt(n_min) * self.noise_std) if (
            self.noise_std > 0) else math.inf
        tau = ddg_tau(self.sigma_z, max(self.n_max, n_min))
        return scale, tau * self.padded_dimension, tau * math.sqrt(self.padded_dimension)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record for privacy.json."""
        return {**asdict(self), "sigma_z": self.sigma_z,
                "rounding": "conditional randomized rounding, beta = exp(-1/2)",
                "rotation": "randomized Hadamard, public per-round seed"}
