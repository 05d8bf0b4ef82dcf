"""Privacy accounting with Google's ``dp_accounting``: five guarantees, budgets, calibration.

The unit of privacy is a **device** (all of one user's data). Every opened round is
recorded as an immutable :class:`RoundPrivacyEvent` in a :class:`PrivacyLedger`; a
:class:`DevicePrivacyAccountant` composes the ledger into each kind of guarantee:

``local`` (ε₀, δ₀)
    One noisy upload against an observer who sees it *and knows who sent it*. Local DP
    compares any two inputs of the device, whose clipped deltas may differ by 2C, and
    the noise is N(0, σ²C²): a Gaussian mechanism with noise multiplier σ/2 (exact,
    Balle & Wang 2018 analytic Gaussian, via ``dp_accounting.get_epsilon_gaussian``).
``device_local``
    All of one device's uploads under the same linkable observer: the local mechanism
    composed over the most rounds the device can join (rounds, capped per day); no
    amplification by sampling, since the observer is assumed to see who took part.
``shuffle`` (assumption: anonymous shuffling)
    Each round's reports are shuffled among at least ``min_reports`` others and the
    device's participation coin is secret. Per round, Feldman–McMillan–Talwar 2021
    (Thm 3.1 with Thm 3.8 for approximate local DP) amplifies (ε₀, δ₀); Poisson
    sampling amplifies that again (Balle, Barthe, Gaboardi 2018, Thm 8); rounds are
    composed with the PLD of an (ε, δ)-DP mechanism.
``secure_sum`` (assumption: secure aggregation)
    The server sees only the sum of a round's ≥ n_min reports. The threat model of
    secure aggregation lets up to a fraction γ (``corruption_rate``, recorded per round)
    of the clients collude with the server, which then knows their noise: only the
    n_h = n_min − ⌊γ n_min⌋ honest noises count (:func:`honest_reports`; the server
    unmasks no round with fewer, :func:`unmask_shortfall`). They add up to
    N(0, n_h σ²C²) around a sum in which one device moves by at most C when its data is
    replaced by data giving a zero delta (``REPLACE_SPECIAL``, zero record): a Gaussian
    with noise multiplier σ√n_h, Poisson-sampled at rate q each round, composed by
    ``dp_accounting`` (PLD, with RDP alongside), as for DP-FedAvg (McMahan et al. 2018).
    The amplification also ASSUMES the sampling coin is secret from the server: met only
    when every event records both secure aggregation and a secret coin.
``device_sum`` (assumption: what each round recorded)
    Each round charged by what it actually ran under (:attr:`RoundPrivacyEvent.
    secure_aggregation`, :attr:`RoundPrivacyEvent.secret_sampling`): a round with
    secure aggregation and a secret coin as in ``secure_sum``; one with secure
    aggregation whose participation the server can see (HTTP devices choose when to
    check in) as the unamplified sum (q = 1, KLS21 Thm 1 — the "server observed" setting
    of KLS21's client-dropout figure) in every round the device could join (per-day cap,
    as ``device_local``); a round without secure aggregation at its ``device_local``
    cost. Composed by RDP; ``device_local``'s ε when lower (it holds too).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dp_accounting
import numpy as np
from dp_accounting.pld import PLDAccountant, common, privacy_loss_distribution
from dp_accounting.rdp import RdpAccountant, rdp_privacy_accountant

from federated._config import FederatedConfig
from federated._ddg import DDG_RDP_ORDERS, ddg_round_rdp
from federated._errors import FederatedConfigError, PrivacyBudgetError
from federated._recipe import RoundRecipe

__all__ = [
    "GUARANTEE_KINDS",
    "AccountantName",
    "DevicePrivacyAccountant",
    "GuaranteeKind",
    "PrivacyLedger",
    "RoundPrivacyEvent",
    "assumptions_met",
    "calibrate_noise_multiplier",
    "colluding_clients",
    "collusion_statement",
    "fmt21_amplification_delta",
    "fmt21_shuffle_epsilon",
    "guarantee_label",
    "guarantees_headline_first",
    "honest_reports",
    "local_epsilon",
    "max_affordable_rounds",
    "poisson_amplified",
    "privacy_headline",
    "shuffled_gaussian_round",
    "unmask_shortfall",
]

GuaranteeKind = Literal["local", "device_local", "shuffle", "secure_sum", "device_sum"]
AccountantName = Literal["pld", "rdp"]
GUARANTEE_KINDS: tuple[GuaranteeKind, ...] = ("local", "device_local", "shuffle", "secure_sum",
                                              "device_sum")
_NR = dp_accounting.NeighboringRelation

ASSUMPTIONS: dict[str, str] = {
    "local": "one upload; observer sees it and knows the sender; any two inputs of the "
             "device (sensitivity 2C)",
    "device_local": "all uploads of one device, observer links them to the device and sees "
                    "which rounds it joined; worst-case participations (rounds, capped per "
                    "day); no amplification",
    "shuffle": "ASSUMES reports of each round are anonymously shuffled among >= min_reports "
               "reports and the participation coin is secret; FMT21 closed form per round, "
               "Poisson amplification, PLD composition over rounds",
    "secure_sum": "ASSUMES secure aggregation: the server sees only each round's sum of >= "
                  "min_reports noisy reports, of which up to a fraction gamma "
                  "(corruption_rate, recorded per round) of the clients may collude with it "
                  "and tell it their noise: only the noise of n_honest = min_reports - "
                  "floor(gamma*min_reports) reports is counted (noise multiplier "
                  "sigma*sqrt(n_honest) w.r.t. C, zero-record neighbours), AND a secret "
                  "Poisson coin: the server cannot tell whether a device took part "
                  "(amplification by q)",
    "device_sum": "each round as it ran (recorded per event): with secure aggregation the "
                  "server sees only the sum of >= min_reports noisy reports (zero-record "
                  "neighbours; an honest-but-curious server that unmasks no sum with fewer "
                  "than n_honest reports outside its colluders, colluding with up to a "
                  "fraction gamma = corruption_rate of the clients, recorded per round, "
                  "whose noise it then knows: only the noise of n_honest = min_reports - "
                  "floor(gamma*min_reports) reports is counted), "
                  "amplified by q only where the coin was secret, else q = 1 in every round "
                  "the device could join (per-day cap); without secure aggregation each "
                  "upload at its device_local cost",
}

COLLUSION_KINDS: frozenset[str] = frozenset({"secure_sum", "device_sum"})
"""Kinds that charge only the honest clients' noise of a secure sum (see
:func:`honest_reports`); :meth:`DevicePrivacyAccountant.report` states per ledger which
rounds assumed which collusion bound γ."""


def collusion_statement(ledger: PrivacyLedger) -> str:
    """Which rounds of ``ledger`` assumed which collusion bound γ, in words.

    E.g. ``"collusion bound per round: 3 rounds at gamma=0 (recorded before gamma was;
    100 of 100 reports' noise counted), 7 at gamma=0.05 (95 of 100 counted)"``.
    """
    if not ledger.events:
        return "no rounds"
    groups = Counter((e.corruption_rate, e.min_reports, e.honest_reports)
                     for e in ledger.events)
    parts = []
    for (gamma, n_min, honest), count in sorted(groups.items()):
        why = (" (no collusion assumed: recorded before gamma was, or no secure "
               "aggregation)" if gamma == 0 else "")
        parts.append(f"{count} round{'s' if count != 1 else ''} at gamma={gamma:g}{why}: "
                     f"{honest} of {n_min} reports' noise counted")
    return "collusion bound per round: " + "; ".join(parts)

MET_WITHOUT_SECURE_AGGREGATION: frozenset[str] = frozenset({"local", "device_local",
                                                            "device_sum"})
"""Kinds whose assumption the platform meets by itself: the server may see every upload
and link it to its sender, and these guarantees still hold (``device_sum`` charges each
round by what its event records, so it needs nothing beyond the record)."""

LABELS: dict[str, tuple[str, str]] = {
    "local": ("per upload, against an observer who knows the sender",
              "per upload, if uploads were never linked"),
    "device_local": ("per device, against a server that sees every upload",
                     "per device, if uploads were never linked"),
    "shuffle": ("anonymous shuffling in place", "if anonymous shuffling were in place"),
    "secure_sum": ("secure aggregation and a secret sampling coin in place (only the "
                   "noise of clients outside the collusion bound counted)",
                   "if secure aggregation and a secret sampling coin were in place"),
    "device_sum": ("per device, each round as it ran (secure sums counting only the noise "
                   "of clients outside the collusion bound, no amplification where the "
                   "server sees who takes part)",
                   "per device, if each round had run as recorded"),
}
"""How each kind is labelled beside the headline: (assumption met, assumption not met)."""


def guarantee_label(kind: str, assumption_met: bool) -> str:
    """The label of ``kind`` for tables: what it assumes, or "if ... were in place"."""
    met_label, unmet_label = LABELS.get(kind, (kind, f"if the assumption of {kind} held"))
    return met_label if assumption_met else unmet_label

HEADLINE_CANDIDATES: tuple[GuaranteeKind, ...] = ("device_local", "shuffle", "secure_sum",
                                                  "device_sum")
"""Kinds that can be the headline: per-device guarantees. ``local`` protects one upload,
not a device, so it is never the headline however small its ε. On equal ε the earlier
kind wins (``device_sum`` equals ``device_local`` when no round ran secure aggregation,
and ``secure_sum`` when every round also had a secret coin)."""


def assumptions_met(ledger: PrivacyLedger) -> frozenset[str]:
    """The kinds whose assumption every round of ``ledger`` met, by its events' records.

    ``local``, ``device_local`` and ``device_sum`` always; ``secure_sum`` when every
    event records secure aggregation *and* a secret sampling coin; ``shuffle`` never (no
    anonymous shuffler is built).
    """
    met = set(MET_WITHOUT_SECURE_AGGREGATION)
    if ledger.events and all(e.secure_aggregation and e.secret_sampling
                             for e in ledger.events):
        met.add("secure_sum")
    return frozenset(met)


def privacy_headline(privacy: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The headline kind of a ``privacy.json`` record and its guarantee record.

    The headline is the strongest per-device guarantee (smallest ε) whose assumption the
    code as built meets (``guarantees[kind]["assumption_met"]``). Records written before
    that field existed count ``local`` and ``device_local`` as met and nothing else. A
    recorded ``"headline"`` is returned as is when its kind is stated and met.

    Parameters
    ----------
    privacy : dict
        A ``privacy.json`` record (see :meth:`DevicePrivacyAccountant.report`).

    Returns
    -------
    (kind, guarantee) : tuple of str and dict
        ``guarantee`` holds at least ``epsilon``, ``delta``, ``assumption`` and
        ``assumption_met``.

    Raises
    ------
    ValueError
        If the record states no guarantee whose assumption is met (e.g. trained
        without DP); the message says so.
    """
    guarantees = privacy.get("guarantees") or {}
    if not isinstance(guarantees, dict) or not guarantees:
        raise ValueError("the privacy record states no guarantee (trained without DP?): "
                         "there is no headline epsilon")

    def met(kind: str) -> bool:
        g = guarantees.get(kind)
        if not isinstance(g, dict):
            return False
        return bool(g.get("assumption_met", kind in MET_WITHOUT_SECURE_AGGREGATION))

    def eps(kind: str) -> float:
        value = guarantees[kind].get("epsilon")
        return math.inf if value is None else float(value)

    recorded = privacy.get("headline")
    if isinstance(recorded, str) and recorded in HEADLINE_CANDIDATES and met(recorded):
        return recorded, {**guarantees[recorded], "assumption_met": True}
    candidates = [k for k in HEADLINE_CANDIDATES if met(k)]
    if not candidates:
        raise ValueError(f"no per-device guarantee among {sorted(guarantees)} has its "
                         "assumption met: there is no headline epsilon")
    kind = min(candidates, key=lambda k: (eps(k), HEADLINE_CANDIDATES.index(k)))
    return kind, {**guarantees[kind], "assumption_met": True}


def guarantees_headline_first(privacy: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """Every guarantee of a ``privacy.json`` record as (kind, record, label), headline first.

    The headline's label starts with "headline: "; the others follow in
    :data:`GUARANTEE_KINDS` order, labelled by :func:`guarantee_label` (unmet ones read
    "if ... were in place"). Empty when the record states no guarantee.
    """
    guarantees = privacy.get("guarantees") or {}
    if not guarantees:
        return []
    try:
        headline, _ = privacy_headline(privacy)
    except ValueError:
        headline = ""
    order = [headline] if headline else []
    order += [k for k in (*GUARANTEE_KINDS, *sorted(guarantees)) if k in guarantees
              and k not in order]
    rows = []
    for kind in dict.fromkeys(order):
        g = guarantees[kind]
        met = bool(g.get("assumption_met", kind in MET_WITHOUT_SECURE_AGGREGATION))
        label = guarantee_label(kind, met)
        rows.append((kind, g, f"headline: {label}" if kind == headline else label))
    return rows


# ---------------------------------------------------------------------------- pure maths


def local_epsilon(noise_multiplier: float, delta: float) -> float:
    """ε₀ of one report: a delta clipped to C plus N(0, σ²C²) per coordinate.

    Local DP compares any two inputs, whose clipped deltas differ by up to 2C, so it is
    the Gaussian mechanism with noise multiplier σ/2; computed exactly by the analytic
    Gaussian mechanism (Balle & Wang 2018, "Improving the Gaussian Mechanism for
    Differential Privacy", Thm 8). Infinite when σ = 0.
    """
    if noise_multiplier <= 0:
        return math.inf
    return float(dp_accounting.get_epsilon_gaussian(noise_multiplier / 2.0, delta))


def fmt21_shuffle_epsilon(eps0: float, n: int, delta: float) -> float | None:
    """ε of shuffling n ε₀-DP local reports (Feldman, McMillan, Talwar 2021, Thm 3.1).

    "Hiding Among the Clones: A Simple and Nearly Optimal Analysis of Privacy
    Amplification by Shuffling", FOCS 2021, arXiv:2012.12803, in the form of the
    authors' closed-form analysis::

        a = 8 sqrt(e^ε₀ log(4/δ) / n),  c = 8 e^ε₀ / n,  e = log(1 + a + c)
        ε = log(1 + (1 - e^-ε₀) / (1 + e^(-ε₀ - e)) · (a + c))

    Valid only when ε₀ <= log(n / (16 log(4/δ))) (and the Thm 3.8 condition
    ε₀ <= log(n / (8 log(2/δ)) - 1)); returns None outside that range, where the
    theorem gives nothing and only the local ε₀ holds. Neighbouring: replace one report.
    """
    if n < 1 or not 0 < delta < 1 or eps0 < 0:
        raise ValueError(f"need n >= 1, 0 < delta < 1, eps0 >= 0; got {n}, {delta}, {eps0}")
    if eps0 == 0:
        return 0.0
    bound_31 = n / (16.0 * math.log(4.0 / delta))
    bound_38 = n / (8.0 * math.log(2.0 / delta)) - 1.0
    if bound_31 <= 1 or bound_38 <= 1 or eps0 > math.log(bound_31) or eps0 > math.log(bound_38):
        return None
    a = 8.0 * math.sqrt(math.exp(eps0) * math.log(4.0 / delta) / n)
    c = 8.0 * math.exp(eps0) / n
    e = math.log1p(a + c)
    b = -math.expm1(-eps0)
    d = 1.0 + math.exp(-eps0 - e)
    return math.log1p(b / d * (a + c))


def fmt21_amplification_delta(eps: float, eps0: float, n: int, delta0: float) -> float:
    """Extra δ for (ε₀, δ₀) local randomizers (FMT21, Thm 3.8): (e^ε + 1)(1 + e^-ε₀/2) n δ₀."""
    return (math.exp(eps) + 1.0) * (1.0 + math.exp(-eps0) / 2.0) * n * delta0


def shuffled_gaussian_round(noise_multiplier: float, n_reports: int,
                            delta_round: float) -> tuple[float, float]:
    """(ε, δ) of one round of n shuffled Gaussian reports (σ/2 local noise multiplier).

    Splits ``delta_round`` in half for FMT21's δ and half for the n δ₀ term of Thm 3.8,
    choosing δ₀ by fixed-point iteration. Falls back to the local guarantee
    (ε₀(δ_round), δ_round) when the theorem does not apply or gives more.
    """
    eps, delta, _ = _shuffled_round(noise_multiplier, n_reports, delta_round)
    return eps, delta


def _shuffled_round(noise_multiplier: float, n_reports: int,
                    delta_round: float) -> tuple[float, float, bool]:
    fallback = (local_epsilon(noise_multiplier, delta_round), delta_round, False)
    if noise_multiplier <= 0:
        return fallback
    delta_s = delta_round / 2.0
    eps_guess = 1.0
    for _ in range(30):
        delta0 = delta_round / (2.0 * n_reports * 1.5 * (math.exp(min(eps_guess, 50.0)) + 1.0))
        eps0 = local_epsilon(noise_multiplier, delta0)
        eps = fmt21_shuffle_epsilon(eps0, n_reports, delta_s)
        if eps is None:
            return fallback
        total = delta_s + fmt21_amplification_delta(eps, eps0, n_reports, delta0)
        if total <= delta_round:
            return (eps, total, True) if eps < fallback[0] else fallback
        eps_guess = max(eps, eps_guess * 1.5)
    return fallback


def colluding_clients(n: int, corruption_rate: float) -> int:
    """⌊γ n⌋: how many of ``n`` clients may collude with the server under the collusion
    bound γ. ``γ n`` is rounded to 9 decimals before the floor so that a product such as
    0.29 × 100 = 28.999…96 counts 29 clients, not 28.

    Examples
    --------
    >>> colluding_clients(100, 0.29), colluding_clients(20, 0.05), colluding_clients(19, 0.05)
    (29, 1, 0)
    """
    return math.floor(round(corruption_rate * n, 9))


def honest_reports(min_reports: int, corruption_rate: float) -> int:
    """n_min − ⌊γ n_min⌋: how many of a round's n_min reports carry noise the server
    does not know when up to a fraction γ of the clients collude with it.

    The secure-aggregation threat model (:data:`federated._secagg.THREAT_MODEL`) lets
    up to γ of the clients collude with the server; their noise shares are known to it
    and protect no one, so only the honest clients' noise counts, as only the surviving
    clients' noise counts under dropouts (Kairouz, Liu, Steinke 2021, "The Distributed
    Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML:
    the sum of the n honest shares is what KLS21 Thm 1 bounds); ⌊γ n_min⌋ is
    :func:`colluding_clients`.

    Examples
    --------
    >>> honest_reports(20, 0.05), honest_reports(100, 0.05), honest_reports(100, 0.0)
    (19, 95, 100)
    """
    if min_reports < 1 or not 0 <= corruption_rate < 0.5:
        raise ValueError(f"need min_reports >= 1 and corruption_rate in [0, 0.5); got "
                         f"{min_reports}, {corruption_rate}")
    return min_reports - colluding_clients(min_reports, corruption_rate)


def unmask_shortfall(survivors: int, cohort: int, *, min_reports: int,
                     corruption_rate: float) -> int:
    """How many surviving reports a round lacks for its charge to hold (0: unmask).

    The charge assumes the noise of :func:`honest_reports` (n_min, γ) clients. Up to
    ⌊γ · cohort⌋ of the round's ``cohort`` clients may collude with the server, all of
    them among the ``survivors`` in the worst case, so the sum may be unmasked only if
    ``survivors − ⌊γ · cohort⌋ >= n_min − ⌊γ n_min⌋``. With γ = 0 this is the old rule
    ``survivors >= n_min``.

    Returns
    -------
    int
        ``max(0, honest_reports + ⌊γ cohort⌋ − survivors)``.
    """
    if cohort < 0 or survivors < 0 or survivors > cohort:
        raise ValueError(f"need 0 <= survivors={survivors} <= cohort={cohort}")
    corrupt = colluding_clients(cohort, corruption_rate)
    return max(0, honest_reports(min_reports, corruption_rate) + corrupt - survivors)


def poisson_amplified(eps: float, delta: float, q: float) -> tuple[float, float]:
    """Amplification by Poisson sampling at rate q (Balle, Barthe, Gaboardi 2018, Thm 8).

    An (ε, δ)-DP mechanism run on a Poisson sample is (log(1 + q(e^ε - 1)), qδ)-DP.
    """
    if not 0 < q <= 1:
        raise ValueError(f"q={q} should be in (0, 1]")
    return math.log1p(q * math.expm1(eps)), q * delta


# ------------------------------------------------------------------------ events, ledger


@dataclass(frozen=True)
class RoundPrivacyEvent:
    """The privacy spending of one opened round (immutable, like a ``DpEvent``).

    Attributes
    ----------
    noise_multiplier : float
        σ of the local Gaussian noise, in units of the clip norm.
    sampling_rate : float
        q, the most any device's chance of taking part.
    min_reports : int
        n_min: a round aggregates at least this many reports or is abandoned.
    day : int
        The simulated day the round opened (per-day upload caps apply per day).
    mechanism : str
        ``gaussian`` (continuous noise, every upload seen) or ``ddg`` (distributed
        discrete Gaussian under secure aggregation).
    sensitivity : float
        Δ₂ / C: the L2 sensitivity after the discrete encoding's rounding (1 for
        ``gaussian``).
    tau, dimension : float, int
        KLS21's τ and the rotated dimension D (``ddg`` only).
    secure_aggregation : bool
        Whether the server saw only the round's sum of >= ``min_reports`` reports
        (secure aggregation ran). None when built: ``mechanism == "ddg"`` (the discrete
        encoding runs only under secure aggregation; events recorded before this field
        existed read so).
    secret_sampling : bool
        Whether the device's participation coin was secret from the server, so that
        sampling at rate q amplifies the round: true for the simulator's rounds (each
        device flips its own coin, uploads carry no identity), false where the server
        sees who takes part (HTTP devices choose when to check in).
    corruption_rate : float
        γ of the secure-aggregation threat model the round ran under: up to this
        fraction of the clients may collude with the server, which then knows their
        noise. The secure sums are charged with the noise of
        :attr:`honest_reports` = n_min − ⌊γ n_min⌋ reports only. 0 for rounds without
        secure aggregation and for events recorded before this field existed (they read
        as they were charged then; :meth:`DevicePrivacyAccountant.report` says which
        rounds assumed which γ).
    """

    @property
    def effective_noise_multiplier(self) -> float:
        """σ relative to the sensitivity actually reached (σ C / Δ₂)."""
        return self.noise_multiplier / self.sensitivity

    noise_multiplier: float
    sampling_rate: float
    min_reports: int
    day: int = 0
    mechanism: str = "gaussian"
    sensitivity: float = 1.0
    tau: float = 0.0
    dimension: int = 0
    secure_aggregation: bool = None  # type: ignore[assignment]  # resolved below
    secret_sampling: bool = False
    corruption_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.secure_aggregation is None:
            object.__setattr__(self, "secure_aggregation", self.mechanism == "ddg")
        if not 0 <= self.corruption_rate < 0.5:
            raise FederatedConfigError(f"corruption_rate={self.corruption_rate} should be in "
                                       "[0, 0.5)")

    @property
    def honest_reports(self) -> int:
        """n_min − ⌊γ n_min⌋: the fewest reports whose noise the server does not know."""
        return honest_reports(self.min_reports, self.corruption_rate)

    @classmethod
    def from_recipe(cls, recipe: RoundRecipe, day: int, *,
                    secret_sampling: bool = False) -> RoundPrivacyEvent:
        """The event of one round of ``recipe`` opened on ``day`` (``secret_sampling``:
        whether the round's participation coin is secret from the server). A secure
        recipe's events record its ``secure_aggregation.corruption_rate`` as γ."""
        cfg = recipe.config
        # γ is part of the protocol's threat model: it applies only where SecAgg ran
        gamma = cfg.secure_aggregation.corruption_rate if recipe.secure else 0.0
        return cls(cfg.privacy.noise_multiplier, cfg.rounds.sampling_rate,
                   cfg.rounds.min_reports, day, **recipe.mechanism(),
                   secure_aggregation=recipe.secure, secret_sampling=secret_sampling,
                   corruption_rate=gamma)


@dataclass(frozen=True)
class PrivacyLedger:
    """Every opened round's event, in order, plus the per-day participation cap."""

    events: tuple[RoundPrivacyEvent, ...] = ()
    max_uploads_per_day: int | None = None

    @property
    def rounds(self) -> int:
        """How many rounds were opened."""
        return len(self.events)

    def add(self, event: RoundPrivacyEvent) -> PrivacyLedger:
        """A new ledger with ``event`` appended (ledgers never change)."""
        return replace(self, events=(*self.events, event))

    def head(self, rounds: int) -> PrivacyLedger:
        """The ledger of the first ``rounds`` events."""
        return replace(self, events=self.events[:rounds])

    def with_noise_multiplier(self, noise_multiplier: float) -> PrivacyLedger:
        """The same schedule with every event's σ replaced (for calibration)."""
        return replace(self, events=tuple(replace(e, noise_multiplier=noise_multiplier)
                                          for e in self.events))

    def participation_events(self) -> list[RoundPrivacyEvent]:
        """The events a single device can take part in at most (worst case).

        Per day, at most ``max_uploads_per_day`` rounds, chosen as the ones with the
        least noise.
        """
        if self.max_uploads_per_day is None:
            return list(self.events)
        by_day: dict[int, list[RoundPrivacyEvent]] = {}
        for e in self.events:
            by_day.setdefault(e.day, []).append(e)
        chosen: list[RoundPrivacyEvent] = []
        for day_events in by_day.values():
            day_events.sort(key=lambda e: e.noise_multiplier)
            chosen.extend(day_events[: self.max_uploads_per_day])
        return chosen

    @classmethod
    def planned(cls, *, rounds: int, noise_multiplier: float, sampling_rate: float,
                min_reports: int, max_uploads_per_day: int | None = None,
                start_time_s: float = 0.0, round_interval_s: float = 0.0,
                **mechanism: Any) -> PrivacyLedger:
        """The ledger of a run of ``rounds`` identical rounds on a fixed schedule.

        ``mechanism`` holds the events' ``mechanism``/``sensitivity``/``tau``/``dimension``
        and, optionally, ``secure_aggregation``/``secret_sampling``.
        """
        events = tuple(
            RoundPrivacyEvent(noise_multiplier, sampling_rate, min_reports,
                              day=int((start_time_s + r * round_interval_s) // 86400),
                              **mechanism)
            for r in range(rounds)
        )
        return cls(events=events, max_uploads_per_day=max_uploads_per_day)

    @classmethod
    def planned_from(cls, config: FederatedConfig, n_parameters: int | None = None, *,
                     rounds: int | None = None, secure: bool | None = None,
                     secret_sampling: bool = False) -> PrivacyLedger:
        """The planned ledger of ``config``'s schedule, with the mechanism its rounds run.

        Parameters
        ----------
        config : FederatedConfig
        n_parameters : int, optional
            P; needed when the rounds run secure aggregation (the discrete encoding's
            sensitivity and τ depend on it).
        rounds : int, optional
            How many rounds (default: ``config.rounds.rounds``).
        secure : bool, optional
            Whether the rounds run secure aggregation (default: the config's).
        secret_sampling : bool
            Whether each round's participation coin is secret from the server (the
            simulator's is; an HTTP server sees who checks in).

        Raises
        ------
        FederatedConfigError
            Secure rounds without ``n_parameters``.
        """
        r = config.rounds
        secure = (config.privacy.enabled and config.secure_aggregation.enabled
                  if secure is None else secure)
        if secure and n_parameters is None:
            raise FederatedConfigError("a ledger of secure-aggregation rounds needs "
                                       "n_parameters (the discrete encoding depends on P)")
        recipe = RoundRecipe.from_config(config, n_parameters or 1, secure=secure)
        return cls(events=tuple(
            RoundPrivacyEvent.from_recipe(recipe, int((r.start_time_s + i * r.round_interval_s)
                                                      // 86400),
                                          secret_sampling=secret_sampling)
            for i in range(r.rounds if rounds is None else rounds)),
            max_uploads_per_day=r.max_uploads_per_day)


def _grouped(events: list[RoundPrivacyEvent]) -> Counter[RoundPrivacyEvent]:
    return Counter(replace(e, day=0) for e in events)


@functools.lru_cache(maxsize=4096)
def _rdp_curve(sampling_rate: float, noise_multiplier: float) -> tuple[float, ...]:
    accountant = RdpAccountant(neighboring_relation=_NR.REPLACE_SPECIAL)
    if sampling_rate >= 1:
        accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    else:
        accountant.compose(dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)))
    return tuple(float(x) for x in accountant._rdp)


def _rdp_epsilon(terms: list[tuple[float, float, int]], delta: float) -> float:
    """ε of composing ``count`` Poisson-sampled Gaussians (q, σ, count) by RDP."""
    if not terms:
        return 0.0
    if any(sigma <= 0 for _, sigma, _ in terms):
        return math.inf
    orders = np.array(rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=np.float64)
    rdp = np.zeros_like(orders)
    for q, sigma, count in terms:
        rdp += count * np.array(_rdp_curve(q, sigma))
    eps, _ = rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)
    return float(eps)


def _composed_gaussian_epsilon(sigmas: list[float], delta: float) -> float:
    """ε of composing Gaussian mechanisms with noise multipliers ``sigmas`` (exact).

    Their composition is one Gaussian with 1/σ² = Σ 1/σᵢ² (Dong, Roth, Su 2022, Gaussian
    DP, Cor. 3.3), so the analytic Gaussian ε (Balle & Wang 2018) is exact; it is the
    limit PLD accounting approaches as its grid gets finer, without PLD's cost at small σ.
    """
    if not sigmas:
        return 0.0
    if min(sigmas) <= 0:
        return math.inf
    sigma = 1.0 / math.sqrt(sum(1.0 / (s * s) for s in sigmas))
    return float(dp_accounting.get_epsilon_gaussian(sigma, delta))


def _pld_epsilon(terms: list[tuple[float, float, int]], delta: float,
                 discretization: float) -> float:
    if not terms:
        return 0.0
    accountant = PLDAccountant(_NR.REPLACE_SPECIAL, value_discretization_interval=discretization)
    for q, sigma, count in terms:
        inner = dp_accounting.GaussianDpEvent(sigma)
        event = inner if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, inner)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, count))
    return float(accountant.get_epsilon(delta))


def _ddg_epsilon(events: list[RoundPrivacyEvent], delta: float) -> float:
    """ε of secure-sum rounds of the distributed discrete Gaussian (KLS21 Thm 1).

    Each round's RDP curve (Poisson-sampled by Zhu & Wang 2019, Thm 5; see
    :func:`federated._ddg.ddg_round_rdp`) is composed over rounds and converted to
    (ε, δ) by ``dp_accounting``'s RDP conversion. A ``gaussian`` round in the same
    ledger is accounted by its exact subsampled-Gaussian RDP.
    """
    orders = np.array(DDG_RDP_ORDERS, dtype=np.float64)
    rdp = np.zeros_like(orders)
    for e, count in _grouped(events).items():
        if e.noise_multiplier <= 0:
            return math.inf
        if e.mechanism == "ddg":
            scale = e.sensitivity / (e.noise_multiplier * math.sqrt(e.honest_reports))
            curve = np.array(ddg_round_rdp(e.sampling_rate, scale, e.tau * e.dimension,
                                           e.tau * math.sqrt(e.dimension)))
        else:
            curve = np.array(rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(
                e.sampling_rate, e.noise_multiplier * math.sqrt(e.honest_reports), orders))
        rdp += count * curve
    eps, _ = rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)
    return float(eps)


def _round_rdp(e: RoundPrivacyEvent, sampling_rate: float) -> np.ndarray:
    """RDP at :data:`DDG_RDP_ORDERS` of one round's release under zero-record neighbours.

    With secure aggregation: the sum of >= n_min reports (KLS21 Thm 1 for ``ddg``, the
    Gaussian with multiplier σ√n_min otherwise), Poisson-sampled at ``sampling_rate``
    (q = 1: every round the device joins). Without it: each upload seen, charged as
    ``device_local`` charges it (any two inputs: multiplier σ/2, an upper bound for
    zero-record neighbours).
    """
    orders = np.array(DDG_RDP_ORDERS, dtype=np.float64)
    if not e.secure_aggregation:
        sigma = e.effective_noise_multiplier / 2.0
        return orders / (2.0 * sigma * sigma)
    if e.mechanism == "ddg":
        scale = e.sensitivity / (e.noise_multiplier * math.sqrt(e.honest_reports))
        return np.array(ddg_round_rdp(sampling_rate, scale, e.tau * e.dimension,
                                      e.tau * math.sqrt(e.dimension)))
    return np.asarray(rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(
        sampling_rate, e.effective_noise_multiplier * math.sqrt(e.honest_reports), orders),
        dtype=np.float64)


def _device_sum_epsilon(ledger: PrivacyLedger, delta: float) -> float:
    """ε of ``device_sum``: each round by what its event records, composed by RDP.

    Rounds with secure aggregation and a secret coin: Poisson-amplified sums, all of them
    (as ``secure_sum``). Every other round counts unamplified (q = 1) in the worst case
    of participations: per day at most ``max_uploads_per_day`` of them, and since RDP
    composes order by order, at each order the largest that many of the day's costs
    (a bound for every set the device could have joined).
    """
    if not ledger.events:
        return 0.0
    if any(e.noise_multiplier <= 0 for e in ledger.events):
        return math.inf
    orders = np.array(DDG_RDP_ORDERS, dtype=np.float64)
    rdp = np.zeros_like(orders)
    by_day: dict[int, list[np.ndarray]] = {}
    for e, count in Counter(ledger.events).items():
        if e.secure_aggregation and e.secret_sampling:
            rdp += count * _round_rdp(e, e.sampling_rate)
        else:
            by_day.setdefault(e.day, []).extend([_round_rdp(e, 1.0)] * count)
    cap = ledger.max_uploads_per_day
    for costs in by_day.values():
        stacked = np.sort(np.vstack(costs), axis=0)  # ascending per order
        rdp += stacked[-cap:].sum(axis=0) if cap is not None else stacked.sum(axis=0)
    eps, _ = rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)
    return float(eps)


@dataclass
class DevicePrivacyAccountant:
    """Composes a :class:`PrivacyLedger` into each kind of per-device guarantee.

    Parameters
    ----------
    delta : float
        The target δ of every composed guarantee (and of the local ε₀).
    accountant : {"pld", "rdp"}
        Which ``dp_accounting`` accountant gives the headline numbers (PLD is tighter;
        RDP is reported alongside).
    value_discretization_interval : float
        PLD grid step (smaller: tighter and slower).
    """

    delta: float = 1e-6
    accountant: AccountantName = "pld"
    value_discretization_interval: float = 1e-3
    _cache: dict[Any, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise FederatedConfigError(f"delta={self.delta} should be in (0, 1)")
        if self.accountant not in ("pld", "rdp"):
            raise FederatedConfigError(f"accountant={self.accountant!r} should be 'pld' or 'rdp'")

    def epsilon(self, ledger: PrivacyLedger, kind: GuaranteeKind,
                accountant: AccountantName | None = None) -> float:
        """ε of ``kind`` after every round in ``ledger`` (None accountant: the default).

        ``local`` ignores the ledger's length (one report of the noisiest... least noisy
        round). The ``shuffle`` kind has no RDP form; asking for it gives the PLD value.
        """
        which = accountant or self.accountant
        key = (ledger, kind, which)
        if key not in self._cache:
            self._cache[key] = self._epsilon(ledger, kind, which)
        return self._cache[key]

    def _epsilon(self, ledger: PrivacyLedger, kind: GuaranteeKind,
                 which: AccountantName) -> float:
        if not ledger.events:
            return 0.0
        if kind == "local":
            return local_epsilon(min(e.effective_noise_multiplier for e in ledger.events),
                                 self.delta)
        if kind == "device_local":
            sigmas = [e.effective_noise_multiplier / 2.0
                      for e in ledger.participation_events()]
            if which == "rdp":
                return _rdp_epsilon([(1.0, s, 1) for s in sigmas], self.delta)
            return _composed_gaussian_epsilon(sigmas, self.delta)
        if kind == "device_sum":
            # device_local holds too (a bound for any two inputs): the lower one stands
            return min(_device_sum_epsilon(ledger, self.delta),
                       self.epsilon(ledger, "device_local", which))
        if kind == "secure_sum" and any(e.mechanism == "ddg" for e in ledger.events):
            return _ddg_epsilon(list(ledger.events), self.delta)
        if kind == "secure_sum":
            groups = _grouped(list(ledger.events))
            terms = [(e.sampling_rate, e.noise_multiplier * math.sqrt(e.honest_reports), n)
                     for e, n in groups.items()]
        elif kind == "shuffle":
            return self._shuffle_epsilon(ledger)
        else:
            raise FederatedConfigError(f"kind={kind!r} should be one of {GUARANTEE_KINDS}")
        if which == "rdp":
            return _rdp_epsilon(terms, self.delta)
        return _pld_epsilon(terms, self.delta, self.value_discretization_interval)

    def _shuffle_epsilon(self, ledger: PrivacyLedger) -> float:
        # Shuffling only adds protection: the device-local guarantee always holds too.
        linkable = self.epsilon(ledger, "device_local", "pld")
        groups = _grouped(list(ledger.events))
        if any(e.noise_multiplier <= 0 for e in groups):
            return math.inf
        # Half of δ for the per-round δ's (each scaled by q by the sampling), half for PLD.
        expected = sum(e.sampling_rate * n for e, n in groups.items())
        delta_round = self.delta / (2.0 * max(expected, 1e-12))
        pld = None
        for e, n in groups.items():
            eps_r, delta_r, _ = _shuffled_round(e.noise_multiplier, e.min_reports,
                                                        min(delta_round, 0.5))
            eps_q, delta_q = poisson_amplified(eps_r, delta_r, e.sampling_rate)
            one = privacy_loss_distribution.from_privacy_parameters(
                common.DifferentialPrivacyParameters(max(eps_q, 1e-9), delta_q),
                value_discretization_interval=self.value_discretization_interval)
            composed = one.self_compose(n)
            pld = composed if pld is None else pld.compose(composed)
        assert pld is not None
        return min(float(pld.get_epsilon_for_delta(self.delta)), linkable)

    def local_guarantee(self, noise_multiplier: float) -> tuple[float, float]:
        """(ε₀, δ₀) of one report, with δ₀ = the accountant's δ."""
        return local_epsilon(noise_multiplier, self.delta), self.delta

    def report(self, ledger: PrivacyLedger, *, clip_norm: float) -> dict[str, Any]:
        """The ``privacy.json`` record: σ, C, q, rounds, δ, ε of each kind, accountant.

        Each kind lists ε by PLD and by RDP (None where RDP does not apply), the
        assumption it rests on, ``assumption_met`` (whether every round met it, from the
        events' own records: :func:`assumptions_met`) and ``label`` (how to show it
        beside the headline). The top-level ``headline`` is :func:`privacy_headline`'s
        kind; ``rounds_met`` counts the rounds that ran secure aggregation and those
        whose sampling coin was secret. ``corruption_rate`` (γ; a list when rounds
        differ), ``honest_reports``, ``rounds_by_corruption_rate`` and ``collusion``
        state which rounds assumed which collusion bound (rows recorded before γ was read
        as γ = 0, as they were charged); the secure kinds' ``assumption`` ends with it.
        """
        met = assumptions_met(ledger)
        sigmas = sorted({e.noise_multiplier for e in ledger.events})
        rates = sorted({e.sampling_rate for e in ledger.events})
        mins = sorted({e.min_reports for e in ledger.events})
        kinds: dict[str, Any] = {}
        ddg = any(e.mechanism == "ddg" for e in ledger.events)
        collusion = collusion_statement(ledger)
        gammas = sorted({e.corruption_rate for e in ledger.events})
        for kind in GUARANTEE_KINDS:
            pld: float | None = self.epsilon(ledger, kind, "pld")
            rdp = None if kind in ("local", "shuffle") else self.epsilon(ledger, kind, "rdp")
            if ddg and kind == "secure_sum":
                pld = None  # KLS21's bound is an RDP bound: no PLD form
            assumption = ASSUMPTIONS[kind]
            if kind in COLLUSION_KINDS:
                assumption += f" [{collusion}]"
            kinds[kind] = {"epsilon": (pld if (self.accountant == "pld" and pld is not None)
                                       or rdp is None else rdp),
                           "epsilon_pld": pld, "epsilon_rdp": rdp, "delta": self.delta,
                           "assumption": assumption, "assumption_met": kind in met,
                           "label": guarantee_label(kind, kind in met)}
        headline, _ = privacy_headline({"guarantees": kinds})
        return {
            "headline": headline,
            "noise_multiplier": sigmas[0] if len(sigmas) == 1 else sigmas,
            "clip_norm": clip_norm,
            "sampling_rate": rates[0] if len(rates) == 1 else rates,
            "min_reports": mins[0] if len(mins) == 1 else mins,
            "corruption_rate": gammas[0] if len(gammas) == 1 else gammas,
            "honest_reports": (lambda h: h[0] if len(h) == 1 else h)(
                sorted({e.honest_reports for e in ledger.events})),
            "rounds_by_corruption_rate": {
                f"{g:g}": sum(e.corruption_rate == g for e in ledger.events) for g in gammas},
            "collusion": collusion,
            "rounds": ledger.rounds,
            "max_participations_per_device": len(ledger.participation_events()),
            "max_uploads_per_day": ledger.max_uploads_per_day,
            "rounds_met": {
                "secure_aggregation": sum(bool(e.secure_aggregation) for e in ledger.events),
                "secret_sampling": sum(e.secret_sampling for e in ledger.events)},
            "delta": self.delta,
            "epsilon": {k: v["epsilon"] for k, v in kinds.items()},
            "guarantees": kinds,
            "accountant": f"dp_accounting {_dp_version()} "
                          f"{'PLDAccountant' if self.accountant == 'pld' else 'RdpAccountant'}"
                          " (RdpAccountant alongside; shuffle: FMT21 closed form + PLD"
                          + ("; secure_sum: distributed discrete Gaussian, KLS21 Thm 1 RDP "
                             "with Zhu-Wang Poisson subsampling, RDP only" if ddg else "")
                          + "; device_sum: RDP per round as recorded, KLS21 Thm 1 at q = 1 "
                          "where the coin is not secret, or device_local's epsilon if lower)",
            "unit": "device (all of one user's data); local: one report",
            "not_covered": "n_examples is sent bounded but un-noised; the DP aggregate does "
                           "not use it",
        }

    def check_budget(self, ledger: PrivacyLedger, *, kind: GuaranteeKind,
                     target_epsilon: float) -> float:
        """Raise unless ``ledger`` stays within ``target_epsilon``; return its ε.

        Raises
        ------
        PrivacyBudgetError
            With the planned ε, the target and what to change.
        """
        eps = self.epsilon(ledger, kind)
        if eps > target_epsilon:
            sigma = max(e.noise_multiplier for e in ledger.events)
            raise PrivacyBudgetError(
                f"{ledger.rounds} rounds at noise_multiplier={sigma:g} would spend "
                f"epsilon={eps:.4g} ({kind}, delta={self.delta:g}), over the target "
                f"epsilon={target_epsilon:g}; lower --rounds or the sampling rate, raise the "
                "noise multiplier (see `stickers federated calibrate`), or raise the target"
            )
        return eps


def _dp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dp-accounting")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def max_affordable_rounds(ledger: PrivacyLedger, accountant: DevicePrivacyAccountant, *,
                          kind: GuaranteeKind, target_epsilon: float) -> int:
    """The most leading rounds of ``ledger`` whose ε stays within the target (bisection;
    ε never decreases with more rounds)."""
    lo, hi = 0, ledger.rounds
    if accountant.epsilon(ledger, kind) <= target_epsilon:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if accountant.epsilon(ledger.head(mid), kind) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo


def calibrate_noise_multiplier(ledger: PrivacyLedger, target_epsilon: float, *,
                               kind: GuaranteeKind, accountant: DevicePrivacyAccountant,
                               rtol: float = 1e-3) -> float:
    """The smallest σ (to relative tolerance ``rtol``) whose ``kind`` ε is <= the target.

    Bisection in log σ (ε decreases as σ grows); with the PLD accountant, RDP brackets the
    answer first because it is much faster. The result is always feasible.

    Raises
    ------
    PrivacyBudgetError
        If even σ = 1e6 does not reach the target.
    """
    if not target_epsilon > 0:
        raise FederatedConfigError(f"target_epsilon={target_epsilon} should be > 0")

    def eps_at(which: AccountantName) -> Callable[[float], float]:
        return lambda s: accountant.epsilon(ledger.with_noise_multiplier(s), kind, which)

    def bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
        while f(hi) > target_epsilon:
            lo, hi = hi, hi * 2.0
            if hi > 1e6:
                raise PrivacyBudgetError(
                    f"no noise multiplier up to 1e6 reaches epsilon={target_epsilon:g} "
                    f"({kind}); the schedule spends too much")
        while lo > 1e-6 and f(lo) <= target_epsilon:
            lo, hi = lo / 2.0, lo
        while hi / lo - 1.0 > rtol:
            mid = math.sqrt(lo * hi)
            if f(mid) <= target_epsilon:
                hi = mid
            else:
                lo = mid
        return hi

    exact = "rdp" if kind in ("local", "shuffle") else accountant.accountant
    if exact == "pld" and kind in ("device_local", "secure_sum", "device_sum"):
        guess = bisect(eps_at("rdp"), 0.5, 1.0)
        return bisect(eps_at("pld"), guess * 0.7, guess)
    return bisect(eps_at(exact), 0.5, 1.0)
