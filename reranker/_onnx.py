"""ONNX export of the reranker: feature operations composed with the skl2onnx linear part.

The graph has four named inputs — ``user_embedding`` (d), ``candidate_embeddings``
(n, d), ``keyword_features`` (n, k), ``prior`` (n) — and one output ``scores`` (n).
It is built in two pieces and composed with :func:`onnx.compose.merge_models`:

1. the feature map φ (``onnx.helper`` nodes): the outer products ``u ⊗ v_i`` flattened
   row-major, concatenated with ``K_i``, ``r_i`` and ``v_i`` → ``features`` (n, P);
2. the scikit-learn linear part, converted by skl2onnx (a ``LinearRegressor`` with
   θ as coefficients) → ``variable`` (n, 1), then flattened to ``scores`` (n).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, compose, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from reranker._errors import RerankerInputError
from reranker._model import ParameterLayout, check_inputs

__all__ = ["INPUT_NAMES", "OPSET", "OnnxScorer", "export_onnx"]

OPSET = 17
INPUT_NAMES = ("user_embedding", "candidate_embeddings", "keyword_features", "prior")


def _feature_graph(layout: ParameterLayout) -> onnx.ModelProto:
    d, k = layout.n_factors, layout.n_keyword_features
    p = layout.n_parameters
    inputs = [
        helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, [d]),
        helper.make_tensor_value_info("candidate_embeddings", TensorProto.FLOAT, ["n", d]),
        helper.make_tensor_value_info("keyword_features", TensorProto.FLOAT, ["n", k]),
        helper.make_tensor_value_info("prior", TensorProto.FLOAT, ["n"]),
    ]
    output = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", p])
    inits = [
        helper.make_tensor("u_shape", TensorProto.INT64, [3], [1, d, 1]),
        helper.make_tensor("v_axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, d * d]),
        helper.make_tensor("prior_axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("Reshape", ["user_embedding", "u_shape"], ["u_col"]),       # (1, d, 1)
        helper.make_node("Unsqueeze", ["candidate_embeddings", "v_axes"], ["v_row"]),  # (n, 1, d)
        helper.make_node("Mul", ["u_col", "v_row"], ["outer"]),                       # (n, d, d)
        helper.make_node("Reshape", ["outer", "flat_shape"], ["outer_flat"]),         # (n, d*d)
        helper.make_node("Unsqueeze", ["prior", "prior_axes"], ["prior_col"]),        # (n, 1)
        helper.make_node("Concat", ["outer_flat", "keyword_features", "prior_col",
                                    "candidate_embeddings"], ["features"], axis=1),
    ]
    graph = helper.make_graph(nodes, "reranker_features", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def _linear_graph(theta: np.ndarray, layout: ParameterLayout) -> onnx.ModelProto:
    linear = LinearRegression()
    linear.coef_ = np.asarray(theta, dtype=np.float64)
    linear.intercept_ = 0.0
    linear.n_features_in_ = layout.n_parameters
    model = to_onnx(linear, initial_types=[("features", FloatTensorType([None,
                                                                          layout.n_parameters]))],
                    target_opset={"": OPSET, "ai.onnx.ml": 1})
    # flatten (n, 1) -> (n,) so the output is one score per candidate
    graph = model.graph
    out = graph.output[0].name
    graph.initializer.append(helper.make_tensor("scores_shape", TensorProto.INT64, [1], [-1]))
    graph.node.append(helper.make_node("Reshape", [out, "scores_shape"], ["scores"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"]))
    model.ir_version = 8
    return model


def export_onnx(theta: np.ndarray, layout: ParameterLayout, *,
                version: str = "") -> onnx.ModelProto:
    """One checked ONNX model scoring candidates with weights θ (P,).

    Parameters
    ----------
    theta : ndarray, shape (P,)
        Shared weights (see :class:`~reranker._model.ParameterLayout`).
    layout : ParameterLayout
        d and k.
    version : str
        Recorded in the model's metadata (``reranker_version``).

    Returns
    -------
    onnx.ModelProto
        Inputs :data:`INPUT_NAMES`, output ``scores`` (n,); passes ``onnx.checker``.
    """
    theta = np.asarray(theta, dtype=np.float32)
    if theta.shape != (layout.n_parameters,) or not np.isfinite(theta).all():
        raise RerankerInputError(
            f"parameters should be finite with shape ({layout.n_parameters},), got "
            f"{theta.shape}")
    features = _feature_graph(layout)
    linear = _linear_graph(theta, layout)
    model = compose.merge_models(features, linear, io_map=[("features", "features")],
                                 doc_string="sticker-suggest on-device reranker")
    model.producer_name = "sticker-suggest"
    for key, value in (("reranker_version", version), ("n_factors", str(layout.n_factors)),
                       ("n_keyword_features", str(layout.n_keyword_features))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


class OnnxScorer:
    """Scores candidates with an exported model in onnxruntime (single thread, as on a phone).

    Parameters
    ----------
    model : onnx.ModelProto, bytes or path
        The exported model.
    """

    def __init__(self, model: onnx.ModelProto | bytes | str | Path) -> None:
        if isinstance(model, onnx.ModelProto):
            payload = model.SerializeToString()
        elif isinstance(model, bytes):
            payload = model
        else:
            payload = Path(model).read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.layout = ParameterLayout(int(meta["n_factors"]), int(meta["n_keyword_features"]))
        self.version = meta.get("reranker_version", "")

    def score(self, user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
              keyword_features: np.ndarray, prior: np.ndarray, *,
              validate: bool = True) -> np.ndarray:
        """Scores (n,) float32 for one keystroke; inputs validated unless told not to."""
        if validate:
            user_embedding, candidate_embeddings, keyword_features, prior = check_inputs(
                user_embedding, candidate_embeddings, keyword_features, prior, self.layout)
        out = self.session.run(["scores"], {
            "user_embedding": user_embedding, "candidate_embeddings": candidate_embeddings,
            "keyword_features": keyword_features, "prior": prior})
        return np.asarray(out[0])
