"""The app on top of the device client: what runs on the phone besides the protocol.

The platform's client (:class:`federated._device_client.DeviceClient`) knows nothing of
the application. A task that can run as a real app on each device gives the population
runner one :class:`DeviceApp` per device (``task.device_app(device, path)``): the app
keeps its private data in the device's own SQLite file, serves its user locally, trains
from that file, and measures itself on the device. The runner only calls these methods;
it never reads the app's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from federated._transport import HttpTransport

__all__ = ["DeviceApp", "DeviceAppFactory"]


@runtime_checkable
class DeviceApp(Protocol):
    """One device's application (its private state lives in its own store)."""

    def sync(self, transport: HttpTransport) -> None:
        """Download what the app serves its user from (its bundle), if it changed (ETag)."""
        ...

    def use(self, step: int, steps: int, parameters: np.ndarray, model_version: int) -> int:
        """The user uses the app up to step ``step + 1`` of ``steps`` of the run's time
        span: everything is computed on the device with ``parameters`` (P,) of
        ``model_version`` and what the user does is appended to the device's store;
        returns how many uses were logged."""
        ...

    def train(self, parameters: np.ndarray) -> np.ndarray | None:
        """Local training from the store's examples: the delta (P,), or None when the
        device has nothing to learn from (it then sits the round out)."""
        ...

    def evaluate(self, parameters: np.ndarray, model_version: int) -> dict[str, float]:
        """Counts (summable across devices) of the app's own metric under
        ``parameters`` (P,) of ``model_version`` on the device's held-out uses; an empty
        dict when it has none."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class DeviceAppFactory(Protocol):
    """``task.device_app``: the app of simulated device ``device``, its store at ``path``."""

    def __call__(self, device: int, path: Path) -> DeviceApp:
        ...
