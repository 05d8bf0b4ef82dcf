"""Offline A/B evaluation: keystroke replay, metrics, user-level statistics, the HTML report.

Control (A) is stage 1 alone; treatment (B) adds the federated, privately trained
reranker with each device's personal embedding; popularity order and the centrally
trained, non-private reranker are references. :func:`build_ab_report` replays held-out
sessions keystroke by keystroke, :func:`publish_report` writes ``var/reports/ab/<version>/``.

This face holds what a user of the report calls. The building blocks are in three
documented submodules: :mod:`evaluation.metrics` (every metric declared once, in
:data:`METRICS`), :mod:`evaluation.arms` (the sample, the arms, their keystroke replay,
the analysis) and :mod:`evaluation.stats` (the statistics).
"""

from evaluation._config import LINE_REPORTED_UPLIFT, ReportConfig
from evaluation._errors import EvaluationError
from evaluation._metrics import METRICS, Metric
from evaluation._privacy import EPSILON_KINDS, load_frontier, privacy_summary
from evaluation._render import arms_table, format_value, load_report, resolve_pointer
from evaluation._report import (
    DEFINITIONS,
    build_ab_report,
    json_ready,
    publish_report,
    render_report,
)

__all__ = [
    "DEFINITIONS",
    "EPSILON_KINDS",
    "LINE_REPORTED_UPLIFT",
    "METRICS",
    "EvaluationError",
    "Metric",
    "ReportConfig",
    "arms_table",
    "build_ab_report",
    "format_value",
    "json_ready",
    "load_frontier",
    "load_report",
    "privacy_summary",
    "publish_report",
    "render_report",
    "resolve_pointer",
]
