"""The server's persistent privacy ledger: every round opened, with what it ran under.

One ledger per model lineage (a reranker version trained by the simulation and every
version the server aggregated from it), the same :class:`federated.PrivacyLedger` the
simulator keeps, persisted in SQLite (``var/serving/privacy_ledger.sqlite3``, WAL,
fsync per commit) so it survives restarts and is shared by gunicorn's workers and the
CLI:

- **recorded when opened**: :meth:`ServerLedger.open_round` records the round's event
  (σ, q, n_min, mechanism, the day on the server's clock) *before* the round is opened,
  in the same transaction as the budget check; a crash between the two leaves an event
  for a round that never ran (counted: conservative), never a round without its event.
  Recording the same round again with the same parameters is a no-op, so a retry after
  a crash counts it once.
- **checked before**: the lineage's ledger plus the new event must stay within the
  round config's ``target_epsilon`` (``budget_kind``); otherwise the round is refused
  (:class:`BudgetExhaustedError`). With the ``stop`` policy the lineage is also closed
  for good: no later round opens, whatever its parameters.
- **never re-accounted**: an event keeps the parameters it was recorded with; a
  published version's ``privacy.json`` comes from the events up to its round
  (:meth:`ServerLedger.report`), so a later config cannot rewrite it.
- **abandoned rounds count**: closing a round only notes its status; its event stays.
- **daily caps follow the clock**: an event's ``day`` is the server's UTC day when the
  round opened, which ``max_uploads_per_day`` groups by.

The simulation's rounds of the lineage's root version are recorded once, the first time
a server round of the lineage opens, from the root's own ``privacy.json`` and recorded
config (the parameters they ran under, not the current ones).

Other round engines (the secure rounds of ``serving/_secure*.py``) call the same three
methods: :meth:`ServerLedger.open_round` before opening, :meth:`ServerLedger.close_round`
when done, :meth:`ServerLedger.report` for a published version's ``privacy.json``; each
names its rounds with its own ``source`` so round numbers never collide.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from data import StickerSuggestError, read_manifest, resolve_artifact
from federated import (
    DevicePrivacyAccountant,
    FederatedConfig,
    PrivacyLedger,
    RoundPrivacyEvent,
    RoundRecipe,
    StrategyConfig,
)
from serving._sqlite import SqliteStore, open_store, transaction

__all__ = ["BudgetExhaustedError", "BudgetPolicy", "LedgerEntry", "ServerLedger", "lineage_of",
           "simulated_events"]

log = structlog.get_logger(__name__)

DAY_S = 86_400.0
SIMULATION = "simulation"
"""``source`` of the events of the simulation's rounds of a lineage's root version."""
BudgetPolicy = Literal["refuse", "stop"]
"""``refuse``: a round over budget is not opened (one with more noise may be later);
``stop``: it is not opened and the lineage opens no round ever again."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    lineage TEXT NOT NULL,
    source TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    day INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'aggregated', 'abandoned', 'simulated')),
    UNIQUE (lineage, source, round)
);
CREATE TABLE IF NOT EXISTS stopped (
    lineage TEXT PRIMARY KEY,
    stopped_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


class BudgetExhaustedError(StickerSuggestError):
    """A round was not opened: the lineage's privacy budget does not allow it.

    Attributes
    ----------
    lineage : str
    epsilon : float
        ε the lineage would reach with the round (inf when stopped).
    target : float
        The budget.
    stopped : bool
        Whether the lineage is closed for good (``stop`` policy).
    """

    reason = "privacy_budget_exhausted"

    def __init__(self, detail: str, *, lineage: str, epsilon: float, target: float,
                 stopped: bool) -> None:
        super().__init__(detail)
        self.lineage = lineage
        self.epsilon = epsilon
        self.target = target
        self.stopped = stopped


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded round."""

    lineage: str
    source: str
    round: int
    event: RoundPrivacyEvent
    opened_at: float
    status: str


def lineage_of(var: Path, version: str) -> str:
    """The root of ``version``'s lineage: follow each server-aggregated version's
    ``server_round.base_version`` back to a version the server did not make."""
    seen: set[str] = set()
    current = resolve_artifact(Path(var) / "reranker", version).name
    while current not in seen:
        seen.add(current)
        manifest = read_manifest(Path(var) / "reranker" / current, verify=False)
        base = (manifest.parameters.get("server_round") or {}).get("base_version")
        if not base or not (Path(var) / "reranker" / str(base)).is_dir():
            return current
        current = str(base)
    return current


def _scalar(value: Any, pick: Any) -> float:
    return float(pick(value)) if isinstance(value, list) else float(value)


def simulated_events(var: Path, root: str) -> list[RoundPrivacyEvent]:
    """The events of the simulation's rounds that produced ``root``, with the parameters
    they ran under (its ``privacy.json`` and recorded config; where a run varied a
    parameter, the least private value: smallest σ and n_min, largest q and γ). The
    collusion bound γ is the ``privacy.json``'s ``corruption_rate``; a record from before
    it existed reads γ = 0, the charge it was published with."""
    manifest = read_manifest(Path(var) / "reranker" / root, verify=False)
    privacy = (json.loads(manifest.file("privacy.json").read_text())
               if "privacy.json" in manifest.files else {})
    rounds = int(privacy.get("rounds") or 0)
    if rounds <= 0 or privacy.get("enabled") is False or "noise_multiplier" not in privacy:
        return []
    recorded = manifest.parameters.get("config")
    cfg = FederatedConfig.model_validate(recorded) if recorded else FederatedConfig()
    sigma = _scalar(privacy["noise_multiplier"], min)
    min_reports = int(_scalar(privacy.get("min_reports", cfg.rounds.min_reports), min))
    # the collusion bound the rounds were charged with: a privacy.json from before γ
    # was recorded was charged with every noise (γ = 0), and is kept so
    gamma = _scalar(privacy.get("corruption_rate", 0.0), max)
    # the simulation's participation coin is secret: each device flips its own
    ledger = PrivacyLedger.planned(
        rounds=rounds, noise_multiplier=sigma, secret_sampling=True,
        sampling_rate=_scalar(privacy.get("sampling_rate", cfg.rounds.sampling_rate), max),
        min_reports=min_reports, start_time_s=cfg.rounds.start_time_s,
        round_interval_s=cfg.rounds.round_interval_s, corruption_rate=gamma,
        **_mechanism(cfg, sigma, min_reports, manifest))
    return list(ledger.events)


def _mechanism(cfg: FederatedConfig, sigma: float, min_reports: int, manifest: Any
               ) -> dict[str, Any]:
    """The simulated rounds' noise mechanism: the distributed discrete Gaussian when the
    run had secure aggregation (its sensitivity after rounding, τ and dimension, from the
    platform's round recipe as the trainer records them), else none (continuous
    Gaussian)."""
    if not (cfg.privacy.enabled and cfg.secure_aggregation.enabled):
        return {}
    n_parameters = manifest.parameters.get("n_parameters")
    if n_parameters is None:
        n_parameters = int(np.load(manifest.file("global_weights.npy"),
                                   allow_pickle=False).shape[0])
    # the values the rounds ran under; the mechanism does not depend on the strategy
    ran = cfg.model_copy(update={
        "privacy": cfg.privacy.model_copy(update={"noise_multiplier": sigma}),
        "rounds": cfg.rounds.model_copy(update={"min_reports": min_reports}),
        "strategy": StrategyConfig()})
    return RoundRecipe.from_config(ran, int(n_parameters), secure=True).mechanism()


def _event(row: sqlite3.Row) -> RoundPrivacyEvent:
    """A row's event. Rows recorded before events stated their sampling coin read as the
    rounds ran: the simulation's coin was secret (each simulated device flips its own),
    a server's was not (devices choose when to check in); secure aggregation follows the
    mechanism (the discrete Gaussian runs only under it). Rows recorded before events
    stated their collusion bound read γ = 0, as they were charged (history is not
    rewritten; the report says which rounds assumed which γ)."""
    fields = json.loads(row["event"])
    fields.setdefault("secret_sampling", row["source"] == SIMULATION)
    return RoundPrivacyEvent(**fields)


class ServerLedger(SqliteStore):
    """The persistent privacy ledger (see the module doc). One connection; close it.

    Parameters
    ----------
    path : Path
        The SQLite file (created with its directory).
    policy : {"refuse", "stop"}
        What a round over budget does to the lineage.
    busy_timeout_ms : int
        How long a writer waits for another process's write lock.
    """

    def __init__(self, path: str | Path, *, policy: BudgetPolicy = "refuse",
                 busy_timeout_ms: int = 10_000) -> None:
        if policy not in ("refuse", "stop"):
            raise ValueError(f"policy={policy!r} should be 'refuse' or 'stop'")
        self.path = Path(path)
        self.policy = policy
        self._conn = open_store(self.path, _SCHEMA, busy_timeout_ms=busy_timeout_ms,
                                rows=True)


    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    # ------------------------------------------------------------------ reading

    def entries(self, lineage: str) -> list[LedgerEntry]:
        """Every recorded round of ``lineage``, in the order recorded."""
        rows = self._conn.execute("SELECT * FROM ledger WHERE lineage = ? ORDER BY seq",
                                  (lineage,)).fetchall()
        return [LedgerEntry(r["lineage"], r["source"], int(r["round"]), _event(r),
                            float(r["opened_at"]), r["status"]) for r in rows]

    def ledger(self, lineage: str, *, max_uploads_per_day: int | None = None,
               through: tuple[str, int] | None = None) -> PrivacyLedger:
        """The lineage's :class:`federated.PrivacyLedger` (up to and including the round
        ``through = (source, round)`` if given)."""
        events = []
        for entry in self.entries(lineage):
            events.append(entry.event)
            if through is not None and (entry.source, entry.round) == through:
                break
        return PrivacyLedger(events=tuple(events), max_uploads_per_day=max_uploads_per_day)

    def stopped(self, lineage: str) -> str | None:
        """Why the lineage was stopped (None if it was not)."""
        row = self._conn.execute("SELECT reason FROM stopped WHERE lineage = ?",
                                 (lineage,)).fetchone()
        return None if row is None else str(row["reason"])

    def report(self, lineage: str, config: FederatedConfig, *,
               through: tuple[str, int] | None = None) -> dict[str, Any]:
        """The ``privacy.json`` of a version published after round ``through``: every
        recorded event of the lineage up to it, each with its own parameters."""
        p = config.privacy
        ledger = self.ledger(lineage, max_uploads_per_day=config.rounds.max_uploads_per_day,
                             through=through)
        report = DevicePrivacyAccountant(delta=p.delta, accountant=p.accountant).report(
            ledger, clip_norm=p.clip_norm)
        report["enabled"] = True
        if p.target_epsilon is not None:  # the budget the rounds were opened under
            guarantee = report["guarantees"][p.budget_kind]
            report["budget"] = {"kind": p.budget_kind, "target_epsilon": p.target_epsilon,
                                "spent_epsilon": guarantee["epsilon"],
                                "assumption_met": guarantee["assumption_met"]}
        report["ledger"] = {"lineage": lineage, "events": len(ledger.events),
                            "through": None if through is None else list(through)}
        report["note"] = ("every round opened in this lineage (the simulation's and the "
                          "server's, abandoned ones included) up to this version, each "
                          "accounted with the parameters it ran under")
        return report

    # ------------------------------------------------------------------ writing

    def open_round(self, lineage: str, source: str, round_: int, event: RoundPrivacyEvent,
                   *, opened_at: float, config: FederatedConfig,
                   base_events: list[RoundPrivacyEvent] | None = None) -> LedgerEntry:
        """Check the budget and record round ``(source, round_)`` as opened.

        Parameters
        ----------
        lineage : str
            The lineage's root version (:func:`lineage_of`).
        source : str
            Which round engine (``http``, ``secure``...): round numbers are per source.
        round_ : int
        event : RoundPrivacyEvent
            What the round runs under; its ``day`` is replaced by ``opened_at``'s UTC day.
        opened_at : float
            Unix time on the server's clock.
        config : FederatedConfig
            Its ``privacy.target_epsilon``, ``budget_kind``, ``delta``, ``accountant`` and
            ``rounds.max_uploads_per_day`` set the budget (no target: recorded only).
        base_events : list of RoundPrivacyEvent, optional
            The simulation's events of the lineage's root (:func:`simulated_events`),
            recorded first if the lineage has no event yet.

        Raises
        ------
        BudgetExhaustedError
            The lineage is stopped, or the round would take it over the budget; nothing
            is recorded for the round.
        """
        day = int(opened_at // DAY_S)
        event = RoundPrivacyEvent(**{**asdict(event), "day": day})
        p = config.privacy
        refused: BudgetExhaustedError | None = None
        with self._transaction():
            row = self._conn.execute(
                "SELECT * FROM ledger WHERE lineage = ? AND source = ? AND round = ?",
                (lineage, source, round_)).fetchone()
            if row is not None:  # recorded before (a retry after a crash): once only
                recorded = _event(row)
                # a row from before γ was recorded is the same round at γ = 0
                same = (event if "corruption_rate" in json.loads(row["event"])
                        else replace(event, corruption_rate=0.0))
                if replace(recorded, day=0) != replace(same, day=0):
                    raise ValueError(f"round {source}/{round_} of lineage {lineage} was "
                                     f"recorded with {recorded}, not {event}")
                return LedgerEntry(lineage, source, round_, recorded,
                                   float(row["opened_at"]), str(row["status"]))
            reason = self.stopped(lineage)
            if reason is not None:
                raise BudgetExhaustedError(
                    f"lineage {lineage} is stopped ({reason}); no round opens for it. Train "
                    "a new model (a new lineage) to continue",
                    lineage=lineage, epsilon=float("inf"),
                    target=float(p.target_epsilon or 0.0), stopped=True)
            if base_events and not self._conn.execute(
                    "SELECT 1 FROM ledger WHERE lineage = ? LIMIT 1", (lineage,)).fetchone():
                for i, e in enumerate(base_events):
                    self._insert(lineage, SIMULATION, i, e, e.day * DAY_S, "simulated")
            refused = self._over_budget(lineage, round_, event, opened_at, config)
            if refused is None:
                self._insert(lineage, source, round_, event, opened_at, "open")
        if refused is not None:  # raised after the commit: a 'stop' marker is kept
            raise refused
        return LedgerEntry(lineage, source, round_, event, opened_at, "open")

    def _over_budget(self, lineage: str, round_: int, event: RoundPrivacyEvent,
                     opened_at: float, config: FederatedConfig) -> BudgetExhaustedError | None:
        """The refusal of a round that would exceed the budget (recording a stop under the
        ``stop`` policy), or None."""
        p = config.privacy
        if not p.enabled or p.target_epsilon is None:
            return None
        planned = self.ledger(lineage, max_uploads_per_day=config.rounds.max_uploads_per_day
                              ).add(event)
        accountant = DevicePrivacyAccountant(delta=p.delta, accountant=p.accountant)
        eps = accountant.epsilon(planned, p.budget_kind)
        if eps <= p.target_epsilon:
            return None
        stopped = self.policy == "stop"
        detail = (f"round {round_} would take lineage {lineage} to epsilon={eps:.4g} "
                  f"({p.budget_kind}, delta={p.delta:g}), over the budget epsilon="
                  f"{p.target_epsilon:g}, after {planned.rounds - 1} recorded rounds; ")
        if stopped:
            self._conn.execute("INSERT OR IGNORE INTO stopped VALUES (?, ?, ?)", (
                lineage, opened_at, f"budget epsilon={p.target_epsilon:g} reached after "
                f"{planned.rounds - 1} rounds"))
            detail += "the lineage is stopped (budget policy 'stop')"
        else:
            # q lowers only the amplified kinds; the others count every round a device
            # could join
            lever = ("a lower sampling rate" if p.budget_kind in ("secure_sum", "shuffle")
                     else "a larger n_min (min_clients)" if p.budget_kind == "device_sum"
                     else "fewer uploads per device a day")
            detail += (f"not opened (budget policy 'refuse': more noise, {lever} or a new "
                       "model would be needed)")
        log.warning("federated round refused: privacy budget", lineage=lineage, round=round_,
                    epsilon=eps, target=p.target_epsilon, policy=self.policy)
        return BudgetExhaustedError(detail, lineage=lineage, epsilon=eps,
                                    target=p.target_epsilon, stopped=stopped)

    def _insert(self, lineage: str, source: str, round_: int, event: RoundPrivacyEvent,
                opened_at: float, status: str) -> None:
        self._conn.execute(
            "INSERT INTO ledger (lineage, source, round, event, day, opened_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (lineage, source, round_, json.dumps(asdict(event)), event.day, opened_at, status))

    def ensure_recorded(self, lineage: str, source: str, round_: int,
                        event: RoundPrivacyEvent, *, opened_at: float,
                        base_events: list[RoundPrivacyEvent] | None = None) -> None:
        """Record a round that was opened without the ledger (a store from before it), with
        the parameters it ran under; no budget check (it has run). No-op if recorded."""
        event = RoundPrivacyEvent(**{**asdict(event), "day": int(opened_at // DAY_S)})
        with self._transaction():
            if self._conn.execute(
                    "SELECT 1 FROM ledger WHERE lineage = ? AND source = ? AND round = ?",
                    (lineage, source, round_)).fetchone():
                return
            if base_events and not self._conn.execute(
                    "SELECT 1 FROM ledger WHERE lineage = ? LIMIT 1", (lineage,)).fetchone():
                for i, e in enumerate(base_events):
                    self._insert(lineage, SIMULATION, i, e, e.day * DAY_S, "simulated")
            self._insert(lineage, source, round_, event, opened_at, "open")

    def close_round(self, lineage: str, source: str, round_: int,
                    status: Literal["aggregated", "abandoned"]) -> None:
        """Note how a recorded round ended (its event stays: abandoned rounds count)."""
        if status not in ("aggregated", "abandoned"):
            raise ValueError(f"status={status!r} should be 'aggregated' or 'abandoned'")
        self._conn.execute("UPDATE ledger SET status = ? WHERE lineage = ? AND source = ? "
                           "AND round = ?", (status, lineage, source, round_))

