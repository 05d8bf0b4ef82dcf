"""Secure rounds over HTTP: SecAgg+ stages on the wall clock, admission by anonymous token.

The engine behind the ``/v1/secure`` blueprint (:mod:`serving._secure`). It reuses the
platform unchanged: the protocol is :class:`federated.SecAggServer` (its state is
serialised into the store after every stage), the devices' encoding is
:class:`federated.DiscreteGaussianEncoding`, admission is :class:`federated.TokenIssuer`,
and a completed round is applied with the platform's strategy
(:func:`federated.build_strategy`, ``aggregate_sum``).

A round's life, each step driven by :meth:`SecureRounds.tick` (every request calls it,
and a background thread per process calls it when no request comes), never by an
operator:

``checkin``
    Devices redeem one token each and get a random round ticket. The window closes at
    its deadline or when ``max_clients`` checked in; with fewer than ``min_clients`` the
    round is abandoned, else the cohort is fixed: n, (k, t) from
    :meth:`federated.SecAggParams.for_cohort`, client ids by a secret permutation.
``advertise`` → ``share`` → ``mask`` → ``consistency`` → ``unmask``
    Each stage waits for the replies of the clients still in the round, until all came
    or the stage deadline passed; then the server's state machine advances, and the
    next messages wait in the outbox. A client that misses a stage has dropped out;
    fewer than t survivors anywhere abandon the round with nothing unmasked, and so do
    too few masked inputs for the ledger's charge: the survivors minus the ⌊γ n⌋ clients
    of the cohort that may collude with the server (γ = ``corruption_rate``) must reach
    the ``min_clients − ⌊γ min_clients⌋`` honest noises the round was charged with
    (:func:`federated.privacy.unmask_shortfall`).
``aggregated`` / ``abandoned``
    The modular sum is decoded, the strategy applies it, and the new global parameters
    become a *candidate* model version; every per-client row of the round is deleted.
    The candidate goes live only by the promotion policy (:meth:`SecureRounds.decide_pending`,
    run by the background thread): ``validation`` publishes it as a reranker version
    (unpromoted) and applies :func:`serving._promotion_policy.decide_promotion` (its
    keyword check must not drop; recorded in ``var/reranker/promotions.jsonl``);
    ``operator`` leaves it for ``stickers models promote``; ``unconditional`` (only for
    the synthetic ``zeros`` model, which has nothing to validate) makes it live, recorded
    in ``var/secure/promotions.jsonl``. The next round opens once the candidate is decided.

The privacy ledger (:class:`serving._ledger.ServerLedger`, the server's one ledger, source
``secure``): before a round opens, its event — built from the round recipe
(:class:`federated.RoundRecipe`, the distributed discrete Gaussian it actually runs;
secure aggregation yes, secret sampling coin no) — is checked against the budget
(``budget_kind``, default ``device_sum``, the candidates' headline: sums of
>= ``min_clients`` reports, no amplification by sampling) and recorded in one ledger
transaction; a round over the
budget is not opened (``refuse``; ``stop`` closes the lineage for good). A round's event
stays when it is abandoned; its status is noted when it closes. A restart that reopens
a round number already recorded (a crash between the two stores' commits) finds it and
records nothing more: each opened round counts once.

A crash at any point loses nothing acknowledged: each step is one SQLite transaction,
and on restart the next tick continues from the stored stage (or, if its deadline
passed meanwhile, closes it by the same rules).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import structlog
from pydantic import Field, model_validator

from data import ComponentConfig
from federated import (
    FederatedConfig,
    RoundPrivacyEvent,
    RoundRecipe,
    SecAggAbandoned,
    SecAggProtocolError,
    TokenError,
    build_strategy,
)
from federated.privacy import (
    DiscreteGaussianEncoding,
    colluding_clients,
    honest_reports,
    unmask_shortfall,
)
from federated.secagg import Message as SecAggMessage
from federated.secagg import SecAggParams, SecAggServer, Token, TokenIssuer, token_day
from serving._board import pid_alive
from serving._errors import ApiError
from serving._ledger import (
    BudgetExhaustedError,
    BudgetPolicy,
    ServerLedger,
    lineage_of,
    simulated_events,
)
from serving._promotion_policy import Evaluator, PromotionPolicy
from serving._secure_store import ISSUER_FILE, ROUNDS_FILE, connect, transaction

__all__ = [
    "PROTOCOL_STAGES",
    "SECURE_CONFIG_ENV",
    "SecureRounds",
    "SecureRoundsConfig",
]

log = structlog.get_logger(__name__)

SECURE_CONFIG_ENV = "STICKERS_SECURE_CONFIG"
SECURE = "secure"
"""The privacy ledger's ``source`` of these rounds."""
RERANKER = "reranker"
LEDGER_FILE = "privacy_ledger.sqlite3"
CLAIM_TIMEOUT_S = 900.0
"""A candidate's decision claimed longer ago than this is taken over (its process hung)."""
PROTOCOL_STAGES = ("advertise", "share", "mask", "consistency", "unmask")
_MESSAGE_KIND = {"advertise": "key_advertisement", "share": "encrypted_shares",
                 "mask": "masked_input", "consistency": "consistency_signature",
                 "unmask": "unmask_shares"}


class SecureRoundsConfig(ComponentConfig):
    """Secure rounds of the server (``STICKERS_SECURE_CONFIG``: a JSON file of these fields).

    A :class:`data.ComponentConfig`: one loader and one error type with every other config.
    """

    config_name: ClassVar[str] = "secure rounds config"

    enabled: bool = False
    """Register the ``/v1/secure`` endpoints and run rounds."""
    model: Literal["reranker", "zeros"] = "reranker"
    """Starting parameters: the served reranker's global weights, or zeros (tests, bench)."""
    n_parameters: int = Field(default=64, ge=1)
    """P when ``model='zeros'``."""
    checkin_s: float = Field(default=60.0, gt=0)
    """Check-in window of a round (seconds)."""
    stage_s: float = Field(default=30.0, gt=0)
    """Deadline of each protocol stage (seconds), plus ``stage_s_per_client`` × n."""
    stage_s_per_client: float = Field(default=0.0, ge=0)
    """Seconds added to each stage's deadline per client of the cohort (the server's
    and the clients' work per stage grows with n: O(n) replies, O(k) keys each)."""
    stage_extension_s: float | None = Field(default=None, gt=0)
    """When a stage's deadline passes with replies missing but more replies in than at
    the previous deadline (or the stage's start), the deadline moves by this much
    (default ``stage_s / 2``); a stage where nobody answered since the last deadline
    closes, so a silent client costs one extension.
    A loaded server or slow clients then cost time, not the round; silence still ends
    it."""
    max_stage_extensions: int = Field(default=2, ge=0)
    """At most this many extensions per stage (0: fixed deadlines)."""
    min_clients: int = Field(default=100, ge=3)
    """Fewest checked-in clients for a round to start (n_min of the privacy accounting)."""
    max_clients: int = Field(default=1000, ge=3)
    """Check-in closes early at this many clients."""
    tokens_per_day: int = Field(default=2, ge=1)
    """Tokens one enrolment may take per UTC day (= its admissions per day)."""
    bits: int = Field(default=32, ge=8, le=32)
    """b: reports and sums live in Z_{2^b}."""
    n_max: int = Field(default=10_000, ge=3)
    """Largest cohort the encoding's wrap-around bound covers."""
    clip_norm: float = Field(default=1.0, gt=0)
    """C, each device clips its update to this L2 norm."""
    noise_multiplier: float = Field(default=1.0, ge=0)
    """σ: each device adds discrete Gaussian noise of std σC (``DiscreteGaussianEncoding.plan``)."""
    server_learning_rate: float = Field(default=1.0, gt=0)
    """FedAvg's server step."""
    dropout_rate: float = Field(default=0.3, ge=0, lt=1)
    """Design dropout rate for the neighbour graph's (k, t)."""
    corruption_rate: float = Field(default=0.05, ge=0, lt=0.5)
    """Fraction of clients assumed to collude with the server."""
    max_rounds: int | None = Field(default=None, ge=1)
    """Stop opening rounds after this many (None: run on)."""
    tick_interval_s: float = Field(default=0.5, gt=0)
    """How often the background thread checks deadlines."""
    sampling_rate: float = Field(default=0.01, gt=0, le=1)
    """q of the ``secure_sum`` figure ("if a secret sampling coin were in place"): the
    largest chance of any one device taking part in a round (the server cannot measure
    it). The met guarantee, ``device_sum``, does not use it (no amplification)."""
    target_epsilon: float | None = Field(default=8.0, gt=0)
    """Budget of the model lineage (``budget_kind``, ``delta``); None: recorded only."""
    delta: float = Field(default=1e-6, gt=0, lt=1)
    """δ of the budget and of published ``privacy.json`` files."""
    budget_kind: Literal["local", "device_local", "shuffle", "secure_sum",
                         "device_sum"] = "device_sum"
    """The guarantee the budget applies to. ``device_sum`` (the default, and the headline of
    these rounds' ``privacy.json``): the server sees only sums of at least ``min_clients``
    masked reports, which these rounds enforce, and no sampling amplification, since
    devices choose when to check in (every round a device could join, at most
    ``tokens_per_day`` a day). ``secure_sum`` would assume a secret sampling coin,
    which these rounds do not meet."""
    promotion: Literal["validation", "operator", "unconditional"] | None = None
    """How a candidate goes live (None: the serving config's ``promotion`` for the
    reranker, ``unconditional`` for ``zeros``, whose synthetic parameters have nothing
    to validate); ``unconditional`` is refused for the reranker."""

    @model_validator(mode="after")
    def _promotion_fits_the_model(self) -> SecureRoundsConfig:
        if self.model == "zeros" and self.promotion == "validation":
            raise ValueError("promotion='validation' needs model='reranker' (the synthetic "
                             "zeros model has no validation data); use 'unconditional' or "
                             "'operator'")
        if self.model == "reranker" and self.promotion == "unconditional":
            raise ValueError("promotion='unconditional' is only for model='zeros'; a "
                             "reranker candidate goes live by 'validation' or 'operator'")
        return self

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> SecureRoundsConfig:
        """Read the JSON file named by ``STICKERS_SECURE_CONFIG`` (absent: disabled)."""
        env = os.environ if environ is None else environ
        path = env.get(SECURE_CONFIG_ENV)
        if not path:
            return cls()
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise cls.config_error(f"{SECURE_CONFIG_ENV}={path}: cannot read it ({exc})"
                                   ) from exc
        return cls.from_json(text, f"{SECURE_CONFIG_ENV}={path}")

    def federated(self) -> FederatedConfig:
        """The platform config of these rounds: the strategy that applies a round's sum,
        and the recipe's secure aggregation with this config's ``dropout_rate`` and
        ``corruption_rate`` (what the protocol runs under, hence what the privacy events
        record)."""
        return FederatedConfig.model_validate({
            "strategy": {"name": "fedavg", "server_learning_rate": self.server_learning_rate},
            "rounds": {"min_reports": self.min_clients, "sampling_rate": self.sampling_rate,
                       "max_uploads_per_day": self.tokens_per_day},
            "privacy": {"clip_norm": self.clip_norm, "noise_multiplier": self.noise_multiplier,
                        "target_epsilon": self.target_epsilon, "delta": self.delta,
                        "budget_kind": self.budget_kind},
            # the protocol's (k, t) and the privacy events use these: one source
            "secure_aggregation": {"enabled": True, "bits": self.bits, "n_max": self.n_max,
                                   "dropout_rate": self.dropout_rate,
                                   "corruption_rate": self.corruption_rate}})

    @property
    def resolved_extension_s(self) -> float:
        """The extension of a stage deadline (``stage_extension_s`` or ``stage_s / 2``)."""
        return self.stage_extension_s or self.stage_s / 2

    def stage_deadline_s(self, n_clients: int) -> float:
        """The deadline of a protocol stage of a cohort of ``n_clients``."""
        return self.stage_s + self.stage_s_per_client * n_clients

    def resolved_promotion(self, serving_promotion: str = "validation") -> str:
        """The promotion policy in force (see ``promotion``)."""
        if self.promotion is not None:
            return self.promotion
        return "unconditional" if self.model == "zeros" else serving_promotion


def _too_few_honest(survivors: int, cohort: int, min_clients: int,
                    corruption_rate: float) -> str:
    """Why a round with ``survivors`` masked inputs of ``cohort`` is not unmasked."""
    honest = honest_reports(min_clients, corruption_rate)
    corrupt = colluding_clients(cohort, corruption_rate)
    return (f"{survivors} masked inputs arrived from a cohort of {cohort}; up to "
            f"{corrupt} of them (corruption_rate={corruption_rate:g} of the cohort) may "
            f"collude with the server, leaving {survivors - corrupt} honest noises, fewer "
            f"than the {honest} (min_clients={min_clients} - floor({corruption_rate:g} * "
            f"{min_clients})) the privacy ledger charged; nothing was unmasked")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class SecureRounds:
    """The secure-round engine over one store directory (thread- and process-safe).

    Parameters
    ----------
    config : SecureRoundsConfig
    directory : Path
        Holds ``rounds.sqlite3`` and ``issuer.sqlite3``.
    initial_parameters : callable
        Returns the starting global parameters (P,) float32 (called once, when the
        lineage is empty).
    clock : callable, optional
        Unix time (tests pass a fake clock).
    var : Path, optional
        Artifact root; needed with ``model='reranker'`` (the live reranker is the model
        trained, candidates are published as reranker versions).
    ledger_path : Path, optional
        The server's privacy ledger (default ``directory/privacy_ledger.sqlite3``; the
        app passes :attr:`ServingConfig.resolved_ledger_path`, shared with HTTP rounds).
    budget_policy : {"refuse", "stop"}
        What a round over the budget does to the lineage (:mod:`serving._ledger`).
    serving_promotion : {"validation", "operator"}
        The serving config's promotion policy (used when the secure config sets none).
    promotion_tolerance : float
        How far the candidate's validation figure may drop below the live version's.
    evaluate : callable, optional
        The validation figure ``(var, reranker version) -> float`` (default:
        :func:`serving._promotion_policy.keyword_hit_rate`).
    """

    def __init__(self, config: SecureRoundsConfig, directory: Path,
                 initial_parameters: Callable[[], np.ndarray],
                 clock: Callable[[], float] = time.time, *, var: Path | None = None,
                 ledger_path: Path | None = None, budget_policy: BudgetPolicy = "refuse",
                 serving_promotion: str = "validation", promotion_tolerance: float = 0.0,
                 evaluate: Evaluator | None = None) -> None:
        if config.model == "reranker" and var is None:
            raise ValueError("model='reranker' needs var (the artifact root)")
        self.config = config
        self.directory = Path(directory)
        self.initial_parameters = initial_parameters
        self.clock = clock
        self.var = None if var is None else Path(var)
        self.ledger_path = Path(ledger_path or self.directory / LEDGER_FILE)
        self.budget_policy = budget_policy
        self.promotion = config.resolved_promotion(serving_promotion)
        self.promotion_tolerance = promotion_tolerance
        self.evaluate = evaluate
        self.refused: BudgetExhaustedError | None = None
        """Set when the budget refused the next round (no round opens in this process
        until it restarts with other parameters)."""
        self._local = threading.local()
        self._issuer: TokenIssuer | None = None
        self._encoding: DiscreteGaussianEncoding | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- plumbing

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "rounds", None)
        if conn is None:
            conn = connect(self.directory / ROUNDS_FILE)
            self._local.rounds = conn
        return conn

    def _issuer_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "issuer", None)
        if conn is None:
            conn = connect(self.directory / ISSUER_FILE, issuer=True)
            self._local.issuer = conn
        return conn

    def issuer(self) -> TokenIssuer:
        """The token issuer (its master secret created on first use)."""
        if self._issuer is None:
            conn = self._issuer_conn()
            with transaction(conn):
                row = conn.execute("SELECT secret FROM issuer_key WHERE name='master'"
                                   ).fetchone()
                if row is None:
                    secret = TokenIssuer.generate_secret()
                    conn.execute("INSERT INTO issuer_key VALUES ('master', ?)", (secret,))
                else:
                    secret = row[0]
            self._issuer = TokenIssuer(secret)
        return self._issuer

    def encoding(self, n_parameters: int) -> DiscreteGaussianEncoding:
        """The devices' DDG encoding for P parameters (fixed by the config)."""
        if self._encoding is None or self._encoding.dimension != n_parameters:
            encoding = RoundRecipe.from_config(self.config.federated(), n_parameters,
                                               secure=True).encoding
            assert encoding is not None  # secure=True always plans one
            self._encoding = encoding
        return self._encoding

    def close(self) -> None:
        """Stop the background thread (connections close with their threads)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def start_background(self) -> None:
        """Tick every ``tick_interval_s`` in a daemon thread (deadlines close rounds)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.config.tick_interval_s):
                try:
                    self.tick(decide=True)
                except Exception as exc:  # keep ticking; the next tick retries
                    log.error("secure round tick failed", error=str(exc))

        self._thread = threading.Thread(target=loop, name="secure-rounds", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ model

    def _insert_model(self, conn: sqlite3.Connection, params: np.ndarray, *, status: str,
                      artifact: str | None = None, base_version: int | None = None,
                      from_round: int | None = None) -> int:
        last = conn.execute("SELECT MAX(model_version) FROM models").fetchone()[0]
        version = 0 if last is None else int(last) + 1
        conn.execute("INSERT INTO models (model_version, parameters, status, artifact, "
                     "base_version, from_round) VALUES (?, ?, ?, ?, ?, ?)",
                     (version, np.asarray(params, np.float32).tobytes(), status, artifact,
                      base_version, from_round))
        if status == "live":
            self._set_live(conn, version)
        return version

    @staticmethod
    def _set_live(conn: sqlite3.Connection, version: int) -> None:
        conn.execute("UPDATE models SET status='live' WHERE model_version=?", (version,))
        conn.execute("INSERT INTO live_model VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET "
                     "model_version=excluded.model_version", (version,))

    def _live_model(self, conn: sqlite3.Connection) -> tuple[int, np.ndarray, str | None]:
        """(version, parameters (P,) float32, reranker version) devices train now.

        With ``model='reranker'`` the live model follows the served reranker: when
        ``LATEST`` names another version (an operator promoted a held candidate, rolled
        back, or an HTTP round published one), that version becomes live here too.
        Called inside a write transaction.
        """
        row = conn.execute("SELECT m.model_version, m.parameters, m.artifact FROM live_model l "
                           "JOIN models m ON m.model_version = l.model_version").fetchone()
        if row is None:
            legacy = conn.execute("SELECT model_version FROM models ORDER BY model_version "
                                  "DESC LIMIT 1").fetchone()
            if legacy is not None:  # a store from before live_model: its newest version
                self._set_live(conn, int(legacy[0]))
                return self._live_model(conn)
        served = self._served_reranker() if self.config.model == "reranker" else None
        if row is not None and (served is None or row[2] == served):
            return int(row[0]), np.frombuffer(row[1], np.float32).copy(), row[2]
        if served is not None:
            known = conn.execute("SELECT model_version FROM models WHERE artifact=? "
                                 "ORDER BY model_version DESC LIMIT 1", (served,)).fetchone()
            if known is not None:
                self._set_live(conn, int(known[0]))
            else:
                assert self.var is not None
                from serving._rounds import reranker_base

                self._insert_model(conn, reranker_base(self.var, served)[1], status="live",
                                   artifact=served)
            log.info("secure rounds follow the served reranker", reranker_version=served)
            return self._live_model(conn)
        params = np.asarray(self.initial_parameters(), np.float32).ravel()
        self._insert_model(conn, params, status="live")
        return self._live_model(conn)

    def _served_reranker(self) -> str | None:
        from serving._rounds import live_reranker

        assert self.var is not None
        return live_reranker(self.var)

    def model(self) -> tuple[int, np.ndarray]:
        """(model version, global parameters (P,) float32) of the live version."""
        conn = self._conn()
        with transaction(conn):
            version, params, _ = self._live_model(conn)
        return version, params

    def candidates(self) -> list[dict[str, Any]]:
        """Every version an aggregated round produced: status, reranker version, decision."""
        rows = self._conn().execute(
            "SELECT model_version, status, artifact, base_version, from_round, decision FROM "
            "models WHERE from_round IS NOT NULL ORDER BY model_version").fetchall()
        return [{"model_version": r[0], "status": r[1], "reranker_version": r[2],
                 "base_version": r[3], "round": r[4],
                 "decision": json.loads(r[5]) if r[5] else None} for r in rows]

    def _lineage(self, artifact: str | None) -> str:
        if self.config.model == "zeros" or artifact is None:
            return f"secure-zeros-{self.directory.resolve().name}"
        assert self.var is not None
        return lineage_of(self.var, artifact)

    def _base_events(self, lineage: str) -> list[RoundPrivacyEvent]:
        if self.config.model == "zeros" or self.var is None:
            return []
        return simulated_events(self.var, lineage)

    # ------------------------------------------------------------------ ticks

    def tick(self, *, decide: bool = True) -> None:
        """Do whatever is due: decide a candidate, open a round, close check-in, advance a
        stage.

        Parameters
        ----------
        decide : bool
            Also apply the promotion policy to a waiting candidate (slow: it publishes
            and validates a model). Requests pass False; the background thread and
            direct callers decide.
        """
        if decide:
            self.decide_pending()
        now = self.clock()
        conn = self._conn()
        row = conn.execute("SELECT round, stage, stage_deadline FROM secure_rounds "
                           "WHERE status='open'").fetchone()
        if row is not None and now < row[2]:
            return  # a stage that completes early is advanced by its last reply
        if row is None and (self.refused is not None or self._pending(conn)):
            return  # nothing can open until the budget allows or the candidate is decided
        with transaction(conn):
            self._tick_locked(conn, now)

    @staticmethod
    def _pending(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM models WHERE status='candidate' LIMIT 1"
                            ).fetchone() is not None

    def _stage_complete(self, conn: sqlite3.Connection, round_: int, stage: str) -> bool:
        if stage not in PROTOCOL_STAGES:
            return False
        # clients that announced they left are not waited for
        expected = conn.execute(
            "SELECT COUNT(*) FROM outbox o JOIN participants p ON p.round = o.round AND "
            "p.client_id = o.client_id WHERE o.round=? AND o.stage=? AND p.left_round=0",
            (round_, stage)).fetchone()[0]
        got = conn.execute(
            "SELECT COUNT(*) FROM inbox i JOIN participants p ON p.round = i.round AND "
            "p.client_id = i.client_id WHERE i.round=? AND i.stage=? AND p.left_round=0",
            (round_, stage)).fetchone()[0]
        return got >= expected and (expected > 0 or conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE round=? AND stage=?", (round_, stage)
        ).fetchone()[0] > 0)

    def _tick_locked(self, conn: sqlite3.Connection, now: float) -> None:
        row = conn.execute("SELECT round, stage, stage_deadline FROM secure_rounds "
                           "WHERE status='open'").fetchone()
        if row is None:
            self._open_round(conn, now)
            return
        round_, stage, deadline = row
        full = stage == "checkin" and conn.execute(
            "SELECT COUNT(*) FROM participants WHERE round=?", (round_,)
        ).fetchone()[0] >= self.config.max_clients
        complete = full or self._stage_complete(conn, round_, stage)
        if not complete and stage != "checkin" and now >= deadline and self._extend(
                conn, round_, stage, now):
            return
        if now >= deadline or complete:
            if stage == "checkin":
                self._close_checkin(conn, round_, now)
            else:
                self._advance(conn, round_, stage, now)

    def _extend(self, conn: sqlite3.Connection, round_: int, stage: str, now: float) -> bool:
        """At a stage deadline: extend it if replies are still coming in (see
        ``stage_extension_s``); True when extended."""
        cfg = self.config
        if cfg.max_stage_extensions == 0:
            return False
        got = conn.execute(
            "SELECT COUNT(*) FROM inbox i JOIN participants p ON p.round = i.round AND "
            "p.client_id = i.client_id WHERE i.round=? AND i.stage=? AND p.left_round=0",
            (round_, stage)).fetchone()[0]
        progress, extensions = conn.execute(
            "SELECT stage_progress, stage_extensions FROM secure_rounds WHERE round=?",
            (round_,)).fetchone()
        if got <= (progress or 0) or (extensions or 0) >= cfg.max_stage_extensions:
            return False
        conn.execute("UPDATE secure_rounds SET stage_deadline=?, stage_progress=?, "
                     "stage_extensions=? WHERE round=?",
                     (now + cfg.resolved_extension_s, got, (extensions or 0) + 1, round_))
        log.info("secure round stage extended", round=round_, stage=stage, replies=got,
                 extension=(extensions or 0) + 1)
        return True

    def _open_round(self, conn: sqlite3.Connection, now: float) -> None:
        if self.refused is not None or self._pending(conn):
            return
        last = conn.execute("SELECT MAX(round) FROM secure_rounds").fetchone()[0]
        number = 0 if last is None else int(last) + 1
        if self.config.max_rounds is not None and number >= self.config.max_rounds:
            return
        version, params, artifact = self._live_model(conn)
        recipe = RoundRecipe.from_config(self.config.federated(), int(params.shape[0]),
                                         secure=True)
        enc = recipe.encoding
        assert enc is not None  # secure=True always plans one
        lineage = self._lineage(artifact)
        # recorded (and the budget checked) before the round exists: a crash between the
        # two commits leaves a recorded round that never ran (counted), never the reverse
        try:
            with ServerLedger(self.ledger_path, policy=self.budget_policy) as ledger:
                ledger.open_round(lineage, SECURE, number,
                                  RoundPrivacyEvent.from_recipe(recipe, 0), opened_at=now,
                                  config=recipe.config,
                                  base_events=self._base_events(lineage))
        except BudgetExhaustedError as exc:
            self.refused = exc
            log.warning("secure round not opened: privacy budget", round=number,
                        error=str(exc))
            return
        # tokens of earlier days are refused by their day anyway: forget their hashes
        conn.execute("DELETE FROM spent_tokens WHERE day < ?", (token_day(now) - 1,))
        conn.execute(
            "INSERT INTO secure_rounds (round, round_id, status, stage, model_version, "
            "rotation_seed, encoding, opened_at, stage_deadline, lineage) VALUES "
            "(?, ?, 'open', 'checkin', ?, ?, ?, ?, ?, ?)",
            (number, secrets.token_bytes(16), version, secrets.randbits(63),
             json.dumps(enc.describe()), float(math.floor(now)), now + self.config.checkin_s,
             lineage))
        log.info("secure round opened", round=number, model_version=version, lineage=lineage)

    def _close(self, conn: sqlite3.Connection, round_: int, status: str, now: float,
               outcome: dict[str, Any]) -> None:
        conn.execute("UPDATE secure_rounds SET status=?, stage=?, closed_at=?, outcome=?, "
                     "server_state=NULL WHERE round=?",
                     (status, status, float(math.floor(now)), json.dumps(outcome), round_))
        for table in ("participants", "outbox", "inbox"):
            conn.execute(f"DELETE FROM {table} WHERE round=?", (round_,))
        lineage = conn.execute("SELECT lineage FROM secure_rounds WHERE round=?",
                               (round_,)).fetchone()[0]
        if lineage is not None:  # rounds opened before the ledger have no event to close
            with ServerLedger(self.ledger_path, policy=self.budget_policy) as ledger:
                ledger.close_round(lineage, SECURE, round_,
                                   "aggregated" if status == "aggregated" else "abandoned")
        log.info("secure round closed", round=round_, status=status,
                 message=outcome.get("message"))
        self._open_round(conn, now)

    def _close_checkin(self, conn: sqlite3.Connection, round_: int, now: float) -> None:
        tickets = [r[0] for r in conn.execute(
            "SELECT ticket_hash FROM participants WHERE round=?", (round_,))]
        n = len(tickets)
        if n < self.config.min_clients:
            self._close(conn, round_, "abandoned", now, {
                "status": "abandoned", "n_clients": n,
                "message": f"{n} devices checked in, fewer than min_clients="
                           f"{self.config.min_clients}; nothing was collected"})
            return
        enc_row = conn.execute("SELECT round_id, encoding FROM secure_rounds WHERE round=?",
                               (round_,)).fetchone()
        dimension = int(json.loads(enc_row[1])["padded_dimension"])
        params = SecAggParams.for_cohort(n, bits=self.config.bits, dimension=dimension,
                                         dropout_rate=self.config.dropout_rate,
                                         corruption_rate=self.config.corruption_rate)
        server = SecAggServer(params, round_id=bytes(enc_row[0]))
        # client ids 0..n-1 in an order no one can predict (the OS CSPRNG)
        client_ids = random.SystemRandom().sample(range(n), n)
        for ticket, client_id in zip(tickets, client_ids, strict=True):
            conn.execute("UPDATE participants SET client_id=? WHERE round=? AND ticket_hash=?",
                         (client_id, round_, ticket))
        conn.executemany("INSERT INTO outbox VALUES (?, 'advertise', ?, ?)",
                         [(round_, u, m.to_bytes())
                          for u, m in server.setup_messages().items()])
        conn.execute("UPDATE secure_rounds SET stage='advertise', stage_deadline=?, "
                     "n_clients=?, params=?, server_state=? WHERE round=?",
                     (now + self.config.stage_deadline_s(n), n, json.dumps(
                         {"n_clients": n, "degree": params.degree,
                          "threshold": params.threshold, "bits": params.bits,
                          "dimension": params.dimension}), server.to_bytes(), round_))
        log.info("secure round cohort fixed", round=round_, n=n, degree=params.degree,
                 threshold=params.threshold)

    def _advance(self, conn: sqlite3.Connection, round_: int, stage: str, now: float) -> None:
        state = conn.execute("SELECT server_state FROM secure_rounds WHERE round=?",
                             (round_,)).fetchone()[0]
        server = SecAggServer.from_bytes(state)
        rejected = 0
        for (body,) in conn.execute("SELECT body FROM inbox WHERE round=? AND stage=?",
                                    (round_, stage)).fetchall():
            try:
                server.receive(SecAggMessage.from_bytes(body))
            except SecAggProtocolError as exc:
                rejected += 1
                log.warning("secure round reply refused", round=round_, stage=stage,
                            error=str(exc))
        base = {"n_clients": server.params.n_clients, "degree": server.params.degree,
                "threshold": server.params.threshold}
        n_in = len(server.inbox[stage]) if stage in server.inbox else 0
        short = unmask_shortfall(n_in, server.params.n_clients,
                                 min_reports=self.config.min_clients,
                                 corruption_rate=self.config.corruption_rate
                                 ) if stage == "mask" else 0
        if short:
            # fewer honest noises than the ledger charged: the sum would carry less noise
            log.warning("secure round not unmasked: too few honest survivors for the "
                        "privacy charge", round=round_, survivors=n_in,
                        cohort=server.params.n_clients, missing=short,
                        honest_needed=honest_reports(self.config.min_clients,
                                                     self.config.corruption_rate))
            self._close(conn, round_, "abandoned", now, {
                **base, "status": "abandoned", "stage": stage, "n_in": n_in,
                "message": _too_few_honest(n_in, server.params.n_clients,
                                           self.config.min_clients,
                                           self.config.corruption_rate)})
            return
        try:
            out = server.advance()
        except SecAggAbandoned as exc:
            self._close(conn, round_, "abandoned", now, {
                **base, "status": "abandoned", "stage": stage, "message": str(exc)})
            return
        conn.execute("DELETE FROM inbox WHERE round=? AND stage=?", (round_, stage))
        conn.execute("DELETE FROM outbox WHERE round=? AND stage=?", (round_, stage))
        if stage == "unmask":
            self._finish(conn, round_, server, now, base)
            return
        following = PROTOCOL_STAGES[PROTOCOL_STAGES.index(stage) + 1]
        conn.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?)",
                         [(round_, following, u, m.to_bytes()) for u, m in out.items()])
        conn.execute("UPDATE secure_rounds SET stage=?, stage_deadline=?, server_state=?, "
                     "stage_progress=0, stage_extensions=0 WHERE round=?",
                     (following, now + self.config.stage_deadline_s(server.params.n_clients),
                                       server.to_bytes(), round_))

    def _finish(self, conn: sqlite3.Connection, round_: int, server: SecAggServer, now: float,
                base: dict[str, Any]) -> None:
        assert server.result is not None
        row = conn.execute("SELECT model_version, rotation_seed FROM secure_rounds "
                           "WHERE round=?", (round_,)).fetchone()
        version, params, _artifact = self._live_model(conn)
        n = len(server.survivors)
        outcome: dict[str, Any] = {**base, "n_survivors": n,
                                   "sum": _b64(server.result.astype("<u4").tobytes())}
        if version != int(row[0]):
            outcome.update(status="abandoned", message=f"round {round_} trained model "
                           f"version {row[0]}, but {version} is current; its sum is not "
                           "applied")
            self._close(conn, round_, "abandoned", now, outcome)
            return
        encoding = self.encoding(int(params.shape[0]))
        delta_sum = encoding.decode(server.result, int(row[1]))
        strategy = build_strategy(self.config.federated(), int(params.shape[0]), secure=True)
        result = strategy.aggregate_sum(params, delta_sum, n)
        new = np.asarray(result.parameters, np.float32)
        candidate = self._insert_model(conn, new, status="candidate", base_version=version,
                                       from_round=round_)
        outcome.update(status="aggregated", model_version=candidate,
                       message=f"round {round_} securely aggregated {n} inputs into "
                               f"candidate model version {candidate} (live once the "
                               f"promotion policy '{self.promotion}' accepts it)")
        self._close(conn, round_, "aggregated", now, outcome)

    # -------------------------------------------------------------- promotion

    def decide_pending(self) -> list[dict[str, Any]]:
        """Apply the promotion policy to every waiting candidate; returns the decisions.

        One process decides a candidate (a claim on its row; a claim whose process is
        gone, e.g. killed mid-decision, is taken over). With ``model='reranker'`` the
        candidate is first published as a reranker version (``LATEST`` unmoved, its
        ``privacy.json`` from the ledger up to its round), then
        :func:`serving._promotion_policy.decide_promotion` decides and records it; a
        decision already in the promotion history (a crash after recording it) is
        reused, not taken again.
        """
        decided: list[dict[str, Any]] = []
        while (version := self._claim_candidate()) is not None:
            decided.append(self._decide(version))
        return decided

    def _claim_candidate(self) -> int | None:
        conn = self._conn()
        if not self._pending(conn):
            return None
        with transaction(conn):
            row = conn.execute("SELECT model_version, claim_pid, claim_at FROM models WHERE "
                               "status='candidate' ORDER BY model_version LIMIT 1").fetchone()
            if row is None:
                return None
            version, pid, at = row
            stale = (pid is None or not pid_alive(int(pid)) or int(pid) == os.getpid()
                     or self.clock() - float(at or 0) > CLAIM_TIMEOUT_S)
            if not stale:
                return None  # another process is deciding it
            conn.execute("UPDATE models SET claim_pid=?, claim_at=? WHERE model_version=?",
                         (os.getpid(), self.clock(), version))
        return int(version)

    def _decide(self, version: int) -> dict[str, Any]:
        conn = self._conn()
        params_raw, base_version, round_, artifact = conn.execute(
            "SELECT parameters, base_version, from_round, artifact FROM models WHERE "
            "model_version=?", (version,)).fetchone()
        base_artifact = conn.execute("SELECT artifact FROM models WHERE model_version=?",
                                     (base_version,)).fetchone()[0]
        decision: dict[str, Any]
        if self.config.model == "reranker" and base_artifact is not None:
            assert self.var is not None
            if artifact is None:
                # a crash after publishing but before recording the name left the version
                # on disk: it is this candidate's, recovered rather than published twice
                artifact = (self._published(version, int(round_), base_artifact)
                            or self._publish(np.frombuffer(params_raw, np.float32).copy(),
                                             base_artifact, version, int(round_)))
                with transaction(conn):
                    conn.execute("UPDATE models SET artifact=? WHERE model_version=?",
                                 (artifact, version))
            decision = self._reranker_decision(artifact, base_artifact)
        else:
            decision = self._zeros_decision(version, int(base_version))
        with transaction(conn):
            promoted = bool(decision["promoted"])
            conn.execute("UPDATE models SET status=?, decision=?, claim_pid=NULL WHERE "
                         "model_version=?", ("live" if promoted else "held",
                                             json.dumps(decision), version))
            if promoted:
                self._set_live(conn, version)
            log.info("secure candidate decided", model_version=version, round=round_,
                     promoted=promoted, reason=decision.get("reason"))
            if conn.execute("SELECT 1 FROM secure_rounds WHERE status='open'").fetchone() is None:
                self._open_round(conn, self.clock())
        return {"model_version": version, "round": round_, **decision}

    def _published(self, version: int, round_: int, base_artifact: str) -> str | None:
        """The reranker version this candidate published before a crash, if any.

        A version is this candidate's when its manifest's ``server_round`` names the same
        model version, round and base version with the source ``secure``, and its files
        verify (a version is published by an atomic rename, so a crash leaves it whole
        or absent).
        """
        from data import ArtifactError, read_manifest

        assert self.var is not None
        kind_dir = self.var / RERANKER
        if not kind_dir.is_dir():
            return None
        for path in sorted(kind_dir.iterdir(), reverse=True):
            try:
                parameters = json.loads((path / "manifest.json").read_text())["parameters"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            made = parameters.get("server_round") if isinstance(parameters, dict) else None
            if not (isinstance(made, dict) and made.get("model_version") == version
                    and made.get("round") == round_
                    and made.get("base_version") == base_artifact
                    and (made.get("metrics") or {}).get("source") == SECURE):
                continue
            try:
                read_manifest(path, verify=True, kind=RERANKER)
            except ArtifactError:  # a damaged copy is not reused
                continue
            log.warning("secure candidate recovered after a crash", model_version=version,
                        round=round_, artifact=path.name)
            return path.name
        return None

    def _publish(self, params: np.ndarray, base_artifact: str, version: int,
                 round_: int) -> str:
        """Write the candidate as a reranker version (``LATEST`` unmoved)."""
        from serving._publish import reranker_publisher

        assert self.var is not None
        conn = self._conn()
        row = conn.execute("SELECT lineage, outcome FROM secure_rounds WHERE round=?",
                           (round_,)).fetchone()
        lineage, outcome = row[0], json.loads(row[1])
        fcfg = self.config.federated()
        with ServerLedger(self.ledger_path, policy=self.budget_policy) as ledger:
            privacy = ledger.report(lineage, fcfg, through=(SECURE, round_))
        kind_dir = self.var / RERANKER
        record = {"round": round_, "base_version": base_artifact, "model_version": version,
                  "accepted": int(outcome["n_survivors"]),
                  "metrics": {"n_survivors": outcome["n_survivors"],
                              "n_clients": outcome["n_clients"], "source": SECURE},
                  "config": fcfg.model_dump(mode="json"), "privacy": privacy}
        destination = reranker_publisher(promote=False)(params, kind_dir / base_artifact,
                                                        kind_dir, record)
        return destination.name

    def _reranker_decision(self, artifact: str, base_artifact: str) -> dict[str, Any]:
        from serving._promotion_policy import decide_promotion
        from serving._promotions import history

        assert self.var is not None
        for entry in reversed(history(self.var / RERANKER)):
            if entry.get("action") == "candidate" and entry.get("version") == artifact:
                return {k: v for k, v in entry.items() if k not in ("action", "at")}
        policy: PromotionPolicy = "operator" if self.promotion == "operator" else "validation"
        decision = decide_promotion(self.var, artifact, base_artifact, policy=policy,
                                    tolerance=self.promotion_tolerance,
                                    evaluate=self.evaluate)
        return {"version": artifact, "previous": base_artifact, **decision.to_dict()}

    def _zeros_decision(self, version: int, base_version: int) -> dict[str, Any]:
        from serving._promotions import record

        name, base = f"secure-model-{version}", f"secure-model-{base_version}"
        promoted = self.promotion == "unconditional"
        reason = ("policy 'unconditional': the synthetic zeros model has nothing to "
                  "validate" if promoted else "waits for an operator")
        decision = {"candidate": name, "base": base, "policy": self.promotion,
                    "promoted": promoted, "reason": reason}
        record(self.directory, "candidate", name, base, details=decision)
        if promoted:
            record(self.directory, "publish", name, base)
        return decision

    # --------------------------------------------------------------- public reads

    def current(self) -> dict[str, Any]:
        """The open round as devices see it (404 when none is open)."""
        self.tick(decide=False)
        conn = self._conn()
        row = conn.execute(
            "SELECT round, stage, model_version, rotation_seed, encoding, stage_deadline, "
            "n_clients FROM secure_rounds WHERE status='open'").fetchone()
        if row is None:
            if self.refused is not None:
                raise ApiError(404, "privacy_budget_exhausted", str(self.refused))
            if self._pending(conn):
                raise ApiError(404, "no_open_round", "no secure round is open: the last "
                               "round's candidate is being decided; retry shortly")
            raise ApiError(404, "no_open_round", "no secure round is open (max_rounds "
                           "reached, or the server is starting)")
        now = self.clock()
        return {"round": row[0], "stage": row[1], "model_version": row[2],
                "rotation_seed": row[3], "encoding": json.loads(row[4]),
                "stage_ends_in_s": max(0.0, row[5] - now), "n_clients": row[6],
                "token_day": token_day(now)}

    def round_info(self, round_: int) -> dict[str, Any]:
        """A round's public state and, once closed, its outcome (the modular sum)."""
        self.tick(decide=False)
        row = self._conn().execute(
            "SELECT round, status, stage, model_version, n_clients, params, outcome, "
            "rotation_seed FROM secure_rounds WHERE round=?", (round_,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_round", f"secure round {round_} does not exist")
        return {"round": row[0], "status": row[1], "stage": row[2], "model_version": row[3],
                "n_clients": row[4], "params": json.loads(row[5]) if row[5] else None,
                "outcome": json.loads(row[6]) if row[6] else None, "rotation_seed": row[7]}

    # -------------------------------------------------------------- enrolment

    def current_token_day(self) -> int:
        """Today's token day on the engine's clock."""
        return token_day(self.clock())

    def enrol(self) -> bytes:
        """A fresh enrolment credential (the store keeps only its hash)."""
        credential = secrets.token_bytes(32)
        conn = self._issuer_conn()
        with transaction(conn):
            conn.execute("INSERT INTO enrolments VALUES (?, -1, 0)", (_sha(credential),))
        return credential

    def issue(self, credential: bytes, blinded: list[bytes]) -> dict[str, Any]:
        """Evaluate blinded token requests for an enrolment, within its daily allowance."""
        day = token_day(self.clock())
        issuer = self.issuer()
        conn = self._issuer_conn()
        with transaction(conn):
            row = conn.execute("SELECT issued_day, issued FROM enrolments WHERE "
                               "credential_hash=?", (_sha(credential),)).fetchone()
            if row is None:
                raise ApiError(403, "not_enrolled", "the enrolment credential is unknown; "
                               "enrol first (POST /v1/secure/enrolments)")
            issued = row[1] if row[0] == day else 0
            allowance = self.config.tokens_per_day
            if issued + len(blinded) > allowance:
                raise ApiError(429, "token_allowance_spent",
                               f"this enrolment took {issued} of its {allowance} tokens for "
                               f"day {day}; asked for {len(blinded)} more")
            try:
                evaluations = issuer.issue(day, blinded)
            except TokenError as exc:
                raise ApiError(422, "bad_blinded_element", str(exc)) from exc
            conn.execute("UPDATE enrolments SET issued_day=?, issued=? WHERE "
                         "credential_hash=?", (day, issued + len(blinded), _sha(credential)))
        return {"day": day, "public_key": _b64(issuer.public_key(day)),
                "evaluations": [_b64(e) for e in evaluations]}

    # ---------------------------------------------------------------- protocol

    def checkin(self, round_: int, token: Token) -> bytes:
        """Redeem a token into the round's check-in; returns the round ticket."""
        self.tick(decide=False)
        now = self.clock()
        try:
            self.issuer().verify(token, today=token_day(now))
        except TokenError as exc:
            raise ApiError(403, "invalid_token", str(exc)) from exc
        ticket = secrets.token_bytes(32)
        conn = self._conn()
        with transaction(conn):
            row = conn.execute("SELECT stage FROM secure_rounds WHERE round=? AND "
                               "status='open'", (round_,)).fetchone()
            if row is None or row[0] != "checkin":
                raise ApiError(409, "checkin_closed", f"round {round_} is not taking "
                               "check-ins (closed or not open); GET /v1/secure/round")
            count = conn.execute("SELECT COUNT(*) FROM participants WHERE round=?",
                                 (round_,)).fetchone()[0]
            if count >= self.config.max_clients:
                raise ApiError(409, "cohort_full", f"round {round_} has its "
                               f"{self.config.max_clients} clients")
            try:
                conn.execute("INSERT INTO spent_tokens VALUES (?, ?)",
                             (token.spent_key(), token.day))
            except sqlite3.IntegrityError as exc:
                raise ApiError(409, "token_replayed", "this token was already redeemed; "
                               "each token admits once") from exc
            conn.execute("INSERT INTO participants (round, ticket_hash) VALUES (?, ?)",
                         (round_, _sha(ticket)))
            if count + 1 >= self.config.max_clients:
                self._close_checkin(conn, round_, now)
        return ticket

    def _client_id(self, conn: sqlite3.Connection, round_: int, ticket: bytes
                   ) -> tuple[int | None, str, str]:
        row = conn.execute("SELECT status, stage FROM secure_rounds WHERE round=?",
                           (round_,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_round", f"secure round {round_} does not exist")
        status, stage = row
        if status != "open":
            raise ApiError(410, "round_closed", f"round {round_} is {status}")
        part = conn.execute("SELECT client_id FROM participants WHERE round=? AND "
                            "ticket_hash=?", (round_, _sha(ticket))).fetchone()
        if part is None:
            raise ApiError(403, "unknown_ticket", f"this ticket is not a participant of "
                           f"round {round_}")
        return part[0], status, stage

    def poll(self, round_: int, ticket: bytes) -> tuple[str, bytes | None]:
        """The message waiting for this client: (stage, body) or (stage, None) to wait."""
        self.tick(decide=False)
        conn = self._conn()
        # one read transaction (a WAL snapshot): read statement by statement, a stage that
        # advanced between reading it and reading its rows (deleted on advancing) looked
        # like a missed deadline to a client that had answered it
        conn.execute("BEGIN")
        try:
            client_id, _, stage = self._client_id(conn, round_, ticket)
            if stage == "checkin" or client_id is None:
                return stage, None
            if conn.execute("SELECT 1 FROM inbox WHERE round=? AND stage=? AND client_id=?",
                            (round_, stage, client_id)).fetchone():
                return stage, None  # replied; the next stage is not open yet
            row = conn.execute("SELECT body FROM outbox WHERE round=? AND stage=? AND "
                               "client_id=?", (round_, stage, client_id)).fetchone()
        finally:
            conn.execute("COMMIT")
        if row is None:
            raise ApiError(410, "dropped_out", f"client left round {round_} before stage "
                           f"{stage!r} (it missed a deadline)")
        return stage, bytes(row[0])

    def leave(self, round_: int, ticket: bytes) -> None:
        """The client leaves the round cleanly: later stages stop waiting for it.

        What it already sent stays in the round (a masked input is still summed, its
        masks removed by the others' shares); it sends nothing more.
        """
        conn = self._conn()
        with transaction(conn):
            _client_id, _, stage = self._client_id(conn, round_, ticket)
            conn.execute("UPDATE participants SET left_round=1 WHERE round=? AND "
                         "ticket_hash=?", (round_, _sha(ticket)))
            if stage in PROTOCOL_STAGES and self._stage_complete(conn, round_, stage):
                self._advance(conn, round_, stage, self.clock())

    def reply(self, round_: int, ticket: bytes, body: bytes) -> str:
        """Store a client's reply to the current stage; returns the stage."""
        try:
            msg = SecAggMessage.from_bytes(body)
        except SecAggProtocolError as exc:
            raise ApiError(422, "bad_message", str(exc)) from exc
        conn = self._conn()
        with transaction(conn):
            client_id, _, stage = self._client_id(conn, round_, ticket)
            if conn.execute("SELECT left_round FROM participants WHERE round=? AND "
                            "ticket_hash=?", (round_, _sha(ticket))).fetchone()[0]:
                raise ApiError(410, "dropped_out", f"client left round {round_}")
            if stage not in PROTOCOL_STAGES or client_id is None:
                raise ApiError(409, "wrong_stage", f"round {round_} is at stage {stage!r}, "
                               "which takes no replies")
            if msg.kind != _MESSAGE_KIND[stage]:
                raise ApiError(409, "wrong_stage", f"round {round_} is at stage {stage!r} "
                               f"and expects {_MESSAGE_KIND[stage]}, got {msg.kind}")
            if msg.sender != client_id:
                raise ApiError(403, "wrong_sender", f"message claims client {msg.sender}; "
                               "this ticket belongs to another client id")
            rid = conn.execute("SELECT round_id FROM secure_rounds WHERE round=?",
                               (round_,)).fetchone()[0]
            if msg.round_id != bytes(rid):
                raise ApiError(409, "wrong_round", "message of another round's id")
            if not conn.execute("SELECT 1 FROM outbox WHERE round=? AND stage=? AND "
                                "client_id=?", (round_, stage, client_id)).fetchone():
                raise ApiError(410, "dropped_out", f"client left round {round_} before "
                               f"stage {stage!r}")
            try:
                conn.execute("INSERT INTO inbox VALUES (?, ?, ?, ?)",
                             (round_, stage, client_id, body))
            except sqlite3.IntegrityError as exc:
                raise ApiError(409, "replayed_message", f"client already replied to stage "
                               f"{stage!r} of round {round_}") from exc
            if self._stage_complete(conn, round_, stage):
                self._advance(conn, round_, stage, self.clock())
        return stage
