"""Norm bound check: drop uploads whose L2 norm is implausibly large (a wrapper).

Sun et al. 2019, "Can You Really Backdoor Federated Learning?" show that bounding the
norm of updates blunts model-replacement attacks. Under local DP an honest upload is a
clipped delta plus N(0, σ²C²I_P) noise, so :func:`noisy_norm_bound` gives a bound an
honest upload exceeds with negligible probability.
"""

from __future__ import annotations

import math

import numpy as np

from federated._local_dp import l2_norms
from federated._strategy import Aggregate, Strategy, StrategyWrapper

__all__ = ["NormBound", "noisy_norm_bound"]


def noisy_norm_bound(clip_norm: float, noise_multiplier: float, n_parameters: int,
                     slack: float = 6.0) -> float:
    """An upper bound on an honest noisy upload's L2 norm.

    ``C + σC(√P + slack)``: the noise norm ‖N(0, σ²C²I_P)‖ exceeds σC(√P + t) with
    probability at most exp(-t²/2) (Gaussian concentration of a 1-Lipschitz function),
    so slack = 6 leaves a false-rejection chance below 2e-8 per upload.
    """
    return clip_norm + noise_multiplier * clip_norm * (math.sqrt(n_parameters) + slack)


class NormBound(StrategyWrapper):
    """Reject uploads with ``||delta|| > max_norm`` before the inner strategy sees them.

    Parameters
    ----------
    inner : Strategy
        The strategy that aggregates what passes.
    max_norm : float
        The bound (> 0).
    """

    name = "norm_bound"

    def __init__(self, inner: Strategy, max_norm: float) -> None:
        super().__init__(inner)
        if not max_norm > 0:
            raise ValueError(f"max_norm={max_norm} should be > 0")
        self.max_norm = max_norm

    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        keep = l2_norms(deltas) <= self.max_norm
        rejected = float((~keep).sum())
        if not keep.any():
            return Aggregate(parameters.copy(), {"norm_rejected": rejected})
        result = self.inner.aggregate(parameters, deltas[keep], n_examples[keep])
        return Aggregate(result.parameters, {**result.metrics, "norm_rejected": rejected})

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        raise NotImplementedError("a norm bound needs individual uploads; under secure "
                                  "aggregation the server sees only their sum")

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "max_norm": self.max_norm}
