"""The task interface: what any on-device model must offer the platform.

The platform is application-agnostic: it never sees a device's log or personal state,
only calls :meth:`FederatedTask.local_train` with device *indices*; everything private
lives behind the task. A task is found by name in :func:`load_task`, from the built-in
tasks and the ``sticker_suggest.federated_tasks`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from federated._errors import TaskNotFoundError

__all__ = [
    "TASK_ENTRY_POINT_GROUP",
    "FederatedTask",
    "LocalResult",
    "StatefulTask",
    "TaskContext",
    "TaskFactory",
    "available_tasks",
    "load_task",
    "register_task",
]

TASK_ENTRY_POINT_GROUP = "sticker_suggest.federated_tasks"


@dataclass(frozen=True)
class LocalResult:
    """What a batch of devices' local training returns (before clipping and noise).

    Attributes
    ----------
    deltas : ndarray, shape (B, P), float32
        Each device's locally trained parameters minus the global parameters it received.
    n_examples : ndarray, shape (B,), int64
        How many private examples each device trained on (the platform bounds it).
    loss : ndarray, shape (B,), float32, optional
        Each device's local training loss before its update (for progress only; it never
        leaves the simulation, a real device would not send it).
    """

    deltas: np.ndarray
    n_examples: np.ndarray
    loss: np.ndarray | None = None


@runtime_checkable
class FederatedTask(Protocol):
    """An on-device model the platform can train.

    Parameters are one flat float32 vector of length ``n_parameters``. Devices are
    ``0 .. n_devices-1``; the task owns every device's private log and personal state
    (e.g. a personal embedding). Timestamps are seconds on the platform's
    simulated clock.

    Attributes
    ----------
    name : str
        Short name; also the artifact kind and directory under ``var/``.
    n_parameters : int
        P, the length of the global parameter vector.
    n_devices : int
        N, the number of simulated devices whose private data the task holds.
    """

    name: str
    n_parameters: int
    n_devices: int

    def initial_parameters(self) -> np.ndarray:
        """The starting global parameters, shape (P,), float32."""
        ...

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        """Train a batch of devices locally, vectorised, from their private logs.

        Parameters
        ----------
        parameters : ndarray, shape (P,), float32
            The global parameters every device in the batch downloaded.
        devices : ndarray, shape (B,), int64
            Device indices into the task's private per-device storage; distinct.
        rng : numpy.random.Generator
            The only source of randomness (minibatch order, dropout ...).

        Returns
        -------
        LocalResult
            Deltas (B, P), example counts (B,), optional losses (B,). Personal state
            (e.g. user embeddings) may be updated in place on the task; it never leaves.
        """
        ...

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        """Held-out metrics of global ``parameters`` (P,), e.g. ``{"accuracy": 0.91}``."""
        ...

    def export(self, parameters: np.ndarray, directory: Path) -> list[str]:
        """Write the model files for ``parameters`` into ``directory``; return their names."""
        ...

    def forget_before(self, cutoff_s: float) -> int:
        """Delete every device's training log entries older than ``cutoff_s``.

        The retention window: called by each device's background scheduler. Returns
        how many entries were deleted across all devices.
        """
        ...


@runtime_checkable
class StatefulTask(Protocol):
    """Optional: a task whose per-device state changes during training (personal
    embeddings, retention marks) implements these so a resumed run continues exactly."""

    def device_state(self) -> dict[str, np.ndarray]:
        """Every per-device array that training or retention changes."""
        ...

    def load_device_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`device_state` returned."""
        ...


@dataclass(frozen=True)
class TaskContext:
    """What a task factory receives from ``stickers federated train --task NAME``.

    Attributes
    ----------
    var : Path
        The artifact root (stage-1 artifact, world datasets live under it).
    seed : int
        The run's seed.
    options : mapping of str to str
        ``--task-option key=value`` pairs, e.g. ``{"world": "small", "stage1": "latest"}``.
    """

    var: Path
    seed: int = 0
    options: Mapping[str, str] = field(default_factory=dict)


TaskFactory = Callable[[TaskContext], FederatedTask]

_BUILTIN: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory) -> None:
    """Register a task factory in-process (tests, the built-in synthetic task)."""
    _BUILTIN[name] = factory


def available_tasks() -> list[str]:
    """Names of every registered task: built-in ones and entry points."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=TASK_ENTRY_POINT_GROUP)})


def load_task(name: str, context: TaskContext) -> FederatedTask:
    """Build the task registered as ``name``.

    Entry points of the group ``sticker_suggest.federated_tasks`` name a factory
    ``(TaskContext) -> FederatedTask``; in-process registrations win over them.

    Raises
    ------
    TaskNotFoundError
        If nothing is registered under ``name``.
    """
    factory = _BUILTIN.get(name)
    if factory is None:
        for ep in entry_points(group=TASK_ENTRY_POINT_GROUP):
            if ep.name == name:
                factory = ep.load()
                break
    if factory is None:
        raise TaskNotFoundError(
            f"no federated task named {name!r}; available: {', '.join(available_tasks())} "
            f"(tasks register under the entry-point group {TASK_ENTRY_POINT_GROUP!r})"
        )
    task = factory(context)
    if not isinstance(task, FederatedTask):
        raise TaskNotFoundError(f"task factory {name!r} returned {type(task).__name__}, "
                           "which does not implement FederatedTask")
    return task
