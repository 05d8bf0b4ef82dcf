"""Differential privacy as a wrapper around any strategy (as Flower does it).

Clipping and noise happen on the device (local DP, see ``_local_dp``); this server-side
wrapper (1) announces C and σ in every round plan so devices apply them, (2) aggregates
with uniform weights, because example counts are not covered by the noise and weighting
by them would change each device's sensitivity, and (3) refuses to aggregate fewer
reports than the accountant assumed (``min_reports``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from federated._errors import FederatedError
from federated._strategy import Aggregate, RoundPlan, Strategy, StrategyWrapper

__all__ = ["DifferentialPrivacy"]


class DifferentialPrivacy(StrategyWrapper):
    """Local-DP wrapper: devices clip to C and add N(0, σ²C²); the inner strategy averages.

    Parameters
    ----------
    inner : Strategy
        Any strategy (FedAvg, FedAdam, TrimmedMean, NormBound(...)).
    clip_norm : float
        C > 0, the L2 bound of each device's delta.
    noise_multiplier : float
        σ >= 0, the per-coordinate noise standard deviation in units of C.
    min_reports : int
        The fewest reports a round may aggregate; the secure-sum and shuffle
        guarantees assume at least this many.
    """

    name = "dp"

    def __init__(self, inner: Strategy, clip_norm: float, noise_multiplier: float,
                 min_reports: int = 1) -> None:
        super().__init__(inner)
        if not clip_norm > 0:
            raise ValueError(f"clip_norm={clip_norm} should be > 0")
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier={noise_multiplier} should be >= 0")
        if min_reports < 1:
            raise ValueError(f"min_reports={min_reports} should be >= 1")
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.min_reports = min_reports

    def configure_round(self, plan: RoundPlan) -> RoundPlan:
        return dataclasses.replace(self.inner.configure_round(plan), clip_norm=self.clip_norm,
                                   noise_multiplier=self.noise_multiplier)

    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        if deltas.shape[0] < self.min_reports:
            raise FederatedError(
                f"{deltas.shape[0]} reports should be >= min_reports={self.min_reports}; "
                "the privacy accounting assumed at least that many"
            )
        uniform = np.ones(deltas.shape[0], dtype=np.int64)
        result = self.inner.aggregate(parameters, deltas, uniform)
        return Aggregate(result.parameters, {**result.metrics, "dp_reports": float(len(deltas))})

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        if n_reports < self.min_reports:
            raise FederatedError(
                f"{n_reports} reports should be >= min_reports={self.min_reports}; "
                "the privacy accounting assumed at least that many")
        result = self.inner.aggregate_sum(parameters, delta_sum, n_reports)
        return Aggregate(result.parameters, {**result.metrics, "dp_reports": float(n_reports)})

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "clip_norm": self.clip_norm,
                "noise_multiplier": self.noise_multiplier, "min_reports": self.min_reports}
