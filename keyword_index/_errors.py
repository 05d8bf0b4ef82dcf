"""Exception classes of the keyword index (all in one module)."""

from __future__ import annotations

from data import DataFileError, StickerSuggestError

__all__ = ["KeywordIndexError", "KeywordIndexFormatError"]


class KeywordIndexError(StickerSuggestError, ValueError):
    """Bad input to the keyword index: unknown language, no keywords, bad arrays."""


class KeywordIndexFormatError(DataFileError):
    """A serialised keyword index is truncated, corrupt or of an unknown format version."""
