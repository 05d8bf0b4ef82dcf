"""The typed configuration of a keyword index (:class:`data.ComponentConfig`; TOML/JSON)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from data import ComponentConfig

__all__ = ["KeywordIndexConfig"]


class KeywordIndexConfig(ComponentConfig):
    """How text is normalised and how matches turn into strengths in ``[0, 1]``.

    Strengths (``n`` normalised characters typed, keyword of ``K`` normalised characters):

    - the text ends with the whole keyword: ``1.0``;
    - the last ``p`` characters are a proper prefix of the keyword (``p >= min prefix``):
      ``prefix_base + prefix_gain * p / K`` (in ``[prefix_base, prefix_base + prefix_gain)``);
    - the keyword ends ``d >= 1`` characters before the end of the text:
      ``max(earlier_peak * exp(-d / earlier_tau), earlier_floor)``.

    A label's strength is the largest strength of any of its keywords.
    """

    config_name: ClassVar[str] = "keyword index config"

    prefix_base: float = Field(default=0.3, gt=0.0, lt=1.0)
    """Strength of a prefix match when (almost) nothing of the keyword is typed yet."""

    prefix_gain: float = Field(default=0.6, gt=0.0, lt=1.0)
    """Added to ``prefix_base`` times the typed share of the keyword (0–1)."""

    earlier_peak: float = Field(default=0.8, gt=0.0, lt=1.0)
    """Strength of a keyword that ended just before the end (``d = 0`` limit of the decay)."""

    earlier_tau: float = Field(default=8.0, gt=0.0)
    """Decay length of earlier occurrences, in normalised characters after the keyword."""

    earlier_floor: float = Field(default=0.01, gt=0.0, lt=1.0)
    """Smallest strength of an occurrence anywhere in the text (never 0)."""

    min_prefix_chars: int = Field(default=2, ge=1)
    """Shortest typed prefix (normalised characters) that counts, for alphabetic scripts."""

    min_prefix_chars_cjk: int = Field(default=1, ge=1)
    """Shortest typed prefix for ``cjk_languages`` (one ideograph/syllable says a lot)."""

    min_letter_keyword_chars: int = Field(default=2, ge=1)
    """Keywords of fewer letters are not indexed outside ``cjk_languages`` ("t", "v" in
    English say nothing); digits are kept ("555", Thai laughter, normalises to "5")."""

    cjk_languages: tuple[str, ...] = ("ja", "ko", "zh", "zh-hant")
    """Languages whose prefixes count from ``min_prefix_chars_cjk`` characters."""

    word_boundary_languages: tuple[str, ...] = ("en", "es", "ko")
    """Space-delimited languages: a keyword must start at the start of a typed word.

    Spaces are still optional inside a keyword ("thumbs up" matches "thumbsup").
    """

    strip_accents_languages: tuple[str, ...] = ("en", "es")
    """Latin-script languages whose combining accents are dropped ("adiós" = "adios")."""

    fold_chinese_languages: tuple[str, ...] = ("zh", "zh-hant")
    """Languages folded from traditional to simplified characters (OpenCC ``t2s``)."""

    collapse_repeats: bool = True
    """Collapse every run of a repeated character to one ("thaaanks" = "thanks",
    "55555" = "555" = "5"), on keywords and typed text alike."""

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        if self.prefix_base + self.prefix_gain >= 1.0:
            raise ValueError(
                f"prefix_base + prefix_gain = {self.prefix_base + self.prefix_gain} should be "
                "< 1 so that only a whole keyword scores 1.0"
            )
        if self.earlier_floor >= self.earlier_peak:
            raise ValueError(
                f"earlier_floor={self.earlier_floor} should be < earlier_peak={self.earlier_peak}"
            )
        return self

    def min_prefix(self, language: str) -> int:
        """Shortest prefix (normalised characters) that counts in ``language``."""
        return self.min_prefix_chars_cjk if language in self.cjk_languages else (
            self.min_prefix_chars)
