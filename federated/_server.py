"""Server side of a round: open it, accept uploads until the deadline, aggregate or abandon.

The server never learns which device sent what: it sees only :class:`UploadBatch`
rows (round, model version, noisy delta, bounded count, nonce).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from federated._config import FederatedConfig
from federated._recipe import build_strategy
from federated._strategy import RoundPlan, Strategy
from federated._upload import UploadBatch

__all__ = ["RoundOutcome", "Server"]


@dataclass(frozen=True)
class RoundOutcome:
    """How a round ended.

    Attributes
    ----------
    round : int
    status : str
        ``aggregated`` or ``abandoned``.
    accepted, late, stale, duplicate, invalid : int
        Upload counts by fate.
    message : str
        One line for humans (says why a round was abandoned).
    metrics : dict
        The strategy's aggregation metrics.
    """

    round: int
    status: str
    accepted: int
    late: int
    stale: int
    duplicate: int
    invalid: int
    message: str
    metrics: dict[str, float] = field(default_factory=dict)


class Server:
    """The aggregation server: holds the global parameters and their version.

    Parameters
    ----------
    strategy : Strategy
        How accepted uploads become new parameters (possibly wrapped in DP, NormBound).
    parameters : ndarray, shape (P,)
        Initial global parameters.
    min_reports : int
        Rounds with fewer in-time uploads are abandoned.
    deadline_s : float
        Upload window after opening.
    sampling_rate : float
        q announced to devices.
    max_examples : int
        Bound on reported example counts.
    model_version : int
        Version of ``parameters``.
    """

    def __init__(self, strategy: Strategy, parameters: np.ndarray, *, min_reports: int,
                 deadline_s: float, sampling_rate: float, max_examples: int,
                 model_version: int = 0) -> None:
        if min_reports < 1:
            raise ValueError(f"min_reports={min_reports} should be >= 1")
        self.strategy = strategy
        self.parameters = np.asarray(parameters, np.float32).copy()
        self.min_reports = min_reports
        self.deadline_s = deadline_s
        self.sampling_rate = sampling_rate
        self.max_examples = max_examples
        self.model_version = model_version
        self._plan: RoundPlan | None = None
        self._accepted: list[UploadBatch] = []
        self._seen: set[tuple[int, int]] = set()
        self._counts = dict(late=0, stale=0, duplicate=0, invalid=0)

    @classmethod
    def from_config(cls, config: FederatedConfig, parameters: np.ndarray, *,
                    model_version: int = 0, secure: bool | None = None,
                    deadline_s: float | None = None, min_reports: int | None = None,
                    sampling_rate: float | None = None, max_examples: int | None = None
                    ) -> Server:
        """The server of ``config``'s strategy (:func:`federated.build_strategy`) and schedule.

        Parameters
        ----------
        config : FederatedConfig
        parameters : ndarray, shape (P,)
            The global parameters to start from (P sets ``norm_bound = "auto"``).
        model_version : int
            Their version.
        secure : bool, optional
            Whether the rounds run secure aggregation (default: the config's).
        deadline_s, min_reports, sampling_rate, max_examples : optional
            The values a stored round was opened with, when they are at hand (default:
            the config's ``rounds`` section).
        """
        r = config.rounds
        parameters = np.asarray(parameters)
        return cls(build_strategy(config, int(parameters.shape[0]), secure=secure), parameters,
                   min_reports=r.min_reports if min_reports is None else min_reports,
                   deadline_s=r.deadline_s if deadline_s is None else deadline_s,
                   sampling_rate=r.sampling_rate if sampling_rate is None else sampling_rate,
                   max_examples=r.max_examples if max_examples is None else max_examples,
                   model_version=model_version)

    def open_round(self, round_: int, now_s: float) -> RoundPlan:
        """Open round ``round_`` at ``now_s`` for the current model version; returns the plan."""
        plan = RoundPlan(round=round_, model_version=self.model_version, open_s=now_s,
                         deadline_s=now_s + self.deadline_s, sampling_rate=self.sampling_rate,
                         max_examples=self.max_examples)
        self._plan = self.strategy.configure_round(plan)
        self._accepted = []
        self._seen = set()
        self._counts = dict(late=0, stale=0, duplicate=0, invalid=0)
        return self._plan

    def receive(self, uploads: UploadBatch, arrival_s: np.ndarray) -> np.ndarray:
        """Accept what is current, in time, new and well-formed; returns the accepted mask.

        Stale uploads (another round or model version) and late ones are rejected.
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("receive() before open_round()")
        n = len(uploads)
        current = (uploads.round == plan.round) & (uploads.model_version == plan.model_version)
        in_time = (arrival_s >= plan.open_s) & (arrival_s <= plan.deadline_s)
        valid = ((uploads.n_examples >= 0) & (uploads.n_examples <= plan.max_examples)
                 & np.isfinite(uploads.deltas).all(axis=1)
                 if n else np.zeros(0, bool))
        fresh = np.ones(n, bool)
        for i in np.flatnonzero(current & in_time & valid):
            key = (int(uploads.nonces[i, 0]), int(uploads.nonces[i, 1]))
            if key in self._seen:
                fresh[i] = False
            else:
                self._seen.add(key)
        accepted = current & in_time & valid & fresh
        self._counts["stale"] += int((~current).sum())
        self._counts["late"] += int((current & ~in_time).sum())
        self._counts["invalid"] += int((current & in_time & ~valid).sum())
        self._counts["duplicate"] += int((current & in_time & valid & ~fresh).sum())
        if accepted.any():
            self._accepted.append(uploads.select(accepted))
        return accepted

    def close_secure_round(self, delta_sum: np.ndarray | None, *,
                           message: str = "") -> RoundOutcome:
        """Close a securely aggregated round from the *sum* of its accepted reports.

        ``delta_sum`` (P,) is the decoded sum of the uploads :meth:`receive` accepted
        (the server never saw them one by one), or None if the secure aggregation was
        abandoned. Fewer than ``min_reports`` accepted uploads abandon the round.
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("close_secure_round() before open_round()")
        n = sum(len(b) for b in self._accepted)
        self._plan = None
        c = self._counts
        counts = (c["late"], c["stale"], c["duplicate"], c["invalid"])
        if n < self.min_reports or delta_sum is None:
            why = message or (f"{n} uploads arrived in time, fewer than min_reports="
                              f"{self.min_reports}")
            return RoundOutcome(plan.round, "abandoned", n, *counts,
                                message=f"round {plan.round} abandoned: {why}; model stays "
                                        f"at version {self.model_version}")
        result = self.strategy.aggregate_sum(self.parameters, delta_sum, n)
        self.parameters = np.asarray(result.parameters, np.float32)
        self.model_version += 1
        return RoundOutcome(plan.round, "aggregated", n, *counts,
                            message=f"round {plan.round} securely aggregated the sum of {n} "
                                    f"uploads into version {self.model_version}",
                            metrics=dict(result.metrics))

    def close_round(self) -> RoundOutcome:
        """Aggregate if at least ``min_reports`` uploads arrived in time, else abandon."""
        plan = self._plan
        if plan is None:
            raise RuntimeError("close_round() before open_round()")
        batch = UploadBatch.concat(self._accepted, self.parameters.shape[0])
        n = len(batch)
        self._plan = None
        c = self._counts
        if n < self.min_reports:
            return RoundOutcome(
                plan.round, "abandoned", n, c["late"], c["stale"], c["duplicate"], c["invalid"],
                message=(f"round {plan.round} abandoned: {n} uploads arrived in time, fewer "
                         f"than min_reports={self.min_reports}; model stays at version "
                         f"{self.model_version}"))
        result = self.strategy.aggregate(self.parameters, batch.deltas, batch.n_examples)
        self.parameters = np.asarray(result.parameters, np.float32)
        self.model_version += 1
        return RoundOutcome(
            plan.round, "aggregated", n, c["late"], c["stale"], c["duplicate"], c["invalid"],
            message=f"round {plan.round} aggregated {n} uploads into version "
                    f"{self.model_version}",
            metrics=dict(result.metrics))
