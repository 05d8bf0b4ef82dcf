"""What both reranker tasks share: the simulated phones' state and the central reference.

Each task keeps ``alive`` (sessions still on the phone), ``user_state`` / ``has_state``
(personal embeddings), ``sessions.ts`` and ``split_ts``, and trains devices through
``local_train``; :class:`DeviceStateMixin` gives them retention, checkpointing of that
state and the non-private central reference once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data import progress

__all__ = ["DeviceStateMixin"]


class DeviceStateMixin:
    """Retention, device-state checkpoints and central training for a reranker task."""

    alive: np.ndarray
    user_state: np.ndarray
    has_state: np.ndarray
    sessions: Any
    split_ts: float

    def initial_parameters(self) -> np.ndarray:  # provided by the task
        raise NotImplementedError

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> Any:  # provided by the task
        raise NotImplementedError

    def forget_before(self, cutoff_s: float) -> int:
        """Delete sessions older than the retention cut-off (the clock starts at the split);
        returns how many went."""
        old = self.alive & (self.sessions.ts < self.split_ts + cutoff_s)
        self.alive[old] = False
        return int(old.sum())

    def device_state(self) -> dict[str, np.ndarray]:
        """On-device state to checkpoint (simulation only; never uploaded)."""
        return {"user_state": self.user_state.copy(), "has_state": self.has_state.copy(),
                "alive": self.alive.copy()}

    def load_device_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`device_state`."""
        self.user_state = state["user_state"].copy()
        self.has_state = state["has_state"].copy()
        self.alive = state["alive"].copy()

    def _central_sgd(self, devices: np.ndarray, epochs: int, batch_devices: int,
                     learning_rate: float, rng: np.random.Generator | None,
                     show_progress: bool) -> np.ndarray:
        """Minibatch SGD over ``devices`` (the mean local delta applied at once), (P,)."""
        rng = rng or np.random.default_rng(0)
        theta = self.initial_parameters()
        with progress("central training", total=epochs * devices.size,
                      show=show_progress) as bar:
            for _ in range(epochs):
                order = rng.permutation(devices)
                for lo in range(0, order.size, batch_devices):
                    batch = order[lo: lo + batch_devices]
                    result = self.local_train(theta, batch, rng)
                    weights = result.n_examples.astype(np.float64)
                    if weights.sum() > 0:
                        step = (weights[:, None] * result.deltas).sum(0) / weights.sum()
                        theta = (theta + learning_rate * step).astype(np.float32)
                    bar.advance(batch.size)
        return theta
