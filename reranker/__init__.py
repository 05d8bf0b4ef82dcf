"""Stage 2: the on-device sticker reranker.

The sticker row (:class:`RowTask`, :meth:`Suggester.rank_row`, :class:`Keyboard`): every
sticker matching the typed text from the cluster's stage-1 packages and the device's own,
scored with on-device history features. The package-level pieces remain for older
package models.

A bilinear user × package score plus keyword and stage-1 prior terms, exported to one
ONNX graph, trained on each device from its private typing log and, through the
federated platform, as a :class:`RerankerTask`. Serving and the device bundle use
:class:`Suggester` and :class:`RerankerArtifact`.

This face holds what a user of the reranker calls: the device's suggester and keyboard, the
artifact, the federated tasks and their configs, the row's replay and the pieces the
report's arms use. The building blocks are in two documented submodules:
:mod:`reranker.model` (features, scores, ONNX, model files, on-device SGD) and
:mod:`reranker.row` (catalogue, candidates, sessions, impressions, splits).
"""

from reranker._artifact import RerankerArtifact
from reranker._context import RankingContext, check_cluster, check_language
from reranker._errors import RerankerInputError, UnknownClusterError, UnknownLanguageError
from reranker._local import fold_in, score_impressions
from reranker._model import ParameterLayout, initial_parameters
from reranker._onnx import OnnxScorer, export_onnx
from reranker._row import DeviceHistory, RowConfig
from reranker._row_replay import RowReplay
from reranker._row_task import RowTask, RowTaskConfig, make_row_task
from reranker._segment import SegmentPopularity
from reranker._sessions import build_sessions
from reranker._suggest import BUNDLE_BUDGET_BYTES, Keyboard, Ranking, Suggester, Suggestion
from reranker._task import (
    RerankerTask,
    RerankerTaskConfig,
    make_package_task,
    make_task,
    stage1_order_scores,
)

__all__ = [
    "BUNDLE_BUDGET_BYTES",
    "DeviceHistory",
    "Keyboard",
    "OnnxScorer",
    "ParameterLayout",
    "Ranking",
    "RankingContext",
    "RerankerArtifact",
    "RerankerInputError",
    "RerankerTask",
    "RerankerTaskConfig",
    "RowConfig",
    "RowReplay",
    "RowTask",
    "RowTaskConfig",
    "SegmentPopularity",
    "Suggester",
    "Suggestion",
    "UnknownClusterError",
    "UnknownLanguageError",
    "build_sessions",
    "check_cluster",
    "check_language",
    "export_onnx",
    "fold_in",
    "initial_parameters",
    "make_package_task",
    "make_row_task",
    "make_task",
    "score_impressions",
    "stage1_order_scores",
]
