"""Errors of the reranker package."""

from __future__ import annotations

from data import InputError

__all__ = ["RerankerInputError"]


class RerankerInputError(InputError):
    """An input has the wrong shape or non-finite values; the message names it.

    A :class:`data.InputError`: serving answers it with 422 ``invalid_request``.
    """
