"""Aggregation strategies: one file each, and the pieces a strategy is built from.

A run names its strategy in its config (``[strategy] name = ...``) and
:func:`federated.build_strategy` builds it, with the norm bound and differential privacy
wrapped around it. This package is for code that composes strategies itself — tests,
benchmarks, a new strategy.

To add a strategy, add a file here with a :class:`Strategy` subclass decorated by
:func:`register_strategy` (its typed :class:`StrategyOptions` and whether it aggregates a
secure sum), plus its test. Importing this package imports every module in it, so the
config, the CLI's ``--strategy`` choices and :func:`federated.build_strategy` pick it up.
"""

import importlib
import pkgutil

from federated._dp import DifferentialPrivacy
from federated._norm_bound import NormBound, noisy_norm_bound
from federated._strategy import (
    Aggregate,
    RegisteredStrategy,
    Strategy,
    StrategyOptions,
    StrategyWrapper,
    available_strategies,
    register_strategy,
    registered_strategy,
)
from federated.strategies.fedadam import FedAdam, FedAdamOptions
from federated.strategies.fedavg import FedAvg, FedAvgOptions
from federated.strategies.trimmed_mean import TrimmedMean, TrimmedMeanOptions, trimmed_mean

__all__ = [
    "Aggregate",
    "DifferentialPrivacy",
    "FedAdam",
    "FedAdamOptions",
    "FedAvg",
    "FedAvgOptions",
    "NormBound",
    "RegisteredStrategy",
    "Strategy",
    "StrategyOptions",
    "StrategyWrapper",
    "TrimmedMean",
    "TrimmedMeanOptions",
    "available_strategies",
    "noisy_norm_bound",
    "register_strategy",
    "registered_strategy",
    "trimmed_mean",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
