"""The report's statistics: user-level A/B and paired comparisons, power, segments.

:func:`evaluation.build_ab_report` runs them; this submodule is for tests and for code
that compares arms itself.
"""

from evaluation._analysis import terciles
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
    "UpliftEstimate",
    "arm_bucket",
    "assign_treatment",
    "compare_independent",
    "compare_paired",
    "minimum_detectable_effect",
    "ratio_variance",
    "terciles",
]
