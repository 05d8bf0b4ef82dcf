"""Exception classes of the evaluation package."""

from __future__ import annotations

from data import StickerSuggestError

__all__ = ["EvaluationError"]


class EvaluationError(StickerSuggestError):
    """The A/B report cannot be built from the given artifacts (missing, incompatible, empty).

    The message names the artifact or value and what was expected.
    """
