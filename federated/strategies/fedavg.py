"""FedAvg with bounded weights (McMahan et al. 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data", Alg. 1, applied to deltas)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from federated._strategy import Aggregate, Strategy, StrategyOptions, register_strategy

__all__ = ["FedAvg", "FedAvgOptions", "bounded_mean"]


def bounded_mean(deltas: np.ndarray, n_examples: np.ndarray, max_weight: float
                 ) -> tuple[np.ndarray | None, float]:
    """FedAvg's mean of the deltas, each weighted ``min(n_examples, max_weight)``.

    Parameters
    ----------
    deltas : ndarray of float, shape (n, P)
    n_examples : ndarray of int, shape (n,)
    max_weight : float
        Bound of one device's weight.

    Returns
    -------
    mean : ndarray of float64, shape (P,), or None
        None when the weights sum to 0 (no device trained on anything).
    total : float
        The sum of the weights.
    """
    weights = np.minimum(n_examples.astype(np.float64), max_weight)
    total = float(weights.sum())
    if total <= 0:
        return None, 0.0
    return (weights @ deltas.astype(np.float64)) / total, total


class FedAvgOptions(StrategyOptions):
    """Options of :class:`FedAvg` (``[strategy] name = "fedavg"``)."""

    server_learning_rate: float = Field(default=1.0, gt=0)
    """Server step size η."""
    max_weight: float = Field(default=100.0, ge=1)
    """Bound of a device's weight (ignored under DP: uniform weights)."""


@register_strategy("fedavg", options=FedAvgOptions, sum_based=True)
class FedAvg(Strategy):
    """Weighted mean of deltas, weights ``min(n_examples, max_weight)``.

    Bounding the weights keeps one device with a huge log from dominating the average
    (and bounds its influence, which DP needs; the DP wrapper uses uniform weights).

    Parameters
    ----------
    server_learning_rate : float
        η: new = old + η · mean delta.
    max_weight : float
        Upper bound of a device's weight (>= 1).
    """

    name = "fedavg"

    def __init__(self, server_learning_rate: float = 1.0, max_weight: float = 100.0) -> None:
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate={server_learning_rate} should be > 0")
        if max_weight < 1:
            raise ValueError(f"max_weight={max_weight} should be >= 1")
        self.server_learning_rate = server_learning_rate
        self.max_weight = max_weight

    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        mean, total = bounded_mean(deltas, n_examples, self.max_weight)
        if mean is None:
            return Aggregate(parameters.copy(), {"weight_total": 0.0})
        new = parameters.astype(np.float64) + self.server_learning_rate * mean
        return Aggregate(new.astype(np.float32),
                         {"weight_total": total, "update_norm": float(np.linalg.norm(mean))})

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        mean = np.asarray(delta_sum, np.float64) / n_reports
        new = parameters.astype(np.float64) + self.server_learning_rate * mean
        return Aggregate(new.astype(np.float32), {"weight_total": float(n_reports),
                                                  "update_norm": float(np.linalg.norm(mean))})

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "server_learning_rate": self.server_learning_rate,
                "max_weight": self.max_weight}
