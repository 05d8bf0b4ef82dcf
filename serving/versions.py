"""Model versions on the server: their building blocks, for tests and tools.

:class:`serving.ModelRegistry`, :func:`serving.promote` and :func:`serving.rollback` are
what a user calls; this submodule is for tests and tools that inspect versions
themselves: the version board every worker reads, the promotion history and live stack,
the promotion policy's decision and its keyword hit rate, and the set of models a worker
serves.
"""

from serving._board import BOARD_ENV, VersionBoard
from serving._promotion_policy import (
    PromotionDecision,
    PromotionPolicy,
    decide_promotion,
    keyword_hit_rate,
)
from serving._promotions import history, live_stack
from serving._registry import ModelSet

__all__ = [
    "BOARD_ENV",
    "ModelSet",
    "PromotionDecision",
    "PromotionPolicy",
    "VersionBoard",
    "decide_promotion",
    "history",
    "keyword_hit_rate",
    "live_stack",
]
