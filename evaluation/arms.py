"""The arms of the A/B report and their keystroke replay: its building blocks.

:func:`evaluation.build_ab_report` samples held-out sessions, replays every arm keystroke
by keystroke and analyses the ranks; this submodule is for tests and for code that
replays arms itself: the sample, the arms (stage-1 order, the no-model baselines, a
reranker), the replay, the analysis and the baselines' building blocks.
"""

from evaluation import _baselines, _replay
from evaluation._analysis import analyse
from evaluation._baselines import *  # noqa: F403
from evaluation._replay import *  # noqa: F403

# Derived from the private modules' lists (the typing spec's form; mypy reads it).
__all__ = ["analyse"]
__all__ += _baselines.__all__
__all__ += _replay.__all__
