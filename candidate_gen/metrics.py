"""Stage 1's offline metrics: recall of every list against popularity baselines.

:func:`candidate_gen.evaluate_stage1` and :func:`candidate_gen.recall_report` report them;
this submodule is for tests and code that scores lists itself: the baselines, each
user's own top-k, the lists' recall.
"""

from candidate_gen._build import own_top_k_of
from candidate_gen._metrics import (
    BASELINES,
    LISTS,
    aggregate_groups,
    evaluation_top_k,
    group_popularity_top,
    holder_counts,
    list_recall,
    popularity_top,
    user_top_k,
)

__all__ = [
    "BASELINES",
    "LISTS",
    "aggregate_groups",
    "evaluation_top_k",
    "group_popularity_top",
    "holder_counts",
    "list_recall",
    "own_top_k_of",
    "popularity_top",
    "user_top_k",
]
