"""Privacy–utility sweep: train at several noise multipliers, record ε and held-out metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from federated._config import FederatedConfig
from federated._task import FederatedTask
from federated._trainer import FederatedTrainer

__all__ = ["privacy_utility_sweep"]


def privacy_utility_sweep(make_task: Callable[[], FederatedTask], config: FederatedConfig,
                          noise_multipliers: Sequence[float], *, seed: int = 0,
                          include_non_private: bool = True,
                          on_point: Callable[[dict[str, Any]], None] | None = None
                          ) -> list[dict[str, Any]]:
    """Train a fresh task per σ (same seed) and record every ε kind and the metrics.

    Budgets are not enforced in a sweep (its purpose is to map ε against utility).

    Parameters
    ----------
    make_task : callable
        Returns a fresh task (tasks hold per-device state that training changes).
    config : FederatedConfig
        The base configuration; ``privacy.noise_multiplier`` is replaced per point.
    noise_multipliers : sequence of float
        σ values (> 0).
    seed : int
        Seed of every point's training randomness.
    include_non_private : bool
        Add a point without noise (σ = 0, ε = ∞) that clips and aggregates exactly as the
        DP points do, so the frontier isolates the noise (its ``noise_multiplier`` is
        ``None``).
    on_point : callable, optional
        Called with each finished point.

    Returns
    -------
    list of dict
        ``{"noise_multiplier", "epsilon": {kind: ε}, "headline", "guarantees", "delta",
        "metrics": {...}}`` (``headline``/``guarantees`` as in ``privacy.json``).
    """
    points: list[dict[str, Any]] = []
    settings: list[float | None] = [float(s) for s in noise_multipliers]
    if include_non_private:
        settings.append(None)
    for sigma in settings:
        # the no-noise point keeps DP's clipping and server optimiser: only σ changes
        privacy = config.privacy.model_copy(update={
            "target_epsilon": None, "enabled": True,
            "noise_multiplier": sigma if sigma is not None else 0.0})
        cfg = config.model_copy(update={"privacy": privacy})
        trainer = FederatedTrainer(make_task(), cfg).fit(np.random.default_rng(seed))
        point = {"noise_multiplier": sigma, "epsilon": trainer.privacy_.get("epsilon"),
                 "headline": trainer.privacy_.get("headline"),
                 "guarantees": trainer.privacy_.get("guarantees"),
                 "delta": trainer.privacy_.get("delta"), "metrics": trainer.metrics_,
                 "rounds_aggregated": sum(h.status == "aggregated" for h in trainer.history_)}
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points
