"""The typed configuration of the offline A/B report (pydantic; TOML/JSON round-trip).

Loading and errors come from :class:`data.ComponentConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from data import ComponentConfig

__all__ = ["LINE_REPORTED_UPLIFT", "ReportConfig"]

LINE_REPORTED_UPLIFT = 0.056
"""Relative uplift LINE reported for its federated sticker reranker (+5.6%)."""


class ReportConfig(ComponentConfig):
    """Settings of the offline A/B replay and its statistics."""

    config_name: ClassVar[str] = "report config"

    devices: int = Field(5000, ge=2)
    """Devices with held-out sessions sampled for the replay (deterministic by ``seed``)."""

    k: int = Field(5, ge=1)
    """Length of the visible sticker row (hit@k, NDCG@k, keystrokes to hit)."""

    seed: int = 0
    """Seed of the device sample, the bootstrap and the permutation test."""

    salt: str = "report-ab"
    """Salt of the user → arm hash (A or B, 50/50), as an online experiment would use."""

    half_life_days: float = Field(14.0, gt=0)
    """Half-life of a send's weight in the ``recents`` and ``device_counts`` baselines'
    recency-weighted counts (a fixed keyboard-style default, not tuned on the report)."""

    n_bootstrap: int = Field(2000, ge=100)
    """User-level bootstrap resamples of each confidence interval."""

    n_permutations: int = Field(2000, ge=100)
    """Permutations (A/B) or sign flips (paired) of each p-value."""

    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Two-sided significance level; intervals are (1 − alpha)."""

    power: float = Field(0.8, gt=0, lt=1)
    """Power of the minimum detectable effect."""

    segment_bootstrap: int = Field(1000, ge=100)
    """Bootstrap resamples of each per-segment interval (cheaper than the headline)."""

    reference_uplift: float = LINE_REPORTED_UPLIFT
    """LINE's reported relative uplift, shown only as a labelled reference: it is an
    online download uplift against LINE's own control, not an offline hit@k target."""

    chunk_keystrokes: int = Field(4096, ge=1)
    """Keystrokes scored together (bounds memory: chunk × candidates × features)."""

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> ReportConfig:
        """Load from a JSON or TOML file, then apply keyword overrides (``None`` ignored)."""
        return cls.load(path, **overrides)

    @classmethod
    def create(cls, **values: Any) -> ReportConfig:
        """Build from keyword values (``None`` ignored); invalid values raise ConfigError."""
        return cls.load(**values)
