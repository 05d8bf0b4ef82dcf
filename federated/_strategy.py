"""The small base class every aggregation strategy implements (Flower-style), and the
registry of strategies.

A strategy turns the accepted uploads of one round into new global parameters. It may
also shape what devices are told for the round (:meth:`Strategy.configure_round`), which
is how the differential-privacy wrapper tells devices to clip and add noise.

Adding a strategy is one new file in :mod:`federated.strategies`: a :class:`Strategy`
subclass decorated with :func:`register_strategy`, naming its typed options (a
:class:`StrategyOptions` model whose fields are the constructor's keyword arguments) and
whether it can aggregate a secure *sum*. The package imports every module in that folder,
so the config (``[strategy] name = ...``), the CLI's ``--strategy`` choices and
:func:`federated.build_strategy` pick it up with no other edit.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "Aggregate",
    "RegisteredStrategy",
    "RoundPlan",
    "Strategy",
    "StrategyOptions",
    "StrategyWrapper",
    "available_strategies",
    "option_names",
    "register_strategy",
    "registered_strategy",
]


@dataclass(frozen=True)
class RoundPlan:
    """What the server announces when it opens a round (all public).

    Attributes
    ----------
    round : int
        Round number r (0-based).
    model_version : int
        Version v of the global parameters the round trains from.
    open_s, deadline_s : float
        Simulated clock (seconds) when the round opens and when uploads stop counting.
    sampling_rate : float
        q, each eligible device's chance of taking part.
    max_examples : int
        Devices bound their reported example count to this.
    clip_norm : float or None
        C: devices clip their delta to this L2 norm (None: no clipping).
    noise_multiplier : float
        σ: devices add N(0, σ²C²) per coordinate (0: no noise).
    rotation_seed : int or None
        Under secure aggregation: the public seed of the round's random rotation.
    """

    round: int
    model_version: int
    open_s: float
    deadline_s: float
    sampling_rate: float
    max_examples: int
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    rotation_seed: int | None = None


@dataclass(frozen=True)
class Aggregate:
    """A strategy's result: new parameters (P,) float32 and aggregation metrics."""

    parameters: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """Base class of aggregation strategies; one subclass per file.

    Subclasses store their parameters in ``__init__`` (validating them there) and keep
    any server-optimizer state in arrays exposed through :meth:`state_dict` so a run can
    be checkpointed and resumed.
    """

    name: str = "strategy"

    def configure_round(self, plan: RoundPlan) -> RoundPlan:
        """The plan devices receive for the round; unchanged by default."""
        return plan

    @abstractmethod
    def aggregate(self, parameters: np.ndarray, deltas: np.ndarray,
                  n_examples: np.ndarray) -> Aggregate:
        """New global parameters from one round's accepted uploads.

        Parameters
        ----------
        parameters : ndarray, shape (P,), float32
            Current global parameters.
        deltas : ndarray, shape (n, P), float32
            Accepted deltas, n >= 1.
        n_examples : ndarray, shape (n,), int64
            Their bounded example counts.
        """

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        """New parameters from the *sum* of a round's deltas (secure aggregation).

        Sum-based strategies (FedAvg, FedAdam with uniform weights) override this; the
        others need individual reports and cannot run under secure aggregation.

        Parameters
        ----------
        parameters : ndarray, shape (P,), float32
        delta_sum : ndarray, shape (P,), float64
            Σ of the n reports (noise included).
        n_reports : int
            n >= 1.
        """
        raise NotImplementedError(f"strategy {self.name!r} needs individual reports; it "
                                  "cannot aggregate a secure sum")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Server-side optimizer state to checkpoint (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        del state  # stateless by default

    def describe(self) -> dict[str, object]:
        """Name and parameters, for artifacts and logs."""
        return {"name": self.name}

    @classmethod
    def from_options(cls, options: StrategyOptions) -> Strategy:
        """The strategy built from its typed options (fields = constructor keywords)."""
        return cls(**options.model_dump())


class StrategyWrapper(Strategy):
    """A strategy that wraps another one (norm bound, differential privacy)."""

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise TypeError(f"inner={inner!r} should be a Strategy")
        self.inner = inner

    def configure_round(self, plan: RoundPlan) -> RoundPlan:
        return self.inner.configure_round(plan)

    def aggregate_sum(self, parameters: np.ndarray, delta_sum: np.ndarray,
                      n_reports: int) -> Aggregate:
        return self.inner.aggregate_sum(parameters, delta_sum, n_reports)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.inner.load_state_dict(state)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "inner": self.inner.describe()}




# ---------------------------------------------------------------------------- registry


class StrategyOptions(BaseModel):
    """Base of a strategy's typed options: one pydantic model per strategy file.

    Field names are the strategy constructor's keyword arguments; defaults are the
    platform's defaults (what ``[strategy]`` gives when the key is absent).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class RegisteredStrategy:
    """A strategy as the registry knows it.

    Attributes
    ----------
    name : str
        The ``[strategy] name`` that selects it.
    strategy : type of Strategy
        The class; built with :meth:`Strategy.from_options`.
    options : type of StrategyOptions
        Its typed options.
    sum_based : bool
        Whether it can aggregate the *sum* of a round's reports
        (:meth:`Strategy.aggregate_sum`), which secure aggregation and the
        ``secure_sum`` guarantee need.
    """

    name: str
    strategy: type[Strategy]
    options: type[StrategyOptions]
    sum_based: bool


_REGISTRY: dict[str, RegisteredStrategy] = {}
_S = TypeVar("_S", bound=type[Strategy])


def register_strategy(name: str, *, options: type[StrategyOptions], sum_based: bool
                      ) -> Callable[[_S], _S]:
    """Class decorator: register a :class:`Strategy` under ``name``.

    Raises
    ------
    ValueError
        If another class is already registered under ``name``.
    """
    def decorate(cls: _S) -> _S:
        known = _REGISTRY.get(name)
        if known is not None and known.strategy is not cls:
            raise ValueError(f"strategy name {name!r} is taken by "
                             f"{known.strategy.__module__}.{known.strategy.__name__}")
        _REGISTRY[name] = RegisteredStrategy(name, cls, options, sum_based)
        return cls
    return decorate


def _load_builtin() -> None:
    importlib.import_module("federated.strategies")  # registers every file in the folder


def available_strategies() -> list[str]:
    """Names of every registered strategy, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def registered_strategy(name: str) -> RegisteredStrategy:
    """The registry entry of ``name``.

    Raises
    ------
    ValueError
        Naming the registered strategies.
    """
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"strategy name={name!r} is not registered; use one of "
                         f"{sorted(_REGISTRY)}") from None


def option_names() -> dict[str, set[str]]:
    """Every registered strategy's option names, by strategy (for config validation)."""
    _load_builtin()
    return {n: set(e.options.model_fields) for n, e in _REGISTRY.items()}
