"""FedAdam: the mean delta as a pseudo-gradient for a server-side Adam optimizer
(Reddi et al. 2021, "Adaptive Federated Optimization", Alg. 2)."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from federated._strategy import Aggregate, Strategy, StrategyOptions, register_strategy
from federated.strategies.fedavg import bounded_mean

__all__ = ["FedAdam", "FedAdamOptions"]


class FedAdamOptions(StrategyOptions):
    """Options of :class:`FedAdam` (``[strategy] name = "fedadam"``)."""

    server_learning_rate: float = Field(default=1.0, gt=0)
    """Server step size η."""
    beta_1: float = Field(default=0.9, ge=0, lt=1)
    """First-moment decay."""
    beta_2: float = Field(default=0.99, ge=0, lt=1)
    """Second-moment decay."""
    tau: float = Field(default=1e-3, gt=0)
    """Adaptivity floor."""
    max_weight: float = Field(default=100.0, ge=1)
    """Bound of a device's weight (ignored under DP: uniform weights)."""


@register_strategy("fedadam", options=FedAdamOptions, sum_based=True)
class FedAdam(Strategy):
    """Server Adam on the (bounded-weight) mean delta, with bias correction.

    Parameters
    ----------
    server_learning_rate : float
        η of the server optimizer.
    beta_1, beta_2 : float
        Adam moment decay rates, in [0, 1).
    tau : float
        τ, the adaptivity floor added to sqrt(v) (Reddi et al. use 1e-3).
    max_weight : float
        Bound of each device's weight in the mean, as in :class:`FedAvg`.
    """

    name = "fedadam"

    def __init__(self, server_learning_rate: float = 0.01, beta_1: float = 0.9,
                 beta_2: float = 0.99, tau: float = 1e-3, max_weight: float = 100.0) -> None:
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate={server_learning_rate} should be > 0")
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{label}={beta} should be in [0, 1)")
        if tau <= 0:
            raise ValueError(f"tau={tau} should be > 0")
        if max_weight < 1:
            raise ValueError(f"max_weight={max_weight} should be >= 1")
        self.server_learning_rate = server_learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.max_weight = max_weight
        self.m_: np.ndarray | None = None
        self.v_: np.ndarray | None = None
        self.t_ = 0

    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        grad, total = bounded_mean(deltas, n_examples, self.max_weight)
        if grad is None:
            return Aggregate(parameters.copy(), {"weight_total": 0.0})
        return self._step(parameters, grad, total)

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        return self._step(parameters, np.asarray(delta_sum, np.float64) / n_reports,
                          float(n_reports))

    def _step(self, parameters: np.ndarray, grad: np.ndarray, total: float) -> Aggregate:
        if self.m_ is None or self.v_ is None:
            self.m_ = np.zeros_like(grad)
            self.v_ = np.zeros_like(grad)
        self.t_ += 1
        self.m_ = self.beta_1 * self.m_ + (1 - self.beta_1) * grad
        self.v_ = self.beta_2 * self.v_ + (1 - self.beta_2) * grad * grad
        step = (self.server_learning_rate * math.sqrt(1 - self.beta_2 ** self.t_)
                / (1 - self.beta_1 ** self.t_))
        new = parameters.astype(np.float64) + step * self.m_ / (np.sqrt(self.v_) + self.tau)
        return Aggregate(new.astype(np.float32),
                         {"weight_total": total, "update_norm": float(np.linalg.norm(grad))})

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.m_ is None or self.v_ is None:
            return {"t": np.array(self.t_)}
        return {"m": self.m_, "v": self.v_, "t": np.array(self.t_)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t_ = int(state.get("t", np.array(0)))
        self.m_ = state.get("m")
        self.v_ = state.get("v")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "server_learning_rate": self.server_learning_rate,
                "beta_1": self.beta_1, "beta_2": self.beta_2, "tau": self.tau,
                "max_weight": self.max_weight}
