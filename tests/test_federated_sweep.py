"""The privacy–utility sweep's no-noise point differs from the DP points only in σ (#13)."""

from __future__ import annotations

import math

from federated import FederatedConfig, SyntheticRegressionTask, privacy_utility_sweep


def config(**overrides: object) -> FederatedConfig:
    base: dict[str, object] = {
        "devices.require_charging": False, "devices.require_idle": False,
        "devices.min_battery": 0.0, "devices.min_free_storage_mb": 0.0,
        "devices.dropout_rate": 0.0, "rounds.sampling_rate": 0.2, "rounds.min_reports": 20,
        "rounds.max_uploads_per_day": 48, "privacy.target_epsilon": None,
        "privacy.noise_multiplier": 0.5, **overrides}
    raw: dict[str, dict[str, object]] = {}
    for dotted, value in base.items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    return FederatedConfig.model_validate(raw)


def test_no_noise_point_clips_like_the_dp_points() -> None:
    # a clip norm so small that a clipped run cannot move the model: if the no-noise point
    # skipped clipping (as it once did), it would fit the regression and its MSE would fall
    base = SyntheticRegressionTask(n_devices=3000, n_features=6, seed=5)
    before = base.evaluate(base.initial_parameters())["mse"]
    unclipped = config(**{"rounds.rounds": 8, "privacy.clip_norm": 1e3,
                          "privacy.noise_multiplier": 0.0})
    free = privacy_utility_sweep(lambda: SyntheticRegressionTask(n_devices=3000, n_features=6,
                                                                 seed=5),
                                 unclipped, [], seed=1)[0]
    assert free["metrics"]["mse"] < 0.5 * before  # the task does learn without clipping

    tight = config(**{"rounds.rounds": 8, "privacy.clip_norm": 1e-4})
    points = privacy_utility_sweep(lambda: SyntheticRegressionTask(n_devices=3000, n_features=6,
                                                                   seed=5),
                                   tight, [0.5], seed=1)
    no_noise = points[-1]
    assert no_noise["noise_multiplier"] is None
    assert math.isinf(no_noise["epsilon"]["local"])
    assert no_noise["metrics"]["mse"] > 0.95 * before
