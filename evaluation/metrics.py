"""The ranking metrics of the report: each declared once in :data:`METRICS`.

Adding a metric is one :class:`Metric` entry in ``evaluation/_metrics.py`` (its key, its
function of the send-time ranks, its definition) plus its test; the analysis, every
table and figure and the report's definitions pick it up. The per-keystroke pieces the
replay uses (:func:`sent_rank`, :func:`visible_rows`, keystrokes to hit, coverage) are
here too.
"""

from evaluation._metrics import (
    KEYSTROKE_NEVER,
    METRICS,
    Metric,
    catalogue_coverage,
    first_hit_keystroke,
    hit_at,
    keystroke_summary,
    metric_definitions,
    metric_names,
    ndcg_at,
    reciprocal_rank,
    sent_rank,
    session_metrics,
    visible_rows,
)

__all__ = [
    "KEYSTROKE_NEVER",
    "METRICS",
    "Metric",
    "catalogue_coverage",
    "first_hit_keystroke",
    "hit_at",
    "keystroke_summary",
    "metric_definitions",
    "metric_names",
    "ndcg_at",
    "reciprocal_rank",
    "sent_rank",
    "session_metrics",
    "visible_rows",
]
