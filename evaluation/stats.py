"""The report's statistics: user-level A/B and paired comparisons, power, segments.

:func:`evaluation.build_ab_report` runs them; this submodule is for tests and for code
that compares arms itself.
"""

from evaluation import _stats
from evaluation._analysis import terciles
from evaluation._stats import *  # noqa: F403

# Derived from the private module's list (the typing spec's form; mypy reads it).
__all__ = ["terciles"]
__all__ += _stats.__all__
