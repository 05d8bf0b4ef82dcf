"""Device side of a round: check in, train locally, clip, add noise, upload (no id).

Everything in this module runs "on the phones": the raw deltas returned by the task
are clipped and noised here, row by row, before anything is handed to the server side
(:mod:`federated._server`). The upload batch is shuffled so even its row order does not
follow device indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from federated._config import DeviceConfig
from federated._ddg import DiscreteGaussianEncoding
from federated._device import DevicePopulation
from federated._local_dp import add_gaussian_noise, clip_deltas
from federated._strategy import RoundPlan
from federated._task import FederatedTask
from federated._upload import UploadBatch

__all__ = ["STREAM_NAMES", "DeviceRoundResult", "DeviceRuntime", "RandomStreams"]

STREAM_NAMES: tuple[str, ...] = ("schedule", "participation", "task", "noise", "rounding")
"""The named random streams of a run, in spawn order (never reorder: it changes draws)."""


@dataclass
class RandomStreams:
    """Independent random streams of a federated run (``SeedSequence.spawn``).

    ``schedule``: the population, eligibility, latency, nonces and upload order;
    ``participation``: the Poisson coins and dropouts; ``task``: the task's local
    training; ``noise``: the DP noise only; ``rounding``: the stochastic rounding of the
    discrete encoding (its use depends on the deltas, so it is kept off ``noise``). Changing
    how much one stream is used never changes another's draws, so a task's code can
    change without moving a single noise draw (as Opacus keeps a separate noise
    generator).

    **Deployment switch**: the simulator seeds every stream for reproducibility; a real
    device must draw its noise from a cryptographically secure source instead —
    ``RandomStreams(..., noise=federated.secure_noise_generator())`` (fresh OS entropy);
    the device client does exactly that.
    """

    schedule: np.random.Generator
    participation: np.random.Generator
    task: np.random.Generator
    noise: np.random.Generator
    rounding: np.random.Generator

    @classmethod
    def spawn(cls, seed: int | np.random.SeedSequence | np.random.Generator) -> RandomStreams:
        """Independent streams from a seed (or spawned from a Generator)."""
        if isinstance(seed, np.random.Generator):
            children = seed.spawn(len(STREAM_NAMES))
        else:
            sequence = seed if isinstance(seed, np.random.SeedSequence) else (
                np.random.SeedSequence(seed))
            children = [np.random.default_rng(s) for s in sequence.spawn(len(STREAM_NAMES))]
        return cls(*children)

    @classmethod
    def shared(cls, rng: np.random.Generator) -> RandomStreams:
        """Every stream is ``rng`` (one generator for everything; benchmarks only)."""
        return cls(rng, rng, rng, rng, rng)

    def state_dict(self) -> dict[str, Any]:
        """Each stream's bit-generator state (JSON-friendly), by name."""
        return {name: getattr(self, name).bit_generator.state for name in STREAM_NAMES}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for name in STREAM_NAMES:
            getattr(self, name).bit_generator.state = state[name]


def _streams(rng: np.random.Generator | RandomStreams) -> RandomStreams:
    return rng if isinstance(rng, RandomStreams) else RandomStreams.shared(rng)


@dataclass(frozen=True)
class DeviceRoundResult:
    """What the devices produced in one round.

    Attributes
    ----------
    uploads : UploadBatch
        The uploads that were sent (B rows, shuffled, no ids).
    arrival_s : ndarray, shape (B,), float64
        When each upload reaches the server (simulated clock).
    eligible, sampled, dropped : int
        Devices eligible at check-in, Poisson-sampled among them, and lost before upload.
    mean_loss : float
        Mean local training loss of the devices that uploaded (NaN if none/unknown).
    reports : ndarray, shape (B, D), uint32, optional
        Under secure aggregation: each upload's encoded, noised report in Z_{2^b}, in
        the order of ``uploads`` (whose ``deltas`` are then empty, shape (B, 0)).
    """

    uploads: UploadBatch
    arrival_s: np.ndarray
    eligible: int
    sampled: int
    dropped: int
    mean_loss: float
    reports: np.ndarray | None = None


class DeviceRuntime:
    """The on-device FL runtime of every simulated device, vectorised.

    Parameters
    ----------
    task : FederatedTask
        The model; holds the private logs and personal state.
    population : DevicePopulation
        Eligibility schedules, model versions, upload tallies.
    config : DeviceConfig
        Eligibility thresholds, latency and dropout.
    max_uploads_per_day : int
        Per-device daily upload cap.
    batch_size : int
        Devices per vectorised ``local_train`` call.
    """

    def __init__(self, task: FederatedTask, population: DevicePopulation, config: DeviceConfig,
                 *, max_uploads_per_day: int, batch_size: int = 4096) -> None:
        if len(population) > task.n_devices:
            raise ValueError(f"population of {len(population)} devices should be <= the task's "
                             f"n_devices={task.n_devices}")
        self.task = task
        self.population = population
        self.config = config
        self.max_uploads_per_day = max_uploads_per_day
        self.batch_size = batch_size

    def check_in(self, plan: RoundPlan, rng: np.random.Generator | RandomStreams
                 ) -> tuple[int, np.ndarray]:
        """Eligible devices flip their own coin with probability q (Poisson sampling).

        Returns (number eligible, sampled device indices (S,) int64, sorted).
        """
        streams = _streams(rng)
        pop = self.population
        ok = pop.eligible(plan.open_s, self.config, streams.schedule)
        ok &= pop.under_daily_cap(plan.open_s, self.max_uploads_per_day)
        ok &= pop.last_round != plan.round  # at most one upload per round
        coin = streams.participation.random(len(pop)) < plan.sampling_rate
        return int(ok.sum()), np.flatnonzero(ok & coin).astype(np.int64)

    def train_and_privatize(self, plan: RoundPlan, parameters: np.ndarray, devices: np.ndarray,
                            rng: np.random.Generator | RandomStreams,
                            encoding: DiscreteGaussianEncoding | None = None
                            ) -> tuple[np.ndarray, np.ndarray, float]:
        """Local training, then on-device clipping and noise, for ``devices`` (B,).

        Returns noisy deltas (B, P) float32 — or, with an ``encoding`` (secure
        aggregation), reports (B, D) uint32 — bounded counts (B,) int64, mean loss.
        """
        streams = _streams(rng)
        deltas, counts, losses = [], [], []
        for start in range(0, len(devices), self.batch_size):
            chunk = devices[start:start + self.batch_size]
            result = self.task.local_train(parameters, chunk, streams.task)
            d = np.asarray(result.deltas, dtype=np.float32)
            if encoding is not None:
                assert plan.clip_norm is not None and plan.rotation_seed is not None
                d = encoding.encode(clip_deltas(d, plan.clip_norm), plan.rotation_seed,
                                    streams.rounding, streams.noise)
            elif plan.clip_norm is not None:
                d = clip_deltas(d, plan.clip_norm)
                d = add_gaussian_noise(d, plan.clip_norm, plan.noise_multiplier, streams.noise)
            deltas.append(d)
            counts.append(np.clip(np.asarray(result.n_examples, np.int64), 0, plan.max_examples))
            if result.loss is not None:
                losses.append(np.asarray(result.loss, np.float64))
        if not deltas:
            width = encoding.padded_dimension if encoding else self.task.n_parameters
            return (np.zeros((0, width), np.uint32 if encoding else np.float32),
                    np.zeros(0, np.int64), float("nan"))
        mean_loss = float(np.concatenate(losses).mean()) if losses else float("nan")
        return np.concatenate(deltas), np.concatenate(counts), mean_loss

    def run_round(self, plan: RoundPlan, parameters: np.ndarray,
                  rng: np.random.Generator | RandomStreams,
                  encoding: DiscreteGaussianEncoding | None = None) -> DeviceRoundResult:
        """One round on every device: check in, download, train, privatize, upload.

        With an ``encoding`` (secure aggregation) the result's ``reports`` hold the
        encoded reports and ``uploads`` only their metadata.
        """
        streams = _streams(rng)
        n_eligible, sampled = self.check_in(plan, streams)
        # Devices that will drop out (network loss, user activity) never upload; they are
        # decided up front so the simulation does not train them for nothing.
        dropped = streams.participation.random(len(sampled)) < self.config.dropout_rate
        uploading = sampled[~dropped]
        self.population.model_version[sampled] = plan.model_version
        deltas, counts, mean_loss = self.train_and_privatize(plan, parameters, uploading,
                                                             streams, encoding)
        b = len(uploading)
        sched = streams.schedule
        latency = sched.lognormal(np.log(self.config.latency_median_s),
                                  self.config.latency_sigma, b)
        nonces = sched.integers(0, np.iinfo(np.uint64).max, size=(b, 2), dtype=np.uint64,
                                endpoint=True)
        self.population.record_uploads(uploading, plan.round, plan.open_s)
        order = sched.permutation(b)
        reports = None
        if encoding is not None:
            reports = deltas[order]
            deltas = np.zeros((b, 0), np.float32)
        else:
            deltas = deltas[order]
        uploads = UploadBatch(
            round=np.full(b, plan.round, np.int64),
            model_version=np.full(b, plan.model_version, np.int64),
            deltas=deltas, n_examples=counts[order], nonces=nonces,
        )
        return DeviceRoundResult(uploads=uploads, arrival_s=plan.open_s + latency[order],
                                 eligible=n_eligible, sampled=len(sampled),
                                 dropped=int(dropped.sum()), mean_loss=mean_loss,
                                 reports=reports)
