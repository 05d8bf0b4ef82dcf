"""The resumable round loop: devices (client side) and server, one round at a time.

``FederatedTrainer(task, config, checkpoint_dir=...).fit(rng)`` runs the simulation; a
checkpoint is written after every round, and a new trainer pointed at the same
directory resumes after the last completed round (see ``_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from data import fingerprint
from federated._accounting import (
    DevicePrivacyAccountant,
    PrivacyLedger,
    RoundPrivacyEvent,
    assumptions_met,
    colluding_clients,
    honest_reports,
    max_affordable_rounds,
    unmask_shortfall,
)
from federated._checkpoint import load_latest_checkpoint, save_checkpoint
from federated._client import DeviceRuntime, RandomStreams
from federated._config import FederatedConfig
from federated._ddg import DiscreteGaussianEncoding
from federated._device import DAY_S, DevicePopulation
from federated._errors import CheckpointError, FederatedConfigError, PrivacyBudgetError
from federated._recipe import RoundRecipe
from federated._secagg import (
    THREAT_MODEL,
    SecAggAbandoned,
    SecAggParams,
    choose_degree_and_threshold,
    run_secagg_round,
)
from federated._server import Server
from federated._strategy import Strategy
from federated._task import FederatedTask, StatefulTask
from federated._upload import UploadBatch

__all__ = ["FederatedTrainer", "RoundRecord", "run_training"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RoundRecord:
    """One round as the progress display and ``metrics.json`` report it.

    ``epsilon`` is the budget kind's ε spent after this round (RDP where it applies, for
    speed; the final ``privacy.json`` uses the configured accountant).
    """

    round: int
    status: str
    open_s: float
    eligible: int
    sampled: int
    dropped: int
    uploaded: int
    accepted: int
    late: int
    stale: int
    loss: float
    epsilon: float
    model_version: int
    message: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN/inf become None)."""
        out = asdict(self)
        for key in ("loss", "epsilon"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


class FederatedTrainer:
    """Runs federated training of ``task`` under ``config``; resumable.

    Parameters
    ----------
    task : FederatedTask
        The model and its devices' private data.
    config : FederatedConfig
        Devices, rounds, strategy, privacy.
    checkpoint_dir : Path, optional
        Write a checkpoint after every round here, and resume from it if one exists.
    on_round : callable, optional
        Called with each :class:`RoundRecord` (progress display).
    evaluate_every : int
        Also evaluate the global model every this many rounds (0: only at the end).
    population : DevicePopulation, optional
        The simulated devices (default: simulated from ``rng`` at the first round).

    Attributes
    ----------
    parameters_ : ndarray, shape (P,)
        Final global parameters.
    model_version_ : int
        Their version (aggregated rounds).
    history_ : list of RoundRecord
        Every round run, including those before a resume.
    ledger_ : PrivacyLedger
        Every opened round's privacy event.
    privacy_ : dict
        The ``privacy.json`` record.
    metrics_ : dict
        Held-out metrics of ``parameters_``.
    status_ : str
        ``completed`` or ``budget_stopped``.
    resumed_from_ : int or None
        The first round run by this call when it resumed, else None.
    """

    def __init__(self, task: FederatedTask, config: FederatedConfig, *,
                 checkpoint_dir: Path | None = None,
                 on_round: Callable[[RoundRecord], None] | None = None,
                 evaluate_every: int = 0, population: DevicePopulation | None = None) -> None:
        self.task = task
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.on_round = on_round
        self.evaluate_every = evaluate_every
        self.population = population

    # ------------------------------------------------------------------ budget

    def planned_ledger(self, rounds: int | None = None) -> PrivacyLedger:
        """The privacy ledger of the configured schedule (``rounds`` default: all)."""
        return PrivacyLedger.planned_from(self.config, self.task.n_parameters, rounds=rounds,
                                          secret_sampling=True)

    def recipe(self) -> RoundRecipe:
        """The config resolved for this task's P (strategy, norm bound, encoding)."""
        return RoundRecipe.from_config(self.config, self.task.n_parameters)

    @property
    def secure(self) -> bool:
        """Whether rounds run under secure aggregation with the discrete encoding."""
        return self.config.privacy.enabled and self.config.secure_aggregation.enabled

    def encoding(self) -> DiscreteGaussianEncoding | None:
        """The devices' discrete encoding under secure aggregation (None otherwise)."""
        return self.recipe().encoding

    def assumptions_met(self) -> frozenset[str]:
        """The guarantee kinds whose assumption this run, as built, meets.

        Under secure aggregation the server only ever holds the modular sum of at least
        ``min_reports`` reports, and each simulated device flips its own participation
        coin (uploads carry no identity), so ``secure_sum`` holds too: what the round
        events record (:func:`federated._accounting.assumptions_met`).
        """
        return assumptions_met(self.planned_ledger(rounds=1))

    def accountant(self) -> DevicePrivacyAccountant:
        """The accountant of this run's δ and accountant choice."""
        p = self.config.privacy
        return DevicePrivacyAccountant(delta=p.delta, accountant=p.accountant)

    def affordable_rounds(self) -> int:
        """Rounds the budget allows; raises :class:`PrivacyBudgetError` to refuse."""
        p, rounds = self.config.privacy, self.config.rounds.rounds
        if p.target_epsilon is None:
            return rounds
        if not p.enabled:
            raise PrivacyBudgetError(
                f"target_epsilon={p.target_epsilon:g} is set but privacy is disabled (no "
                "noise, epsilon is infinite); enable privacy or drop the target")
        accountant, ledger = self.accountant(), self.planned_ledger()
        if p.on_over_budget == "refuse":
            accountant.check_budget(ledger, kind=p.budget_kind, target_epsilon=p.target_epsilon)
            return rounds
        allowed = max_affordable_rounds(ledger, accountant, kind=p.budget_kind,
                                        target_epsilon=p.target_epsilon)
        if allowed == 0:
            accountant.check_budget(ledger.head(1), kind=p.budget_kind,
                                    target_epsilon=p.target_epsilon)
        return allowed

    # ------------------------------------------------------------------ run

    def _fingerprint(self) -> str:
        cfg = self.config.model_dump(mode="json", exclude={
            "rounds": {"rounds"}, "privacy": {"target_epsilon", "on_over_budget"}})
        return fingerprint(self.task.name, self.task.n_parameters, self.task.n_devices, cfg)

    def fit(self, rng: np.random.Generator | int) -> FederatedTrainer:
        """Run (or resume) the rounds; returns ``self`` with the learned attributes set.

        ``rng`` (a Generator or a seed) spawns the run's named streams
        (:class:`RandomStreams`: schedule, participation, task, noise).

        Raises
        ------
        PrivacyBudgetError
            Before any round, if the run would exceed its target and the policy is refuse.
        CheckpointError
            If the checkpoint directory holds a run of another configuration.
        """
        cfg, task = self.config, self.task
        allowed = self.affordable_rounds()
        accountant = self.accountant()
        n_devices = cfg.devices.n_devices or task.n_devices
        params = np.asarray(task.initial_parameters(), np.float32)
        if params.shape != (task.n_parameters,):
            raise FederatedConfigError(f"task {task.name!r}: initial_parameters() has shape "
                                       f"{params.shape}, expected ({task.n_parameters},)")
        recipe = self.recipe()
        encoding = recipe.encoding
        streams = RandomStreams.spawn(rng)
        server = Server.from_config(cfg, params)
        strategy = server.strategy
        ledger = PrivacyLedger(max_uploads_per_day=cfg.rounds.max_uploads_per_day)
        history: list[RoundRecord] = []
        late = UploadBatch.empty(task.n_parameters)
        late_arrival = np.zeros(0)
        start_round = 0
        population = self.population
        self.resumed_from_: int | None = None

        checkpoint = load_latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if checkpoint is not None:
            meta, arrays = checkpoint
            if meta["fingerprint"] != self._fingerprint():
                raise CheckpointError(
                    f"{self.checkpoint_dir}: checkpoint belongs to a different task or "
                    "configuration; use another --checkpoint-dir or delete it")
            start_round = int(meta["next_round"])
            server.parameters = arrays["parameters"].astype(np.float32)
            server.model_version = int(meta["model_version"])
            strategy.load_state_dict(_sub(arrays, "strategy/"))
            population = DevicePopulation.from_state_dict(_sub(arrays, "devices/"))
            if isinstance(task, StatefulTask) and any(k.startswith("task/") for k in arrays):
                task.load_device_state(_sub(arrays, "task/"))
            # checkpoints from before events recorded the coin: the simulator's is secret
            ledger = PrivacyLedger(events=tuple(RoundPrivacyEvent(**{"secret_sampling": True,
                                                                     **e})
                                                for e in meta["ledger"]),
                                   max_uploads_per_day=cfg.rounds.max_uploads_per_day)
            history = [RoundRecord(**{**h, "loss": _num(h["loss"]),
                                      "epsilon": _num(h["epsilon"])})
                       for h in meta["history"]]
            late = UploadBatch(*(arrays[f"late/{k}"] for k in
                                 ("round", "model_version", "deltas", "n_examples", "nonces")))
            late_arrival = arrays["late/arrival_s"]
            streams.load_state_dict(meta["rng"])
            self.resumed_from_ = start_round
            log.info("resuming federated run", round=start_round, checkpoint=str(
                self.checkpoint_dir))
        if population is None:
            population = DevicePopulation.simulate(n_devices, streams.schedule)
        runtime = DeviceRuntime(task, population, cfg.devices,
                                max_uploads_per_day=cfg.rounds.max_uploads_per_day,
                                batch_size=cfg.rounds.batch_size)

        for r in range(start_round, allowed):
            now = cfg.rounds.start_time_s + r * cfg.rounds.round_interval_s
            task.forget_before(now - cfg.devices.retention_days * DAY_S)
            plan = server.open_round(r, now)
            if encoding is not None:
                # off the schedule stream: secure and plain runs of one seed keep the same
                # eligibility, sampling, dropouts and arrivals (only noise and rounding differ)
                plan = dataclasses.replace(plan, rotation_seed=int(
                    streams.rounding.integers(0, 2**63)))
            if cfg.privacy.enabled:
                ledger = ledger.add(RoundPrivacyEvent.from_recipe(recipe, int(now // DAY_S),
                                                                  secret_sampling=True))
            result = runtime.run_round(plan, server.parameters, streams, encoding)
            server.receive(late, late_arrival)  # last round's stragglers: stale now
            accepted = server.receive(result.uploads, result.arrival_s)
            secure_metrics: dict[str, float] = {}
            if encoding is not None:
                outcome, secure_metrics = self._close_secure(server, encoding, plan.rotation_seed,
                                                             result.reports, accepted)
            else:
                is_late = result.arrival_s > plan.deadline_s
                late, late_arrival = result.uploads.select(is_late), result.arrival_s[is_late]
                outcome = server.close_round()
            if outcome.status == "abandoned":
                # Routine at night-time eligibility; the progress line and the run's summary
                # count say so, so one log line per round would drown everything else.
                log.debug("round abandoned", round=r, message=outcome.message)
            eps = (accountant.epsilon(ledger, cfg.privacy.budget_kind, "rdp")
                   if cfg.privacy.enabled else math.inf)
            metrics = {**outcome.metrics, **secure_metrics}
            if self.evaluate_every and (r + 1) % self.evaluate_every == 0:
                metrics.update(task.evaluate(server.parameters))
            record = RoundRecord(
                round=r, status=outcome.status, open_s=now, eligible=result.eligible,
                sampled=result.sampled, dropped=result.dropped, uploaded=len(result.uploads),
                accepted=outcome.accepted, late=outcome.late, stale=outcome.stale,
                loss=result.mean_loss, epsilon=eps, model_version=server.model_version,
                message=outcome.message, metrics=metrics)
            history.append(record)
            if self.checkpoint_dir is not None:
                self._save(r, server, strategy, population, ledger, history, late, late_arrival,
                           streams)
            if self.on_round is not None:
                self.on_round(record)

        self.parameters_ = server.parameters
        self.model_version_ = server.model_version
        self.history_ = history
        self.ledger_ = ledger
        self.status_ = "completed" if allowed == cfg.rounds.rounds else "budget_stopped"
        self.metrics_ = task.evaluate(server.parameters)
        self.privacy_ = self._privacy_report(accountant, ledger)
        return self

    def _privacy_report(self, accountant: DevicePrivacyAccountant,
                        ledger: PrivacyLedger) -> dict[str, Any]:
        p = self.config.privacy
        if not p.enabled:
            return {"enabled": False, "epsilon": None, "delta": None,
                    "note": "trained without local DP: no privacy guarantee"}
        report = accountant.report(ledger, clip_norm=p.clip_norm)
        spent = report["epsilon"][p.budget_kind]
        report["enabled"] = True
        budget_guarantee = report["guarantees"][p.budget_kind]
        report["budget"] = {"kind": p.budget_kind, "target_epsilon": p.target_epsilon,
                            "spent_epsilon": spent, "policy": p.on_over_budget,
                            "assumption": budget_guarantee["assumption"],
                            "assumption_met": budget_guarantee["assumption_met"]}
        report["status"] = self.status_
        encoding = self.encoding()
        if encoding is not None:
            s, n_min = self.config.secure_aggregation, self.config.rounds.min_reports
            k, t = choose_degree_and_threshold(max(n_min, 3), dropout_rate=s.dropout_rate,
                                               corruption_rate=s.corruption_rate)
            k_max, t_max = choose_degree_and_threshold(max(s.n_max, 3),
                                                       dropout_rate=s.dropout_rate,
                                                       corruption_rate=s.corruption_rate)
            report["guarantees"]["secure_sum"]["secure_aggregation"] = {
                "protocol": "SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020): X25519, "
                            "AES-256-GCM, HKDF-SHA256, Ed25519 consistency check, Shamir over "
                            "GF(2^521-1), AES-256-CTR masks from 256-bit seeds",
                "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021), "
                             "accounted by KLS21 Thm 1 + Zhu-Wang 2019 Thm 5 Poisson "
                             "subsampling, composed by dp_accounting RDP",
                "simulation_mode": s.mode, "protocol_max_clients": s.protocol_max_clients,
                "n_min": n_min, "bits": encoding.bits, "gamma": encoding.gamma,
                "padded_dimension": encoding.padded_dimension,
                "sensitivity": encoding.sensitivity, "sigma_z": encoding.sigma_z,
                "n_max": encoding.n_max, "wrap_probability_bound": encoding.wrap_probability,
                "degree_threshold_at_n_min": [k, t], "degree_threshold_at_n_max": [k_max, t_max],
                "design_dropout_rate": s.dropout_rate,
                "dropout_tolerance": f"each client is recovered while at most {k - t} of its "
                                     f"{k} neighbours drop out (n = n_min); a round with fewer "
                                     "than t survivors in a neighbourhood is abandoned and "
                                     "reveals nothing",
                "corruption_rate": s.corruption_rate, "threat_model": THREAT_MODEL}
        return report

    def _close_secure(self, server: Server, encoding: DiscreteGaussianEncoding,
                      rotation_seed: int | None, reports: np.ndarray | None,
                      accepted: np.ndarray) -> tuple[Any, dict[str, float]]:
        """Sum the in-time reports securely (protocol or sum-only), decode, aggregate.

        Every upload of the round took part in the key stages; those that arrive after
        the deadline drop out before the masked-input stage and are unmasked away. The
        sum is unmasked only if the in-time reports, less the ⌊γ · cohort⌋ that may
        collude with the server, still hold the honest noises the ledger charged
        (:func:`federated._accounting.unmask_shortfall`); otherwise the round is abandoned.
        """
        assert reports is not None and rotation_seed is not None
        s, r = self.config.secure_aggregation, self.config.rounds
        n_in, n_all = int(accepted.sum()), len(reports)
        if n_in < r.min_reports or n_all < 3:
            return server.close_secure_round(None), {}
        short = unmask_shortfall(n_in, n_all, min_reports=r.min_reports,
                                 corruption_rate=s.corruption_rate)
        if short:
            # the ledger charged n_min - floor(γ n_min) honest noises; fewer could be in it
            corrupt = colluding_clients(n_all, s.corruption_rate)
            return server.close_secure_round(None, message=(
                f"{n_in} in-time reports of {n_all}, up to {corrupt} of them colluding "
                f"(corruption_rate={s.corruption_rate:g}): fewer than the "
                f"{honest_reports(r.min_reports, s.corruption_rate)} honest noises the "
                "ledger charged; nothing was unmasked")), {}
        protocol = s.mode == "protocol" or (s.mode == "auto"
                                            and n_all <= s.protocol_max_clients)
        metrics: dict[str, float] = {"secagg_protocol": float(protocol)}
        if protocol:
            params = SecAggParams.for_cohort(n_all, bits=s.bits,
                                             dimension=encoding.padded_dimension,
                                             dropout_rate=s.dropout_rate,
                                             corruption_rate=s.corruption_rate)
            metrics.update(secagg_degree=float(params.degree),
                           secagg_threshold=float(params.threshold))
            try:
                total = run_secagg_round(reports, params,
                                         drop={"mask": set(np.flatnonzero(~accepted).tolist())})
            except SecAggAbandoned as exc:
                return server.close_secure_round(None, message=str(exc)), metrics
        else:
            total = modular_sum(reports[accepted], s.bits)
        return server.close_secure_round(encoding.decode(total, rotation_seed)), metrics

    def _save(self, r: int, server: Server, strategy: Strategy, population: DevicePopulation,
              ledger: PrivacyLedger, history: list[RoundRecord], late: UploadBatch,
              late_arrival: np.ndarray, streams: RandomStreams) -> None:
        assert self.checkpoint_dir is not None
        arrays: dict[str, np.ndarray] = {"parameters": server.parameters}
        arrays.update({f"strategy/{k}": v for k, v in strategy.state_dict().items()})
        arrays.update({f"devices/{k}": v for k, v in population.state_dict().items()})
        if isinstance(self.task, StatefulTask):
            arrays.update({f"task/{k}": v for k, v in self.task.device_state().items()})
        arrays.update({"late/round": late.round, "late/model_version": late.model_version,
                       "late/deltas": late.deltas, "late/n_examples": late.n_examples,
                       "late/nonces": late.nonces, "late/arrival_s": late_arrival})
        meta = {"fingerprint": self._fingerprint(), "next_round": r + 1,
                "model_version": server.model_version,
                "ledger": [asdict(e) for e in ledger.events],
                "history": [h.to_dict() for h in history], "rng": streams.state_dict()}
        save_checkpoint(self.checkpoint_dir, r, arrays, meta)


def modular_sum(reports: np.ndarray, bits: int) -> np.ndarray:
    """Σ reports (n, D) mod 2^b as (D,) uint32: what SecAgg+ outputs, without the protocol."""
    total = reports.astype(np.uint64).sum(axis=0) & np.uint64((1 << bits) - 1)
    return total.astype(np.uint32)


def _sub(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def run_training(task: FederatedTask, config: FederatedConfig, *, rng: np.random.Generator,
                 checkpoint_dir: Path | None = None,
                 on_round: Callable[[RoundRecord], None] | None = None) -> FederatedTrainer:
    """Shorthand for ``FederatedTrainer(task, config, ...).fit(rng)``."""
    return FederatedTrainer(task, config, checkpoint_dir=checkpoint_dir,
                            on_round=on_round).fit(rng)
