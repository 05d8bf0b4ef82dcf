"""A built-in toy task: federated linear regression on synthetic per-device data.

Application-agnostic on purpose: the platform's benchmark and tests train it, and it
shows the task interface from the implementer's side. Each device holds a few examples
(rows of a shared feature bank, so 100k devices fit in a few MB), labels from a global
linear model plus a personal offset, and a personal bias it learns locally and keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from federated._task import LocalResult, TaskContext, register_task

__all__ = ["SyntheticRegressionTask"]


class SyntheticRegressionTask:
    """Federated linear regression; P = ``n_features`` parameters.

    Parameters
    ----------
    n_devices : int
        N devices.
    n_features : int
        P; ~300 matches the size of a small on-device scoring model.
    examples_per_device : int
        Log entries per device (m).
    local_steps : int
        Full-batch gradient steps per local training.
    learning_rate : float
        Local step size.
    label_noise : float
        Standard deviation of label noise.
    personal_scale : float
        Standard deviation of each device's personal label offset.
    log_span_s : float
        Log timestamps are spread over this many seconds before the clock's start.
    seed : int
        Generates the data (the task's own data, not the training randomness).
    """

    name = "synthetic"

    def __init__(self, n_devices: int = 100_000, n_features: int = 300,
                 examples_per_device: int = 8, local_steps: int = 2,
                 learning_rate: float = 0.5, label_noise: float = 0.1,
                 personal_scale: float = 0.1, bank_size: int = 4096,
                 log_span_s: float = 20 * 86400.0, seed: int = 0) -> None:
        if n_devices < 1 or n_features < 1 or examples_per_device < 1 or local_steps < 1:
            raise ValueError("n_devices, n_features, examples_per_device, local_steps should "
                             "be >= 1")
        self.n_devices = n_devices
        self.n_parameters = n_features
        self.local_steps = local_steps
        self.learning_rate = learning_rate
        gen = np.random.default_rng(seed)
        self._bank = (gen.standard_normal((bank_size, n_features)) / np.sqrt(n_features)
                      ).astype(np.float32)
        self.true_weights = gen.standard_normal(n_features).astype(np.float32)
        m = examples_per_device
        self._rows = gen.integers(0, bank_size, size=(n_devices, m)).astype(np.int32)
        offset = gen.normal(0.0, personal_scale, n_devices).astype(np.float32)
        self._labels = np.empty((n_devices, m), np.float32)
        for s in range(0, n_devices, 8192):  # chunks bound the (n, m, P) gather's memory
            x = self._bank[self._rows[s:s + 8192]]
            self._labels[s:s + 8192] = (x @ self.true_weights + offset[s:s + 8192, None]
                                        + gen.normal(0, label_noise, x.shape[:2]))
        self._timestamps = -gen.uniform(0, log_span_s, size=(n_devices, m))
        self._alive = np.ones((n_devices, m), bool)
        self.personal_bias = np.zeros(n_devices, np.float32)
        test_rows = gen.integers(0, bank_size, size=2000)
        self._test_x = self._bank[test_rows]
        self._test_y = (self._test_x @ self.true_weights
                        + gen.normal(0, label_noise, 2000)).astype(np.float32)
        self.trained_devices: list[np.ndarray] = []
        self.record_calls = False

    def initial_parameters(self) -> np.ndarray:
        """Zeros, shape (P,), float32."""
        return np.zeros(self.n_parameters, np.float32)

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        """``local_steps`` full-batch gradient steps on each device's retained examples."""
        if self.record_calls:
            self.trained_devices.append(devices.copy())
        x = self._bank[self._rows[devices]]                      # (B, m, P)
        y = self._labels[devices]                                # (B, m)
        mask = self._alive[devices].astype(np.float32)           # (B, m)
        count = mask.sum(axis=1)
        inv = 1.0 / np.maximum(count, 1.0)
        w = np.broadcast_to(parameters, (len(devices), self.n_parameters)).copy()
        bias = self.personal_bias[devices].copy()
        loss = None
        for _ in range(self.local_steps):
            residual = (np.einsum("bmp,bp->bm", x, w) + bias[:, None] - y) * mask
            if loss is None:
                loss = (residual * residual).sum(axis=1) * inv
            grad = np.einsum("bmp,bm->bp", x, residual) * inv[:, None]
            w -= self.learning_rate * grad
            bias -= self.learning_rate * residual.sum(axis=1) * inv
        self.personal_bias[devices] = bias
        return LocalResult(deltas=(w - parameters).astype(np.float32),
                           n_examples=count.astype(np.int64),
                           loss=np.asarray(loss, np.float32))

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        """Held-out mean squared error and R² of the global model."""
        pred = self._test_x @ parameters
        mse = float(np.mean((pred - self._test_y) ** 2))
        return {"mse": mse, "r2": 1.0 - mse / float(np.var(self._test_y))}

    def export(self, parameters: np.ndarray, directory: Path) -> list[str]:
        """``weights.npy``."""
        np.save(Path(directory) / "weights.npy", parameters.astype(np.float32))
        return ["weights.npy"]

    def forget_before(self, cutoff_s: float) -> int:
        """Drop log entries older than ``cutoff_s``."""
        old = self._alive & (self._timestamps < cutoff_s)
        self._alive &= ~old
        return int(old.sum())

    def device_state(self) -> dict[str, np.ndarray]:
        """Personal state and retention marks, for exact resume."""
        return {"personal_bias": self.personal_bias, "alive": self._alive}

    def load_device_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`device_state`."""
        self.personal_bias = np.array(state["personal_bias"], np.float32)
        self._alive = np.array(state["alive"], bool)


def _factory(context: TaskContext) -> SyntheticRegressionTask:
    opts = context.options
    return SyntheticRegressionTask(
        n_devices=int(opts.get("n_devices", 100_000)),
        n_features=int(opts.get("n_features", 300)),
        examples_per_device=int(opts.get("examples_per_device", 8)),
        seed=int(opts.get("seed", context.seed)),
    )


register_task("synthetic", _factory)
