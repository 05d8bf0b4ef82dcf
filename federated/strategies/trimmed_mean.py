"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", Def. 2)."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from federated._strategy import Aggregate, Strategy, StrategyOptions, register_strategy

__all__ = ["TrimmedMean", "TrimmedMeanOptions", "trimmed_mean"]


class TrimmedMeanOptions(StrategyOptions):
    """Options of :class:`TrimmedMean` (``[strategy] name = "trimmed_mean"``)."""

    trim_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    """β: the fraction trimmed from each end of every coordinate."""
    server_learning_rate: float = Field(default=1.0, gt=0)
    """Server step size η."""


def trimmed_mean(values: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Per column of ``values`` (n, P): drop the ⌊βn⌋ largest and smallest, average the rest.

    Returns shape (P,), float64. With β = 0 it is the plain mean.
    """
    n = values.shape[0]
    k = math.floor(trim_fraction * n)
    if k == 0:
        return values.astype(np.float64).mean(axis=0)
    ordered = np.sort(values, axis=0)
    return ordered[k:n - k].astype(np.float64).mean(axis=0)


@register_strategy("trimmed_mean", options=TrimmedMeanOptions, sum_based=False)
class TrimmedMean(Strategy):
    """Robust aggregation: new = old + η · coordinate-wise β-trimmed mean of deltas.

    Withstands a minority (fewer than βn) of devices sending arbitrary updates. Example
    counts are ignored (weights would let an attacker claim a large count).

    Parameters
    ----------
    trim_fraction : float
        β in [0, 0.5): the fraction trimmed from each end of every coordinate.
    server_learning_rate : float
        η.
    """

    name = "trimmed_mean"

    def __init__(self, trim_fraction: float = 0.1, server_learning_rate: float = 1.0) -> None:
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction={trim_fraction} should be in [0, 0.5)")
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate={server_learning_rate} should be > 0")
        self.trim_fraction = trim_fraction
        self.server_learning_rate = server_learning_rate

    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        robust = trimmed_mean(deltas, self.trim_fraction)
        new = parameters.astype(np.float64) + self.server_learning_rate * robust
        return Aggregate(new.astype(np.float32),
                         {"trimmed_per_side": float(math.floor(self.trim_fraction
                                                               * deltas.shape[0])),
                          "update_norm": float(np.linalg.norm(robust))})

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "trim_fraction": self.trim_fraction,
                "server_learning_rate": self.server_learning_rate}
