"""One round recipe (issue #14 item 2): the strategy registry, build_strategy,
Server.from_config and PrivacyLedger.planned_from."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import federated._strategy as strategy_module
from federated import (
    FederatedConfig,
    FederatedConfigError,
    FederatedTrainer,
    PrivacyLedger,
    RoundRecipe,
    Server,
    SyntheticRegressionTask,
    build_strategy,
)
from federated.cli import federated as federated_cli
from federated.strategies import (
    Aggregate,
    DifferentialPrivacy,
    FedAdam,
    FedAvg,
    NormBound,
    Strategy,
    StrategyOptions,
    TrimmedMean,
    available_strategies,
    noisy_norm_bound,
    register_strategy,
    registered_strategy,
)

EASY = {"devices.require_charging": False, "devices.require_idle": False,
        "devices.min_battery": 0.0, "devices.min_free_storage_mb": 0.0,
        "devices.dropout_rate": 0.0, "rounds.sampling_rate": 0.2, "rounds.min_reports": 20,
        "rounds.rounds": 4, "rounds.max_uploads_per_day": 48, "privacy.target_epsilon": 1e9}


def _config(values: Mapping[str, Any]) -> FederatedConfig:
    """``FederatedConfig.load`` with dotted keys (``strategy.name``), as the CLI passes them.

    The keys are not identifiers, so they travel as ``**values``, typed ``Any`` by ``load``.
    """
    return FederatedConfig.load(None, **values)


def _unwrap(strategy: Strategy) -> list[Strategy]:
    chain = [strategy]
    while hasattr(chain[-1], "inner"):
        chain.append(chain[-1].inner)
    return chain


def test_every_builtin_strategy_is_registered_with_its_options_and_sum_flag() -> None:
    names = available_strategies()
    # a new file in federated/strategies/ adds a name here without editing this test
    assert {"fedadam", "fedavg", "trimmed_mean"} <= set(names) and names == sorted(names)
    assert registered_strategy("fedavg").strategy is FedAvg
    assert registered_strategy("fedadam").sum_based and registered_strategy("fedavg").sum_based
    assert not registered_strategy("trimmed_mean").sum_based
    cfg = _config({"strategy.name": "fedadam", "strategy.beta_2": 0.5,
                   "privacy.enabled": False})
    inner = build_strategy(cfg, 10)
    assert isinstance(inner, FedAdam) and inner.beta_2 == 0.5 and inner.beta_1 == 0.9
    with pytest.raises(FederatedConfigError, match="'fedavg' has no option 'beta_9'"):
        _config({"strategy.beta_9": 1.0})
    with pytest.raises(FederatedConfigError, match="not registered; use one of"):
        _config({"strategy.name": "fedsgd"})


def test_a_config_written_with_every_strategys_keys_in_one_section_still_loads() -> None:
    legacy = {"name": "fedavg", "server_learning_rate": 3.0, "max_weight": 50.0,
              "trim_fraction": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3,
              "norm_bound": None}
    cfg = FederatedConfig.model_validate({"strategy": legacy})
    inner = _unwrap(build_strategy(cfg, 10))[-1]
    assert isinstance(inner, FedAvg)
    assert (inner.server_learning_rate, inner.max_weight) == (3.0, 50.0)
    assert FederatedConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_adding_a_strategy_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    # what a new file in federated/strategies/ contains; nothing else is edited
    monkeypatch.setattr(strategy_module, "_REGISTRY", dict(strategy_module._REGISTRY))

    class MedianOptions(StrategyOptions):
        server_learning_rate: float = 1.0

    @register_strategy("median", options=MedianOptions, sum_based=False)
    class Median(Strategy):
        name = "median"

        def __init__(self, server_learning_rate: float = 1.0) -> None:
            self.server_learning_rate = server_learning_rate

        def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                      n_examples: np.ndarray) -> Aggregate:
            step = self.server_learning_rate * np.median(deltas, axis=0)
            return Aggregate((parameters + step).astype(np.float32))

    cfg = _config({**EASY, "strategy.name": "median",
                   "strategy.server_learning_rate": 0.5,
                   "secure_aggregation.enabled": False})
    built = _unwrap(build_strategy(cfg, 4))
    assert isinstance(built[0], DifferentialPrivacy)
    assert isinstance(built[-1], Median) and built[-1].server_learning_rate == 0.5
    result = CliRunner().invoke(federated_cli, ["strategies"])
    assert result.exit_code == 0 and "median" in result.output
    task = SyntheticRegressionTask(n_devices=400, n_features=3, seed=0)
    trainer = FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    assert trainer.history_ and trainer.history_[-1].status == "aggregated"
    # not sum-based: refused under secure aggregation, by the config and by the recipe
    with pytest.raises(FederatedConfigError, match="sum-based"):
        _config({"strategy.name": "median",
                 "privacy.budget_kind": "secure_sum"})
    with pytest.raises(FederatedConfigError, match="sum-based strategy"):
        build_strategy(_config({"strategy.name": "median"}), 4)


def test_build_strategy_resolves_auto_norm_bound_once_for_p() -> None:
    cfg = _config({"strategy.norm_bound": "auto",
                   "secure_aggregation.enabled": False,
                   "privacy.noise_multiplier": 0.3,
                   "privacy.clip_norm": 2.0})
    chain = _unwrap(build_strategy(cfg, 1076))
    assert [type(s) for s in chain] == [DifferentialPrivacy, NormBound, FedAvg]
    norm_bound = chain[1]
    assert isinstance(norm_bound, NormBound)
    bound = norm_bound.max_norm
    assert bound == noisy_norm_bound(2.0, 0.3, 1076) == 2.0 + 0.6 * (math.sqrt(1076) + 6)
    recipe = RoundRecipe.from_config(cfg, 1076)
    assert recipe.norm_bound == bound == recipe.upload_norm_bound and recipe.encoding is None
    with pytest.raises(FederatedConfigError, match=r"needs privacy\.enabled"):
        build_strategy(_config({"strategy.norm_bound": "auto",
                                "privacy.enabled": False}), 10)
    plain = RoundRecipe.from_config(_config({"privacy.enabled": False}), 5)
    assert plain.upload_norm_bound == math.inf


def test_server_from_config_is_the_configured_server() -> None:
    cfg = _config({"rounds.min_reports": 7, "rounds.deadline_s": 60.0,
                   "rounds.sampling_rate": 0.05,
                   "rounds.max_examples": 30})
    params = np.zeros(12, np.float32)
    server = Server.from_config(cfg, params, model_version=3)
    assert (server.min_reports, server.deadline_s, server.sampling_rate, server.max_examples,
            server.model_version) == (7, 60.0, 0.05, 30, 3)
    plan = server.open_round(0, 100.0)
    assert plan.clip_norm == 1.0 and plan.noise_multiplier == 1.0 and plan.deadline_s == 160.0
    stored = Server.from_config(cfg, params, deadline_s=10.0, min_reports=2, secure=False)
    assert (stored.deadline_s, stored.min_reports) == (10.0, 2)
    robust = _config({"strategy.name": "trimmed_mean",
                      "strategy.trim_fraction": 0.3,
                      "secure_aggregation.enabled": False})
    inner = _unwrap(Server.from_config(robust, params).strategy)[-1]
    assert isinstance(inner, TrimmedMean) and inner.trim_fraction == 0.3


def test_planned_from_carries_the_mechanism_the_rounds_run() -> None:
    cfg = _config({"rounds.rounds": 50, "rounds.sampling_rate": 0.02,
                   "rounds.min_reports": 100,
                   "privacy.noise_multiplier": 0.1})
    r = cfg.rounds
    plain = PrivacyLedger.planned_from(cfg, secure=False)
    assert plain == PrivacyLedger.planned(
        rounds=50, noise_multiplier=0.1, sampling_rate=0.02, min_reports=100,
        max_uploads_per_day=r.max_uploads_per_day, start_time_s=r.start_time_s,
        round_interval_s=r.round_interval_s)
    secure = PrivacyLedger.planned_from(cfg, 1076, rounds=5)
    encoding = RoundRecipe.from_config(cfg, 1076).encoding
    assert encoding is not None and secure.rounds == 5
    event = secure.events[0]
    assert event.mechanism == "ddg" and event.dimension == encoding.padded_dimension == 2048
    assert event.sensitivity == encoding.sensitivity / encoding.clip_norm > 1.0
    with pytest.raises(FederatedConfigError, match="needs n_parameters"):
        PrivacyLedger.planned_from(cfg)


def test_the_trainer_plans_and_spends_through_the_same_recipe(tmp_path: Path) -> None:
    cfg = _config({**EASY, "secure_aggregation.mode": "sum_only",
                   "privacy.noise_multiplier": 0.5})
    task = SyntheticRegressionTask(n_devices=400, n_features=3, seed=1)
    trainer = FederatedTrainer(task, cfg)
    planned = trainer.planned_ledger()
    # the simulator's rounds: secure aggregation and each device's own (secret) coin
    assert planned == PrivacyLedger.planned_from(cfg, task.n_parameters, secret_sampling=True)
    assert all(e.secure_aggregation and e.secret_sampling for e in planned.events)
    trainer.fit(np.random.default_rng(2))
    # every opened round is recorded with the planned round's event (same mechanism)
    assert {e.mechanism for e in trainer.ledger_.events} == {"ddg"}
    assert set(trainer.ledger_.events) <= set(planned.events)
