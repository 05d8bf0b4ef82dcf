"""Errors of the reranker package."""

from __future__ import annotations

from data import InputError

__all__ = ["RerankerInputError", "UnknownClusterError", "UnknownLanguageError"]


class RerankerInputError(InputError):
    """An input has the wrong shape or non-finite values; the message names it.

    A :class:`data.InputError`: serving answers it with 422 ``invalid_request``.
    """


class UnknownLanguageError(RerankerInputError):
    """The language has no keyword index in the served artifacts."""

    reason = "unknown_language"


class UnknownClusterError(RerankerInputError):
    """The cluster id is not a cluster of the stage-1 artifact."""

    reason = "unknown_cluster"
