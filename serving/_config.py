"""The typed configuration of the server: one pydantic object, from a file and the environment.

Precedence (lowest to highest): defaults, a JSON/TOML file (``STICKERS_SERVE_CONFIG`` or
``--config``), ``STICKERS_SERVE_<FIELD>`` environment variables (top-level fields; values
are parsed as JSON when they parse, e.g. ``STICKERS_SERVE_WORKERS=4``), explicit overrides
(CLI flags). ``STICKERS_VAR`` sets the artifact root when ``var`` is not given. Loading,
``--set`` overrides, errors and TOML/JSON come from :class:`data.ComponentConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from data import ComponentConfig, ConfigSection, var_root

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ArmConfig", "ExperimentConfig", "ServingConfig"]

CONFIG_ENV = "STICKERS_SERVE_CONFIG"
ENV_PREFIX = "STICKERS_SERVE_"


class ArmConfig(ConfigSection):
    """One arm of the reranker A/B experiment."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    """Arm name reported to clients and in metrics (lowercase, <= 32 characters)."""
    weight: float = Field(default=1.0, gt=0)
    """Relative share of installs in this arm (weights are normalised)."""
    reranker_version: str | None = None
    """Reranker version this arm serves (``latest`` follows the registry pointer; unset:
    the server's ``reranker_version``)."""
    parameters: dict[str, float | int | str | bool] = Field(default_factory=dict)
    """Parameter variant sent to devices with the model (e.g. ``{"row_size": 8}``)."""


class ExperimentConfig(ConfigSection):
    """The reranker A/B experiment: install ids are hashed with ``salt`` into arms."""

    name: str = "reranker-ab"
    """Experiment name (reported with the arm)."""
    salt: str = Field(default="sticker-suggest-ab-1", min_length=1)
    """Secret-free salt of the hash; changing it reshuffles every install."""
    arms: tuple[ArmConfig, ...] = (ArmConfig(name="control"),)
    """Arms in order; an install's hash bucket in [0, 1) picks one by cumulative weight."""

    @model_validator(mode="after")
    def _unique_arms(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("an experiment needs at least one arm")
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self


class ServingConfig(ComponentConfig):
    """Everything the HTTP server needs; defaults work on a laptop.

    :meth:`load` reads, lowest to highest: defaults, a file (``STICKERS_SERVE_CONFIG`` or
    ``path``), ``STICKERS_SERVE_<FIELD>`` variables, ``--set`` strings, keyword overrides.
    """

    config_name: ClassVar[str] = "serving config"
    env_prefix: ClassVar[str | None] = ENV_PREFIX
    env_reserved: ClassVar[tuple[str, ...]] = ("BOARD",)

    var: Path = Field(default_factory=lambda: var_root())
    """Artifact root (stage-1 and reranker artifacts, the update store)."""
    stage1_version: str = "latest"
    """Stage-1 version to serve (``latest`` follows ``var/stage1/LATEST`` without restart)."""
    reranker_version: str = "latest"
    """Default reranker version (arms may pin their own)."""
    dataset: str | None = None
    """Dataset directory or name under ``var/data`` (default: the stage-1 artifact's)."""
    store_path: Path | None = None
    """SQLite update store (default: ``<var>/serving/updates.sqlite3``)."""
    host: str = "127.0.0.1"
    """Interface gunicorn binds to (loopback unless you mean to expose it)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port."""
    workers: int = Field(default=2, ge=1, le=64)
    """gunicorn worker processes."""
    worker_class: Literal["buffered", "sync"] = "buffered"
    """``buffered``: threaded workers that read each request in full, without holding a
    thread, before a thread handles it (slow or stalled clients cannot starve them);
    ``sync``: gunicorn's sync workers, which need a buffering proxy in front."""
    threads: int = Field(default=2, ge=1, le=64)
    """Threads per buffered worker running the app on complete requests (ignored by
    ``sync``); more than one lets a worker go on while a thread writes a large response to
    a slow reader."""
    reuse_port: bool = True
    """Each buffered worker listens on its own ``SO_REUSEPORT`` socket, so the kernel
    spreads new connections evenly over the workers; false: one socket shared by all
    workers, where the first worker awake takes each connection and a client opening a
    pool of keep-alive connections at once can land them all on one worker. Ignored by
    ``sync`` workers (a sync worker busy with one client must leave the others to its
    siblings), with one worker (the master's socket then queues connections while the
    worker restarts), with ``port = 0`` and where the system has no ``SO_REUSEPORT``.
    Linux lets any process of the same user join such a port, so the server checks at
    start that nothing else holds it (a clear error instead of silently sharing)."""
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    """Open client connections per buffered worker (gunicorn's ``worker_connections``)."""
    read_timeout_s: float = Field(default=30.0, gt=0)
    """How long a buffered worker waits for a whole request before closing the connection."""
    timeout_s: int = Field(default=30, ge=1)
    """gunicorn worker timeout (a worker silent for longer is restarted)."""
    log_client_addresses: bool = False
    """Put client IP addresses in gunicorn's log lines about refused requests."""
    reload_interval_s: float = Field(default=5.0, ge=0)
    """How often each worker checks the registry for new versions (0: never)."""
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request body accepted outside update uploads (413 above)."""
    max_update_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest federated update body accepted (413 above)."""
    max_limit: int = Field(default=50, ge=1, le=50)
    """Largest ``limit`` a suggest request may ask for."""
    max_text_chars: int = Field(default=256, ge=1)
    """Longest typed text a suggest request may carry."""
    bundle_cache_size: int = Field(default=64, ge=0)
    """Device bundles kept in memory per worker (LRU)."""
    federated_config: Path | None = None
    """Federated platform config (JSON/TOML) for rounds: clip norm, noise, min reports."""
    round_deadline_s: float | None = Field(default=None, gt=0)
    """Upload window of a round opened by the server (default: the federated config's)."""
    auto_open_round: bool = True
    """Open the next round for the served reranker version when none is open."""
    budget_policy: Literal["refuse", "stop"] = "refuse"
    """A round that would take the model lineage over the federated config's
    ``target_epsilon`` is never opened; ``refuse``: later rounds may open if they fit (more
    noise, a lower sampling rate); ``stop``: the lineage opens no round ever again."""
    promotion: Literal["validation", "operator"] = "validation"
    """What an aggregated round's candidate version needs to go live: ``validation``: its
    keyword check on the server's catalogue data must not drop below the live version's
    (by more than ``promotion_tolerance``); ``operator``: ``stickers models promote``."""
    promotion_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    """How much the validation hit rate may drop (absolute share) and still promote."""
    experiment: ExperimentConfig = ExperimentConfig()
    """The reranker A/B experiment."""
    demo: bool = False
    """Explicit demo mode: serve the keyboard demo page at ``/`` and ``/demo/users``, which
    lists a few dataset user ids with their cluster (``stickers serve --demo``)."""
    demo_users_per_language: int = Field(default=3, ge=1, le=50)
    """Simulated users offered by the demo page per language."""
    debug: bool = False
    """Flask debug mode (``stickers serve --debug`` uses Flask's dev server)."""

    @model_validator(mode="after")
    def _arms_default_to_the_served_version(self) -> ServingConfig:
        arms = tuple(a if a.reranker_version is not None else
                     a.model_copy(update={"reranker_version": self.reranker_version})
                     for a in self.experiment.arms)
        if arms != self.experiment.arms:
            # frozen: the validated copy replaces the field once, during validation
            object.__setattr__(self, "experiment",
                               self.experiment.model_copy(update={"arms": arms}))
        return self

    def arm_version(self, arm: ArmConfig) -> str:
        """The reranker version ``arm`` serves (its own, else the server's)."""
        return arm.reranker_version or self.reranker_version

    @property
    def resolved_store_path(self) -> Path:
        """The update store's path."""
        return self.store_path or self.var / "serving" / "updates.sqlite3"

    @property
    def resolved_ledger_path(self) -> Path:
        """The privacy ledger's path: ``privacy_ledger.sqlite3`` beside the update store
        (every round engine of this server records its rounds there)."""
        return self.resolved_store_path.parent / "privacy_ledger.sqlite3"
