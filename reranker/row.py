"""The sticker row's building blocks: catalogue, candidates, sessions, impressions, splits.

:class:`reranker.RowTask` trains and evaluates the row, :class:`reranker.RowReplay` replays
it keystroke by keystroke and :meth:`reranker.Suggester.rank_row` shows it; this submodule
is for tests and code that assembles rows itself: the sticker catalogue and a device's
compact view of it, the candidates of one keystroke, the row's scores and hits, its
ordering with exploration slots (what the A/B report scores), the sessions and
impressions built from a private log, and the pipeline's time split.
"""

from reranker._row import HISTORY_FEATURE_NAMES, CatalogView, StickerCatalog, sticker_candidates
from reranker._row_replay import with_exploration
from reranker._row_task import PipelineSplit, pipeline_split, row_hits, row_scores
from reranker._sessions import (
    RowImpressions,
    RowSessions,
    SessionTable,
    build_row_sessions,
    split_time,
    walk_impressions,
)
from reranker._task import hits_at

__all__ = [
    "HISTORY_FEATURE_NAMES",
    "CatalogView",
    "PipelineSplit",
    "RowImpressions",
    "RowSessions",
    "SessionTable",
    "StickerCatalog",
    "build_row_sessions",
    "hits_at",
    "pipeline_split",
    "row_hits",
    "row_scores",
    "split_time",
    "sticker_candidates",
    "walk_impressions",
    "with_exploration",
]
