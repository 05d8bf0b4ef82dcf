"""Stage 2: the on-device sticker reranker.

The sticker row (:mod:`reranker._row`, :class:`RowTask`, :meth:`Suggester.rank_row`,
:class:`Keyboard`): every sticker matching the typed text from the cluster's stage-1
packages and the device's own, scored with on-device history features. The
package-level pieces below remain for older package models.

A bilinear user × package score plus keyword and stage-1 prior terms
(:mod:`reranker._model`), exported to one ONNX graph (:mod:`reranker._onnx`), trained on
each device from its private typing log (:mod:`reranker._local`) and, through the
federated platform, as a :class:`RerankerTask`. Serving and the device bundle use
:class:`Suggester` and :class:`RerankerArtifact`.
"""

from reranker._artifact import RerankerArtifact, write_model_files
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._local import LocalTrainingConfig, fold_in, local_sgd, score_impressions
from reranker._model import (
    ParameterLayout,
    StickerReranker,
    check_inputs,
    feature_map,
    initial_parameters,
    rank_prior,
    score_candidates,
    score_row,
)
from reranker._onnx import (
    INPUT_NAMES,
    ROW_INPUT_NAMES,
    BoundRowScorer,
    BoundScorer,
    LinearForm,
    OnnxScorer,
    export_onnx,
)
from reranker._row import (
    HISTORY_FEATURE_NAMES,
    CatalogView,
    DeviceHistory,
    RowConfig,
    StickerCatalog,
)
from reranker._row_replay import RowReplay
from reranker._row_task import (
    PipelineSplit,
    RowTask,
    RowTaskConfig,
    make_row_task,
    pipeline_split,
    row_hits,
    row_scores,
)
from reranker._sessions import (
    RowImpressions,
    RowSessions,
    SessionTable,
    build_row_sessions,
    build_sessions,
    split_time,
    walk_impressions,
)
from reranker._suggest import BUNDLE_BUDGET_BYTES, Keyboard, Ranking, Suggester, Suggestion
from reranker._task import (
    RerankerTask,
    RerankerTaskConfig,
    hits_at,
    make_package_task,
    make_task,
    stage1_order_scores,
)

__all__ = [
    "BUNDLE_BUDGET_BYTES",
    "HISTORY_FEATURE_NAMES",
    "INPUT_NAMES",
    "ROW_INPUT_NAMES",
    "BoundRowScorer",
    "BoundScorer",
    "CatalogView",
    "DeviceHistory",
    "Keyboard",
    "LinearForm",
    "LocalTrainingConfig",
    "OnnxScorer",
    "ParameterLayout",
    "PipelineSplit",
    "Ranking",
    "RankingContext",
    "RerankerArtifact",
    "RerankerInputError",
    "RerankerTask",
    "RerankerTaskConfig",
    "RowConfig",
    "RowImpressions",
    "RowReplay",
    "RowSessions",
    "RowTask",
    "RowTaskConfig",
    "SessionTable",
    "StickerCatalog",
    "StickerReranker",
    "Suggester",
    "Suggestion",
    "build_row_sessions",
    "build_sessions",
    "check_inputs",
    "export_onnx",
    "feature_map",
    "fold_in",
    "hits_at",
    "initial_parameters",
    "local_sgd",
    "make_package_task",
    "make_row_task",
    "make_task",
    "pipeline_split",
    "rank_prior",
    "row_hits",
    "row_scores",
    "score_candidates",
    "score_impressions",
    "score_row",
    "split_time",
    "stage1_order_scores",
    "walk_impressions",
    "write_model_files",
]
