"""Offline A/B evaluation: keystroke replay, metrics, user-level statistics, the HTML report.

Control (A) is stage 1 alone; treatment (B) adds the federated, privately trained
reranker with each device's personal embedding; popularity order and the centrally
trained, non-private reranker are references. :func:`build_ab_report` replays held-out
sessions keystroke by keystroke, :func:`publish_report` writes ``var/reports/ab/<version>/``.
"""

from evaluation._analysis import analyse, metric_names, session_metrics, terciles
from evaluation._config import LINE_REPORTED_UPLIFT, ReportConfig
from evaluation._errors import EvaluationError
from evaluation._metrics import (
    KEYSTROKE_NEVER,
    catalogue_coverage,
    first_hit_keystroke,
    hit_at,
    keystroke_summary,
    ndcg_at,
    reciprocal_rank,
    sent_rank,
    visible_rows,
)
from evaluation._privacy import EPSILON_KINDS, load_frontier, privacy_summary
from evaluation._render import figures, format_value, render_html, render_markdown, resolve_pointer
from evaluation._replay import (
    ARM_LABELS,
    BASELINE_ARMS,
    Arm,
    HeldOutSample,
    KeystrokeBatch,
    ReplayResult,
    control_arm,
    device_counts_arm,
    package_popularity,
    popularity_arm,
    recents_arm,
    replay,
    reranker_arm,
    sample_held_out,
    segment_popularity_arm,
)
from evaluation._report import (
    DEFINITIONS,
    build_ab_report,
    json_ready,
    publish_report,
    render_report,
)
from evaluation._stats import (
    UpliftEstimate,
    arm_bucket,
    assign_treatment,
    compare_independent,
    compare_paired,
    minimum_detectable_effect,
    ratio_variance,
)

__all__ = [
    "ARM_LABELS",
    "BASELINE_ARMS",
    "DEFINITIONS",
    "EPSILON_KINDS",
    "KEYSTROKE_NEVER",
    "LINE_REPORTED_UPLIFT",
    "Arm",
    "EvaluationError",
    "HeldOutSample",
    "KeystrokeBatch",
    "ReplayResult",
    "ReportConfig",
    "UpliftEstimate",
    "analyse",
    "arm_bucket",
    "assign_treatment",
    "build_ab_report",
    "catalogue_coverage",
    "compare_independent",
    "compare_paired",
    "control_arm",
    "device_counts_arm",
    "figures",
    "first_hit_keystroke",
    "format_value",
    "hit_at",
    "json_ready",
    "keystroke_summary",
    "load_frontier",
    "metric_names",
    "minimum_detectable_effect",
    "ndcg_at",
    "package_popularity",
    "popularity_arm",
    "privacy_summary",
    "publish_report",
    "ratio_variance",
    "recents_arm",
    "reciprocal_rank",
    "render_html",
    "render_markdown",
    "render_report",
    "replay",
    "reranker_arm",
    "resolve_pointer",
    "sample_held_out",
    "segment_popularity_arm",
    "sent_rank",
    "session_metrics",
    "terciles",
    "visible_rows",
]
