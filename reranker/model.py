"""The scoring model's building blocks: parameters, features, scores, ONNX and local training.

:class:`reranker.Suggester` scores on the device, :class:`reranker.RerankerTask` and
:class:`reranker.RowTask` train through the federated platform and
:class:`reranker.RerankerArtifact` writes and reads every version; this submodule is for
tests, benchmarks and code that scores or exports a model itself: the package-level
bilinear model (:class:`StickerReranker`, its feature map and scores), the sticker row's
scores, the ONNX graph's input names and bound scorers, the linear form the compiled
keystroke path reads back, the model files a version holds, and on-device SGD.
"""

from reranker._artifact import write_model_files
from reranker._kernels import top_candidates
from reranker._local import LocalTrainingConfig, local_sgd
from reranker._model import (
    StickerReranker,
    check_inputs,
    feature_map,
    rank_prior,
    score_candidates,
    score_row,
)
from reranker._onnx import INPUT_NAMES, ROW_INPUT_NAMES, BoundRowScorer, BoundScorer, LinearForm

__all__ = [
    "INPUT_NAMES",
    "ROW_INPUT_NAMES",
    "BoundRowScorer",
    "BoundScorer",
    "LinearForm",
    "LocalTrainingConfig",
    "StickerReranker",
    "check_inputs",
    "feature_map",
    "local_sgd",
    "rank_prior",
    "score_candidates",
    "score_row",
    "top_candidates",
    "write_model_files",
]
