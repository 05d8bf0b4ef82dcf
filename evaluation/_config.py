"""The typed configuration of the offline A/B report (pydantic, JSON round-trip)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data import ConfigError

__all__ = ["LINE_REPORTED_UPLIFT", "ReportConfig"]

LINE_REPORTED_UPLIFT = 0.056
"""Relative uplift LINE reported for its federated sticker reranker (+5.6%)."""


class ReportConfig(BaseModel):
    """Settings of the offline A/B replay and its statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

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
        path = Path(path)
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read report config ({exc})") from exc
        return cls.create(**{**raw, **overrides})

    @classmethod
    def create(cls, **values: Any) -> ReportConfig:
        """Build from keyword values (``None`` ignored); invalid values raise ConfigError."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(f"invalid report config: {exc}") from exc
