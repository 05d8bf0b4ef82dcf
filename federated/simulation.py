"""The simulated device population: the building blocks the trainer runs.

:class:`federated.FederatedTrainer` simulates every device of a run; this submodule is
for code that drives devices itself — tests and benchmarks: the population (eligibility,
latency, dropout), the per-device round runtime and its named random streams.
"""

from federated._client import STREAM_NAMES, DeviceRoundResult, DeviceRuntime, RandomStreams
from federated._device import DevicePopulation

__all__ = ["STREAM_NAMES", "DevicePopulation", "DeviceRoundResult", "DeviceRuntime",
           "RandomStreams"]
