"""The arms of the A/B report and their keystroke replay: its building blocks.

:func:`evaluation.build_ab_report` samples held-out sessions, replays every arm keystroke
by keystroke and analyses the ranks; this submodule is for tests and for code that
replays arms itself: the sample, the arms (stage-1 order, the no-model baselines, a
reranker), the replay, the analysis and the baselines' building blocks.
"""

from evaluation._analysis import analyse
from evaluation._baselines import (
    DAY_S,
    KEY_WEIGHT,
    MATCHED_WEIGHT,
    DeviceHistory,
    Holdings,
    segment_popularity_scores,
    sticker_label_table,
)
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
    personalized_embeddings,
    popularity_arm,
    recents_arm,
    replay,
    reranker_arm,
    row_arm,
    sample_held_out,
    segment_popularity_arm,
)

__all__ = [
    "ARM_LABELS",
    "BASELINE_ARMS",
    "DAY_S",
    "KEY_WEIGHT",
    "MATCHED_WEIGHT",
    "Arm",
    "DeviceHistory",
    "HeldOutSample",
    "Holdings",
    "KeystrokeBatch",
    "ReplayResult",
    "analyse",
    "control_arm",
    "device_counts_arm",
    "package_popularity",
    "personalized_embeddings",
    "popularity_arm",
    "recents_arm",
    "replay",
    "reranker_arm",
    "row_arm",
    "sample_held_out",
    "segment_popularity_arm",
    "segment_popularity_scores",
    "sticker_label_table",
]
