"""The ranking metrics of the report: each declared once in :data:`METRICS`.

Adding a metric is one :class:`Metric` entry in ``evaluation/_metrics.py`` (its key, its
function of the send-time ranks, its definition) plus its test; the analysis, every
table and figure and the report's definitions pick it up. The per-keystroke pieces the
replay uses (:func:`sent_rank`, :func:`visible_rows`, keystrokes to hit, coverage) are
here too.
"""

from evaluation import _metrics
from evaluation._metrics import *  # noqa: F403

# Derived from the private module's list (the typing spec's form; mypy reads it).
__all__: list[str] = []
__all__ += _metrics.__all__
