"""The aggregation strategies, one file each; every module here registers itself.

To add a strategy, add a file with a :class:`federated.Strategy` subclass decorated by
:func:`federated.register_strategy` (its typed :class:`federated.StrategyOptions` and
whether it aggregates a secure sum). Importing this package imports every module in it.
"""

import importlib
import pkgutil

from federated.strategies.fedadam import FedAdam, FedAdamOptions
from federated.strategies.fedavg import FedAvg, FedAvgOptions
from federated.strategies.trimmed_mean import TrimmedMean, TrimmedMeanOptions, trimmed_mean

__all__ = ["FedAdam", "FedAdamOptions", "FedAvg", "FedAvgOptions", "TrimmedMean",
           "TrimmedMeanOptions", "trimmed_mean"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
