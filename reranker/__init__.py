"""Stage 2: the on-device sticker reranker.

A bilinear user × package score plus keyword and stage-1 prior terms
(:mod:`reranker._model`), exported to one ONNX graph (:mod:`reranker._onnx`), trained on
each device from its private typing log (:mod:`reranker._local`) and, through the
federated platform, as a :class:`RerankerTask`. Serving and the device bundle use
:class:`Suggester` and :class:`RerankerArtifact`.
"""

from reranker._artifact import RerankerArtifact
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
)
from reranker._onnx import INPUT_NAMES, BoundScorer, OnnxScorer, export_onnx
from reranker._sessions import SessionTable, build_sessions, split_time
from reranker._suggest import BUNDLE_BUDGET_BYTES, Ranking, Suggester, Suggestion
from reranker._task import (
    RerankerTask,
    RerankerTaskConfig,
    hits_at,
    make_task,
    stage1_order_scores,
)

__all__ = [
    "BUNDLE_BUDGET_BYTES",
    "INPUT_NAMES",
    "BoundScorer",
    "LocalTrainingConfig",
    "OnnxScorer",
    "ParameterLayout",
    "Ranking",
    "RankingContext",
    "RerankerArtifact",
    "RerankerInputError",
    "RerankerTask",
    "RerankerTaskConfig",
    "SessionTable",
    "StickerReranker",
    "Suggester",
    "Suggestion",
    "build_sessions",
    "check_inputs",
    "export_onnx",
    "feature_map",
    "fold_in",
    "hits_at",
    "initial_parameters",
    "local_sgd",
    "make_task",
    "rank_prior",
    "score_candidates",
    "score_impressions",
    "split_time",
    "stage1_order_scores",
]
