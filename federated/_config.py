"""Typed configuration of a federated run (pydantic; round-trips to JSON and TOML).

Loading (file, ``--set section.key=value``, dotted keyword overrides), the error messages
and TOML/JSON come from :class:`data.ComponentConfig`; errors are
:class:`FederatedConfigError`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from data import ComponentConfig, ConfigSection
from federated._errors import FederatedConfigError
from federated._strategy import StrategyOptions, option_names, registered_strategy

__all__ = ["DeviceConfig", "FederatedConfig", "PrivacyConfig", "RoundConfig",
           "SecureAggregationConfig", "StrategyConfig"]


class DeviceConfig(ConfigSection):
    """Simulated devices: when they may train, how they fail, what they keep."""

    min_battery: float = Field(default=0.8, ge=0, le=1)
    """Fraction of a full battery a device needs to train."""
    min_free_storage_mb: float = Field(default=512.0, ge=0)
    """Free storage (MB) a device needs to train."""
    require_charging: bool = True
    """Train only while plugged in."""
    require_idle: bool = True
    """Train only while the screen is off and the user is not typing."""
    require_night: bool = False
    """Train only between ``night_start_hour`` and ``night_end_hour`` (local time)."""
    night_start_hour: float = Field(default=22.0, ge=0, lt=24)
    """Start of the night window (hour of day)."""
    night_end_hour: float = Field(default=6.0, ge=0, lt=24)
    """End of the night window (hour of day)."""
    idle_probability_night: float = Field(default=0.9, ge=0, le=1)
    """Chance a device is idle at a night-time check-in."""
    idle_probability_day: float = Field(default=0.3, ge=0, le=1)
    """Chance a device is idle at a daytime check-in."""
    retention_days: float = Field(default=30.0, gt=0)
    """Training logs older than this are deleted on the device."""
    latency_median_s: float = Field(default=45.0, gt=0)
    """Median time from round open to a device's upload (download, train, upload)."""
    latency_sigma: float = Field(default=0.8, ge=0)
    """Log-normal spread of that latency."""
    dropout_rate: float = Field(default=0.1, ge=0, lt=1)
    """Chance a sampled device never uploads (network loss, user activity, shutdown)."""
    n_devices: int | None = Field(default=None, ge=1)
    """Simulated population size; None: the task's ``n_devices``."""


class RoundConfig(ConfigSection):
    """How rounds are opened, sampled, timed and closed."""

    rounds: int = Field(default=100, ge=1)
    """Rounds to run (R)."""
    sampling_rate: float = Field(default=0.01, gt=0, le=1)
    """Poisson sampling rate q: each eligible device joins a round with this chance."""
    min_reports: int = Field(default=100, ge=1)
    """A round with fewer in-time uploads is abandoned (and the privacy analysis assumes
    at least this many reports per aggregate)."""
    deadline_s: float = Field(default=300.0, gt=0)
    """Seconds after opening that uploads are accepted."""
    round_interval_s: float = Field(default=1800.0, gt=0)
    """Seconds between round openings on the simulated clock."""
    start_time_s: float = Field(default=22 * 3600.0, ge=0)
    """Simulated clock at the first round (seconds since day 0, 00:00)."""
    max_uploads_per_day: int = Field(default=2, ge=1)
    """A device uploads at most this many times per simulated day."""
    max_examples: int = Field(default=1000, ge=1)
    """Devices bound the example count they report to this."""
    batch_size: int = Field(default=4096, ge=1)
    """Devices simulated per vectorised ``local_train`` call."""

    @model_validator(mode="after")
    def _deadline_within_interval(self) -> RoundConfig:
        if self.deadline_s > self.round_interval_s:
            raise ValueError(f"deadline_s={self.deadline_s} should be <= round_interval_s="
                             f"{self.round_interval_s} (rounds would overlap)")
        return self


class StrategyConfig(ConfigSection):
    """Server-side aggregation: a registered strategy and its own options.

    Besides ``name`` and ``norm_bound``, the section holds the named strategy's options
    (e.g. ``server_learning_rate = 3.0``), checked by that strategy's typed options
    (:meth:`options`; see ``federated.strategies``). Keys that only *other* registered
    strategies define are ignored, so configs written when one flat section listed every
    strategy's keys still load; a key no strategy defines is an error.
    """

    model_config = ConfigDict(extra="allow")

    name: str = "fedavg"
    """Aggregation algorithm: a registered strategy (``stickers federated strategies``)."""
    norm_bound: float | Literal["auto"] | None = None
    """Reject uploads above this L2 norm; ``auto``: the honest noisy-upload bound."""

    @model_validator(mode="after")
    def _options_of_the_named_strategy(self) -> StrategyConfig:
        self.options()
        return self

    def options(self) -> StrategyOptions:
        """The named strategy's typed options, from this section's other keys.

        Raises
        ------
        ValueError
            Unknown strategy, a key no registered strategy defines, or a bad value.
        """
        entry = registered_strategy(self.name)
        given = dict(self.model_extra or {})
        own = {k: v for k, v in given.items() if k in entry.options.model_fields}
        anyone = set().union(*option_names().values())
        unknown = sorted(set(given) - anyone)
        if unknown:
            raise ValueError(f"strategy {self.name!r} has no option {unknown[0]!r}; its "
                             f"options are {sorted(entry.options.model_fields)}")
        try:
            return entry.options.model_validate(own)
        except ValidationError as exc:
            raise ValueError(f"strategy {self.name!r}: {exc}") from None

    @property
    def sum_based(self) -> bool:
        """Whether the named strategy can aggregate a secure sum."""
        return registered_strategy(self.name).sum_based


class PrivacyConfig(ConfigSection):
    """Local DP on devices and the run's privacy budget."""

    enabled: bool = True
    """Clip and add noise on devices (off: plain federated learning, no guarantee)."""
    clip_norm: float = Field(default=1.0, gt=0)
    """C, the L2 bound of each device's delta."""
    noise_multiplier: float = Field(default=1.0, ge=0)
    """σ: devices add N(0, σ²C²) per coordinate."""
    target_epsilon: float | None = Field(default=8.0, gt=0)
    """The run refuses to exceed this ε (None: no budget)."""
    delta: float = Field(default=1e-6, gt=0, lt=1)
    """δ of every reported guarantee."""
    budget_kind: Literal["local", "device_local", "shuffle", "secure_sum",
                         "device_sum"] = "device_local"
    """Which guarantee the budget applies to (see ``privacy.json`` for its assumption and
    whether the run meets it). The default, ``device_local``, holds against a server that
    sees every upload; ``device_sum`` charges each round by what it ran under (secure
    sums, amplified only where the sampling coin is secret), and always holds too."""
    on_over_budget: Literal["refuse", "stop"] = "refuse"
    """``refuse`` to start an over-budget run, or ``stop`` after the last affordable round."""
    accountant: Literal["pld", "rdp"] = "pld"
    """Headline accountant (the other is reported alongside where it applies)."""


class SecureAggregationConfig(ConfigSection):
    """Secure aggregation (SecAgg+) with the distributed discrete Gaussian on devices."""

    enabled: bool = True
    """With privacy enabled: devices encode their clipped delta to integers with discrete
    Gaussian noise and the server learns only the modular sum (the ``secure_sum``
    guarantee then holds: the simulator's sampling coin is secret too). Off: devices add
    continuous Gaussian noise and the server sees every upload (only ``local``,
    ``device_local`` and ``device_sum`` hold)."""
    mode: Literal["auto", "protocol", "sum_only"] = "auto"
    """``protocol``: every round runs the full SecAgg+ protocol in-process;
    ``sum_only``: the simulator takes the modular sum of the in-time reports directly —
    the exact value the protocol outputs (a test proves it); ``auto``: the protocol
    for cohorts up to ``protocol_max_clients`` uploads, sum-only above (large
    simulations)."""
    protocol_max_clients: int = Field(default=150, ge=3)
    """``auto`` runs the full protocol for cohorts of at most this many uploads."""
    bits: int = Field(default=32, ge=8, le=32)
    """b: reports and sums live in Z_{2^b}."""
    n_max: int = Field(default=10_000, ge=1)
    """The largest cohort the wrap-around bound covers (sets the integer grid γ)."""
    wrap_probability: float = Field(default=1e-9, gt=0, lt=1)
    """Bound on the chance that a sum of up to ``n_max`` reports wraps around mod 2^b."""
    dropout_rate: float = Field(default=0.1, ge=0, lt=1)
    """Dropout rate the neighbour degree and threshold are chosen for."""
    corruption_rate: float = Field(default=0.05, ge=0, lt=0.5)
    """Fraction of clients assumed to collude with the server."""


class FederatedConfig(ComponentConfig):
    """Everything a federated training run needs besides the task and the seed."""

    config_name: ClassVar[str] = "federated config"
    config_error: ClassVar[type[Exception]] = FederatedConfigError

    devices: DeviceConfig = DeviceConfig()
    """Simulated devices."""
    rounds: RoundConfig = RoundConfig()
    """Round schedule."""
    strategy: StrategyConfig = StrategyConfig()
    """Aggregation."""
    privacy: PrivacyConfig = PrivacyConfig()
    """Local DP and budget."""
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()
    """SecAgg+ and the distributed discrete Gaussian."""

    @model_validator(mode="after")
    def _secure_sum_needs_sum(self) -> FederatedConfig:
        if (self.privacy.enabled and self.privacy.budget_kind == "secure_sum"
                and not self.strategy.sum_based):
            raise ValueError(f"budget_kind='secure_sum' needs a sum-based strategy; "
                             f"{self.strategy.name!r} needs individual reports (use "
                             "'shuffle' or 'device_local')")
        return self
