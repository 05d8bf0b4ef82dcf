"""Errors of the reranker package."""

from __future__ import annotations

from data import StickerSuggestError

__all__ = ["RerankerInputError"]


class RerankerInputError(StickerSuggestError, ValueError):
    """An input has the wrong shape or non-finite values; the message names it."""
