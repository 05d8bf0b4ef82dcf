"""Federated rounds over HTTP: open a round for devices, aggregate it from the store.

Both sides reuse the federated platform's round recipe: a round is opened by
``federated.Server.from_config(...).open_round`` (so the differential-privacy wrapper
announces C and σ exactly as in the simulation, and ``norm_bound = "auto"`` is resolved
by ``federated.RoundRecipe``), and a round is aggregated by feeding the stored uploads to
``Server.receive`` and ``Server.close_round`` — the same code path as
``FederatedTrainer``: the same staleness, deadline, nonce and ``min_reports`` rules and
the same strategies. HTTP rounds do not run secure aggregation yet (devices upload
continuous-noise deltas), so every recipe here is built with ``secure=False``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from data import ArtifactError, read_manifest, resolve_artifact
from federated import (
    DevicePrivacyAccountant,
    FederatedConfig,
    PrivacyLedger,
    RoundOutcome,
    RoundPrivacyEvent,
    RoundRecipe,
    Server,
    UploadBatch,
)
from serving._ledger import (
    BudgetPolicy,
    ServerLedger,
    lineage_of,
    simulated_events,
)
from serving._registry import INITIAL
from serving._store import RoundSpec, StoreRejectedError, UpdateStore

__all__ = [
    "AggregationResult",
    "aggregate_round",
    "ensure_open_round",
    "federated_config_for",
    "live_reranker",
    "open_next_round",
    "privacy_after",
    "reranker_base",
]

log = structlog.get_logger(__name__)

RERANKER = "reranker"
LEDGER_FILE = "privacy_ledger.sqlite3"

# (parameters (P,), base version directory, destination kind dir, record) -> new version dir
Publisher = Callable[[np.ndarray, Path, Path, dict[str, Any]], Path]


def federated_config_for(var: Path, reranker_version: str,
                         config_path: Path | None = None) -> FederatedConfig:
    """The platform config of a round: the file if given, else the one the model was trained
    with (recorded in its manifest), else the platform defaults."""
    if config_path is not None:
        return FederatedConfig.load(config_path)
    manifest = read_manifest(resolve_artifact(var / RERANKER, reranker_version), verify=False)
    recorded = manifest.parameters.get("config")
    return FederatedConfig.model_validate(recorded) if recorded else FederatedConfig()


def reranker_base(var: Path, version: str) -> tuple[Path, np.ndarray, int]:
    """(version directory, global parameters (P,) float32, integer model version)."""
    from reranker import RerankerArtifact  # on first use: the reranker's import is heavy

    manifest, weights = RerankerArtifact.read_weights(var, version, kind_dir=RERANKER)
    return (manifest.directory, weights,
            int(manifest.metrics.get("model_version", 0)))


# HTTP rounds run no secure aggregation yet: devices upload continuous-noise deltas.
_SECURE = False


def open_next_round(store: UpdateStore, var: Path, reranker_version: str, *,
                    config: FederatedConfig, deadline_s: float | None = None,
                    now: float | None = None, budget_policy: BudgetPolicy = "refuse"
                    ) -> RoundSpec:
    """Open the next round for ``reranker_version`` with the platform's round plan, after
    recording it in the lineage's privacy ledger (:mod:`serving._ledger`).

    Raises
    ------
    StoreRejectedError
        If a round is already open.
    BudgetExhaustedError
        If the round would exceed ``config``'s privacy budget (nothing is opened; with
        ``budget_policy="stop"`` the lineage never opens another).
    """
    now = time.time() if now is None else now
    directory, parameters, model_version = reranker_base(var, reranker_version)
    n_parameters = int(parameters.shape[0])
    recipe = RoundRecipe.from_config(config, n_parameters, secure=_SECURE)
    server = Server.from_config(config, parameters, model_version=model_version,
                                secure=_SECURE, deadline_s=deadline_s)
    plan = server.open_round(store.next_round_number(), now)
    # no bound configured and no privacy: parse_upload's finite-number cap is the only one
    norm_bound = min(recipe.upload_norm_bound, 1e30)
    spec = RoundSpec(
        round=plan.round, model_version=plan.model_version, reranker_version=directory.name,
        n_parameters=n_parameters,
        clip_norm=float(plan.clip_norm if plan.clip_norm is not None else 0.0),
        noise_multiplier=float(plan.noise_multiplier),
        norm_bound=norm_bound, max_examples=plan.max_examples,
        min_reports=server.min_reports, sampling_rate=plan.sampling_rate,
        opened_at=plan.open_s, deadline_at=plan.deadline_s)
    record_round_opening(store, var, spec, config, budget_policy)  # raises if over budget
    opened = store.open_round(spec)
    log.info("federated round opened", round=opened.round, model_version=opened.model_version,
             reranker_version=opened.reranker_version)
    return opened


HTTP = "http"
"""The ledger's ``source`` of the rounds of this module."""


def round_event(spec: RoundSpec) -> RoundPrivacyEvent:
    """The privacy event of an HTTP round (continuous Gaussian noise, every upload seen)."""
    return RoundPrivacyEvent(noise_multiplier=spec.noise_multiplier,
                             sampling_rate=spec.sampling_rate, min_reports=spec.min_reports)


def server_ledger(store: UpdateStore, policy: BudgetPolicy = "refuse") -> ServerLedger:
    """The privacy ledger kept beside ``store`` (``privacy_ledger.sqlite3``)."""
    return ServerLedger(store.path.parent / LEDGER_FILE, policy=policy)


def record_round_opening(store: UpdateStore, var: Path, spec: RoundSpec,
                         config: FederatedConfig, policy: BudgetPolicy = "refuse") -> None:
    """Record ``spec`` in the lineage's privacy ledger before it opens (see
    :mod:`serving._ledger`).

    Raises
    ------
    BudgetExhaustedError
        Over the budget of ``config`` (or the lineage was stopped): do not open it.
    """
    lineage = lineage_of(var, spec.reranker_version)
    with server_ledger(store, policy) as ledger:
        ledger.open_round(lineage, HTTP, spec.round, round_event(spec),
                          opened_at=spec.opened_at, config=config,
                          base_events=simulated_events(var, lineage))


def _record_closing(store: UpdateStore, var: Path, spec: RoundSpec, status: str) -> str:
    """Note the round's end in the ledger (recording it first if it predates the ledger);
    returns the lineage."""
    lineage = lineage_of(var, spec.reranker_version)
    with server_ledger(store) as ledger:
        ledger.ensure_recorded(lineage, HTTP, spec.round, round_event(spec),
                               opened_at=spec.opened_at,
                               base_events=simulated_events(var, lineage))
        ledger.close_round(lineage, HTTP, spec.round,
                           "aggregated" if status == "aggregated" else "abandoned")
    return lineage


def live_reranker(var: Path) -> str | None:
    """The reranker version ``LATEST`` names (None if there is none)."""
    try:
        return resolve_artifact(var / RERANKER, "latest").name
    except ArtifactError:
        return None


def ensure_open_round(store: UpdateStore, var: Path, reranker_version: str | None, *,
                      config: Callable[[str], FederatedConfig],
                      deadline_s: float | None = None,
                      budget_policy: BudgetPolicy = "refuse") -> RoundSpec | None:
    """The open round for ``reranker_version``, opening the next one if none is open.

    An open round that trains another version (the served one changed: a promotion or
    a rollback) is closed as abandoned first, so devices never keep training a version
    that is not served.

    Parameters
    ----------
    store : UpdateStore
    var : Path
        Artifact root.
    reranker_version : str or None
        The served reranker version; None (nothing served) or ``initial`` (nothing
        published, so no global weights to train) opens nothing.
    config : callable
        The platform config of a version (read only when a round is opened).
    deadline_s : float, optional
        Upload window (default: the platform config's).
    budget_policy : {"refuse", "stop"}
        See :func:`open_next_round`.

    Raises
    ------
    BudgetExhaustedError
        The next round would exceed the privacy budget (none is open).
    """
    current = store.current_round()
    if reranker_version in (None, INITIAL):
        return current
    if current is not None and current.reranker_version == reranker_version:
        return current
    if current is not None:
        with contextlib.suppress(StoreRejectedError):  # another worker closed it first
            _record_closing(store, var, current, "abandoned")
            store.close_round(current.round, "abandoned", time.time(), {
                "round": current.round, "status": "abandoned",
                "message": f"reranker {reranker_version} is served now, not "
                           f"{current.reranker_version}; its uploads are not applied"})
            log.warning("federated round abandoned: the served version changed",
                        round=current.round, base=current.reranker_version,
                        served=reranker_version)
    assert reranker_version is not None
    with contextlib.suppress(StoreRejectedError):  # another worker opened it first
        open_next_round(store, var, reranker_version, config=config(reranker_version),
                        deadline_s=deadline_s, budget_policy=budget_policy)
    return store.current_round()


@dataclass(frozen=True)
class AggregationResult:
    """A closed round: the platform's outcome and the published version (if aggregated)."""

    outcome: RoundOutcome
    published: Path | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self.outcome),
                "published": None if self.published is None else self.published.name}


def privacy_after(base_privacy: dict[str, Any], config: FederatedConfig, rounds: int
                  ) -> dict[str, Any]:
    """The ``privacy.json`` of a model after ``rounds`` rounds of ``config``'s schedule.

    Every round accounted with ``config``'s parameters: only for a version whose rounds
    all ran under it. A server-aggregated version's ``privacy.json`` comes from the
    privacy ledger instead (:meth:`serving._ledger.ServerLedger.report`), which keeps each
    round's own parameters.
    """
    p = config.privacy
    if not p.enabled:
        return {**base_privacy, "enabled": False, "epsilon": None}
    ledger = PrivacyLedger.planned_from(config, rounds=rounds, secure=_SECURE)
    report = DevicePrivacyAccountant(delta=p.delta, accountant=p.accountant).report(
        ledger, clip_norm=p.clip_norm)
    report["enabled"] = True
    report["note"] = ("rounds trained by the simulation plus rounds aggregated by the server, "
                      "accounted as one schedule of the platform config")
    return report


def aggregate_round(store: UpdateStore, var: Path, round_: int, *, config: FederatedConfig,
                    publish: Publisher | None, now: float | None = None) -> AggregationResult:
    """Aggregate a round's stored uploads with the platform's server and close the round.

    Parameters
    ----------
    store : UpdateStore
    var : Path
        Artifact root (the round's reranker version is read from ``var/reranker``).
    round_ : int
        An open round.
    config : FederatedConfig
        The platform config (strategy, privacy) the round was opened with.
    publish : callable, optional
        Writes a new reranker version from the aggregated parameters (the reranker's
        exporter); None only records the outcome.
    now : float, optional
        Closing time (Unix seconds).

    Raises
    ------
    StoreRejectedError
        If the round does not exist or is not open.
    """
    now = time.time() if now is None else now
    spec = store.get_round(round_)
    if spec is None or spec.status != "open":
        state = "does not exist" if spec is None else f"is {spec.status}"
        raise StoreRejectedError("round_not_open", 409, f"round {round_} {state}")
    live = live_reranker(var)
    if publish is not None and live != spec.reranker_version:
        # An operator promoted or rolled back while the round was open: its uploads were
        # trained on a version that is no longer live, and publishing them would move
        # LATEST away from the operator's choice.
        outcome = RoundOutcome(
            round=spec.round, status="abandoned", accepted=0, late=0, stale=0, duplicate=0,
            invalid=0, message=f"round {spec.round} trained reranker "
            f"{spec.reranker_version}, but {live or 'nothing'} is live now (promoted or "
            "rolled back meanwhile); its uploads are not applied")
        result = AggregationResult(outcome, None)
        _record_closing(store, var, spec, "abandoned")
        store.close_round(spec.round, "abandoned", now, result.to_dict())
        log.warning("federated round abandoned: its base is no longer live",
                    round=spec.round, base=spec.reranker_version, live=live)
        return result
    directory, parameters, _ = reranker_base(var, spec.reranker_version)
    server = Server.from_config(config, parameters, model_version=spec.model_version,
                                secure=_SECURE, deadline_s=spec.deadline_at - spec.opened_at,
                                min_reports=spec.min_reports, sampling_rate=spec.sampling_rate,
                                max_examples=spec.max_examples)
    server.open_round(spec.round, spec.opened_at)
    uploads, arrival_s = store.updates(spec.round)
    server.receive(UploadBatch.from_uploads(uploads, spec.n_parameters), arrival_s)
    outcome = server.close_round()
    published = None
    lineage = _record_closing(store, var, spec, outcome.status)
    if outcome.status == "aggregated" and publish is not None:
        with server_ledger(store) as ledger:  # the events up to this round, as they ran
            privacy = (ledger.report(lineage, config, through=(HTTP, spec.round))
                       if config.privacy.enabled else None)
        record = {"round": spec.round, "base_version": spec.reranker_version,
                  "model_version": server.model_version, "accepted": outcome.accepted,
                  "metrics": outcome.metrics,
                  "config": config.model_dump(mode="json"), "privacy": privacy}
        published = publish(server.parameters, directory, var / RERANKER, record)
    result = AggregationResult(outcome, published)
    store.close_round(spec.round, outcome.status, now, result.to_dict())
    log.info("federated round closed", round=spec.round, status=outcome.status,
             accepted=outcome.accepted, published=result.to_dict()["published"])
    return result
