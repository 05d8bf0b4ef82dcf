"""The task interface: what any on-device model must offer the platform.

The platform is application-agnostic: it never sees a device's log or personal state,
only calls :meth:`FederatedTask.local_train` with device *indices*; everything private
lives behind the task. A task is found by name in :func:`load_task`: the platform's own
tasks, every module of the task package :data:`TASK_PACKAGE` (each registers its factory
with ``@register_task(name)``, so adding a task is one file there) and, for tasks that
other installed distributions provide, the ``sticker_suggest.federated_tasks``
entry-point group.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, TypeVar, overload, runtime_checkable

import numpy as np

from federated._errors import TaskNotFoundError

__all__ = [
    "TASK_ENTRY_POINT_GROUP",
    "TASK_PACKAGE",
    "FederatedTask",
    "LocalResult",
    "StatefulTask",
    "TaskContext",
    "TaskFactory",
    "available_tasks",
    "discover_tasks",
    "load_task",
    "project_tasks",
    "register_task",
]

TASK_ENTRY_POINT_GROUP = "sticker_suggest.federated_tasks"
"""Entry-point group of tasks from other installed distributions (name = factory)."""
TASK_PACKAGE = "tasks"
"""The project's task package: every module in it is imported when a task is looked up,
and registers its factory with ``@register_task(name)``."""


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

_REGISTRY: dict[str, TaskFactory] = {}


F = TypeVar("F", bound=TaskFactory)


@overload
def register_task(name: str) -> Callable[[F], F]: ...


@overload
def register_task(name: str, factory: F) -> F: ...


def register_task(name: str, factory: F | None = None) -> F | Callable[[F], F]:
    """Register a task factory ``(TaskContext) -> FederatedTask`` under ``name``.

    Used as a decorator, ``@register_task(name)``, in a module of :data:`TASK_PACKAGE`:
    that module is the whole of a task (the package is imported when a task is looked
    up)::

        @register_task("tiny_regression")
        def make(context: TaskContext) -> TinyRegression:
            return TinyRegression(n_devices=40, n_features=4, seed=context.seed)

    Called with the factory, it registers in-process (the platform's own tasks, tests).
    A later registration of the same name replaces the earlier one.
    """
    def decorate(f: F) -> F:
        _REGISTRY[name] = f
        return f

    return decorate if factory is None else decorate(factory)


def discover_tasks(package: str = TASK_PACKAGE) -> list[str]:
    """Import every module of ``package``, so that each registers its tasks.

    Modules are listed afresh on every call (a file added since is found); ones already
    imported are not imported again. A missing ``package`` (the platform used without a
    task package) is no task, not an error.

    Returns
    -------
    list of str
        The modules' full names.
    """
    try:
        root = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name == package:
            return []
        raise
    names = [info.name for info in pkgutil.iter_modules(getattr(root, "__path__", []),
                                                        f"{package}.")]
    for name in names:
        importlib.import_module(name)
    return names


def _entry_point_names() -> set[str]:
    return {ep.name for ep in entry_points(group=TASK_ENTRY_POINT_GROUP)}


def available_tasks() -> list[str]:
    """Names of every task: the platform's own, the task package's and entry points."""
    discover_tasks()
    return sorted(set(_REGISTRY) | _entry_point_names())


def project_tasks() -> list[str]:
    """The tasks the project adds (its task package's and entry points), without the
    platform's own examples: what ``--task`` defaults to when there is one."""
    discover_tasks()
    own = {name for name, factory in _REGISTRY.items()
           if getattr(factory, "__module__", "").split(".")[0] == __name__.split(".")[0]}
    return sorted((set(_REGISTRY) - own) | _entry_point_names())


def load_task(name: str, context: TaskContext) -> FederatedTask:
    """Build the task registered as ``name``.

    In-process registrations (the platform's own tasks and the task package's modules)
    win over entry points of the group ``sticker_suggest.federated_tasks``, which name a
    factory ``(TaskContext) -> FederatedTask``.

    Raises
    ------
    TaskNotFoundError
        If nothing is registered under ``name`` (the message lists the known tasks), or
        the factory's result does not implement :class:`FederatedTask`.
    """
    factory = _REGISTRY.get(name)
    if factory is None:  # the platform's own are registered already; import the package's
        discover_tasks()
        factory = _REGISTRY.get(name)
    if factory is None:
        for ep in entry_points(group=TASK_ENTRY_POINT_GROUP):
            if ep.name == name:
                factory = ep.load()
                break
    if factory is None:
        raise TaskNotFoundError(
            f"no federated task named {name!r}; known tasks: "
            f"{', '.join(available_tasks()) or 'none'} (a task is a module of the package "
            f"{TASK_PACKAGE!r} whose factory is decorated @federated.register_task(NAME), "
            f"or an entry point of the group {TASK_ENTRY_POINT_GROUP!r})")
    built = factory(context)
    if not isinstance(built, FederatedTask):
        raise TaskNotFoundError(f"task factory {name!r} returned {type(built).__name__}, "
                                "which does not implement FederatedTask")
    return built
