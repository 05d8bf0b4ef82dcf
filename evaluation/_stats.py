"""A/B statistics at the user level: arm assignment, clustered bootstrap, p-values, MDE.

Every metric is a ratio of sums: ``Σ_users y_u / Σ_users n_u`` with ``y_u`` a user's
summed per-session metric (e.g. hits at k) and ``n_u`` their sessions. Users are the
randomisation unit, so the bootstrap resamples *users* with replacement, each with all
of their sessions (a clustered bootstrap; Field & Welsh 2007), and the variance for the
minimum detectable effect is the delta-method variance of a ratio over users (Deng,
Lu & Litz 2018, "Applying the delta method in metric analytics").
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "UpliftEstimate",
    "arm_bucket",
    "assign_treatment",
    "compare_independent",
    "compare_paired",
    "minimum_detectable_effect",
    "ratio_variance",
]

_CHUNK = 256


def arm_bucket(salt: str, user_id: int) -> float:
    """A uniform number in [0, 1) from sha256(salt, user id) (first 64 bits), stable."""
    digest = hashlib.sha256(f"{salt}\x00{int(user_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_treatment(user_ids: np.ndarray, salt: str, share: float = 0.5) -> np.ndarray:
    """(N,) bool: the user is in the treatment arm B (bucket ≥ 1 − ``share``), else A."""
    buckets = np.array([arm_bucket(salt, u) for u in np.asarray(user_ids).tolist()])
    return buckets >= 1.0 - share


@dataclass(frozen=True)
class UpliftEstimate:
    """B versus A on one metric, with its interval, p-value and minimum detectable effect.

    Attributes
    ----------
    metric : str
    design : str
        ``randomised`` (A users vs B users) or ``paired`` (every user under both arms).
    mean_a, mean_b : float
        Ratio-of-sums means (per session).
    difference : float
        ``mean_b - mean_a``.
    uplift : float
        Relative uplift ``mean_b / mean_a - 1`` (nan if ``mean_a`` is 0).
    ci_low, ci_high : float
        Percentile bootstrap interval of ``uplift`` at level ``confidence``.
    difference_ci_low, difference_ci_high : float
        The same for ``difference``.
    p_value : float
        Two-sided p-value of no difference (permutation or sign-flip test over users).
    mde : float
        Relative minimum detectable effect (two-sided ``alpha``, ``power``) for this sample.
    mde_absolute : float
        The same as a difference of means.
    se_difference : float
        Delta-method standard error of ``difference``.
    n_users_a, n_users_b, n_sessions_a, n_sessions_b : int
    confidence : float
    """

    metric: str
    design: str
    mean_a: float
    mean_b: float
    difference: float
    uplift: float
    ci_low: float
    ci_high: float
    difference_ci_low: float
    difference_ci_high: float
    p_value: float
    mde: float
    mde_absolute: float
    se_difference: float
    n_users_a: int
    n_users_b: int
    n_sessions_a: int
    n_sessions_b: int
    confidence: float

    def covers(self, uplift: float) -> bool:
        """Whether the relative-uplift interval contains ``uplift``."""
        return bool(self.ci_low <= uplift <= self.ci_high)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def ratio_variance(y: np.ndarray, n: np.ndarray) -> float:
    """Delta-method variance of ``Σy / Σn`` over independent users (shapes (m,))."""
    y, n = np.asarray(y, np.float64), np.asarray(n, np.float64)
    m, total = y.size, n.sum()
    if m < 2 or total <= 0:
        return float("nan")
    r = y.sum() / total
    return float(m / (m - 1) * np.sum((y - r * n) ** 2) / total**2)


def minimum_detectable_effect(se_difference: float, alpha: float, power: float) -> float:
    """Smallest true difference detected with ``power`` by a two-sided ``alpha`` z-test."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se_difference)


def _ratio(y: np.ndarray, n: np.ndarray) -> float:
    total = float(np.sum(n))
    return float(np.sum(y) / total) if total > 0 else float("nan")


def _relative(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, b / np.where(a > 0, a, 1.0) - 1.0, np.nan)


def _percentile(x: np.ndarray, alpha: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(x, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _estimate(metric: str, design: str, mean_a: float, mean_b: float, boot_a: np.ndarray,
              boot_b: np.ndarray, p_value: float, se: float, alpha: float, power: float,
              counts: tuple[int, int, int, int]) -> UpliftEstimate:
    uplift = float(_relative(np.array(mean_b), np.array(mean_a)))
    lo, hi = _percentile(_relative(boot_b, boot_a), alpha)
    dlo, dhi = _percentile(boot_b - boot_a, alpha)
    mde_abs = minimum_detectable_effect(se, alpha, power)
    return UpliftEstimate(
        metric=metric, design=design, mean_a=mean_a, mean_b=mean_b,
        difference=mean_b - mean_a, uplift=uplift, ci_low=lo, ci_high=hi,
        difference_ci_low=dlo, difference_ci_high=dhi, p_value=p_value,
        mde=mde_abs / mean_a if mean_a > 0 else float("nan"), mde_absolute=mde_abs,
        se_difference=se, n_users_a=counts[0], n_users_b=counts[1], n_sessions_a=counts[2],
        n_sessions_b=counts[3], confidence=1 - alpha)


def _bootstrap_ratio(y: np.ndarray, n: np.ndarray, n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(R,) ratio of sums over users resampled with replacement."""
    out = np.empty(n_resamples)
    for lo in range(0, n_resamples, _CHUNK):
        r = min(_CHUNK, n_resamples - lo)
        idx = rng.integers(0, y.size, size=(r, y.size))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[lo: lo + r] = y[idx].sum(1) / n[idx].sum(1)
    return out


def compare_independent(metric: str, y_a: np.ndarray, n_a: np.ndarray, y_b: np.ndarray,
                        n_b: np.ndarray, *, rng: np.random.Generator, n_resamples: int = 2000,
                        n_permutations: int = 2000, alpha: float = 0.05,
                        power: float = 0.8) -> UpliftEstimate:
    """Randomised A/B: users of A versus users of B (user-level bootstrap, permutation p).

    Parameters
    ----------
    metric : str
        Name recorded in the result.
    y_a, n_a : ndarray, shape (m_a,)
        Per A user: summed metric over their sessions, and their session count.
    y_b, n_b : ndarray, shape (m_b,)
        The same for B users.
    rng : numpy.random.Generator
    n_resamples : int
        Bootstrap resamples (each arm resampled separately: stratified by arm).
    n_permutations : int
        Random re-assignments of users to arms (fixed arm sizes) for the p-value; 0
        skips the test (``p_value`` is nan).
    alpha, power : float
    """
    y_a, n_a, y_b, n_b = (np.asarray(x, np.float64) for x in (y_a, n_a, y_b, n_b))
    if y_a.size < 2 or y_b.size < 2:
        raise ValueError(f"each arm needs >= 2 users, got A={y_a.size}, B={y_b.size}")
    mean_a, mean_b = _ratio(y_a, n_a), _ratio(y_b, n_b)
    boot_a = _bootstrap_ratio(y_a, n_a, n_resamples, rng)
    boot_b = _bootstrap_ratio(y_b, n_b, n_resamples, rng)
    p_value = float("nan")
    if n_permutations:
        y, n = np.concatenate([y_a, y_b]), np.concatenate([n_a, n_b])
        labels = np.r_[np.zeros(y_a.size, bool), np.ones(y_b.size, bool)]
        observed = abs(mean_b - mean_a)
        extreme = 0
        for lo in range(0, n_permutations, _CHUNK):
            r = min(_CHUNK, n_permutations - lo)
            is_b = rng.permuted(np.broadcast_to(labels, (r, labels.size)), axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                diff = (is_b @ y) / (is_b @ n) - (~is_b @ y) / (~is_b @ n)
            extreme += int((np.abs(diff) >= observed - 1e-12).sum())
        p_value = (1 + extreme) / (1 + n_permutations)
    se = float(np.sqrt(ratio_variance(y_a, n_a) + ratio_variance(y_b, n_b)))
    return _estimate(metric, "randomised", mean_a, mean_b, boot_a, boot_b, p_value, se, alpha,
                     power, (y_a.size, y_b.size, int(n_a.sum()), int(n_b.sum())))


def compare_paired(metric: str, y_a: np.ndarray, y_b: np.ndarray, n: np.ndarray, *,
                   rng: np.random.Generator, n_resamples: int = 2000,
                   n_permutations: int = 2000, alpha: float = 0.05,
                   power: float = 0.8) -> UpliftEstimate:
    """Paired: every user's same sessions under A and B (paired bootstrap, sign-flip p).

    Parameters
    ----------
    metric : str
    y_a, y_b : ndarray, shape (m,)
        Per user: summed metric under A and under B.
    n : ndarray, shape (m,)
        Per user: sessions.
    rng, n_resamples, alpha, power
        As in :func:`compare_independent`.
    n_permutations : int
        Random sign flips of each user's difference (swapping their arms); 0 skips.
    """
    y_a, y_b, n = (np.asarray(x, np.float64) for x in (y_a, y_b, n))
    if y_a.size < 2:
        raise ValueError(f"a paired comparison needs >= 2 users, got {y_a.size}")
    mean_a, mean_b = _ratio(y_a, n), _ratio(y_b, n)
    boot_a, boot_b = np.empty(n_resamples), np.empty(n_resamples)
    for lo in range(0, n_resamples, _CHUNK):
        r = min(_CHUNK, n_resamples - lo)
        idx = rng.integers(0, n.size, size=(r, n.size))
        total = n[idx].sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            boot_a[lo: lo + r] = y_a[idx].sum(1) / total
            boot_b[lo: lo + r] = y_b[idx].sum(1) / total
    d = y_b - y_a
    p_value = float("nan")
    if n_permutations:
        observed = abs(d.sum())
        extreme = 0
        for lo in range(0, n_permutations, _CHUNK):
            r = min(_CHUNK, n_permutations - lo)
            signs = rng.integers(0, 2, size=(r, d.size)) * 2.0 - 1.0
            extreme += int((np.abs(signs @ d) >= observed - 1e-9).sum())
        p_value = (1 + extreme) / (1 + n_permutations)
    se = float(np.sqrt(ratio_variance(d, n)))
    return _estimate(metric, "paired", mean_a, mean_b, boot_a, boot_b, p_value, se, alpha,
                     power, (n.size, n.size, int(n.sum()), int(n.sum())))
