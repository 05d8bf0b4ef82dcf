"""ONNX export of the reranker: skl2onnx linear parts composed with the feature operations.

The graph has four named inputs — ``user_embedding`` (d), ``candidate_embeddings``
(n, d), ``keyword_features`` (n, k), ``prior`` (n) — and one output ``scores`` (n); a
sticker-row model (``n_history_features = h > 0``) has a fifth, ``history_features``
(n, h), whose weights join the context part.
The score ``s_i = v_iᵀ (Wᵀu + c) + aᵀK_i + b r_i`` is computed in its factorised form,
so a keystroke costs O(d² + n·d) rather than the O(n·d²) of the flat feature map:

1. the *user tower*, a multi-output scikit-learn ``LinearRegression`` (coefficients
   ``Wᵀ``, intercept ``c``) converted by skl2onnx: ``query = Wᵀu + c`` (1, d);
2. the *context part*, a ``LinearRegression`` (coefficients ``[a, b]``) converted by
   skl2onnx over ``[K_i, r_i]`` (n, k + 1);
3. the feature operations (``onnx.helper`` nodes) that shape the inputs and add
   ``V · queryᵀ`` to the context scores,

chained with :func:`onnx.compose.merge_models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, compose, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from reranker._errors import RerankerInputError
from reranker._model import ParameterLayout, check_inputs

__all__ = ["INPUT_NAMES", "OPSET", "ROW_INPUT_NAMES", "BoundScorer", "LinearForm", "OnnxScorer",
           "export_onnx"]

OPSET = 17
IR_VERSION = 8
INPUT_NAMES = ("user_embedding", "candidate_embeddings", "keyword_features", "prior")
ROW_INPUT_NAMES = (*INPUT_NAMES, "history_features")
"""Inputs of a sticker-row model (``n_history_features > 0``): :data:`INPUT_NAMES` plus the
on-device history features (n, h)."""


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = IR_VERSION
    return model


def _shape_inputs(layout: ParameterLayout) -> onnx.ModelProto:
    """Inputs → ``u_row`` (1, d), ``context`` (n, k + 1 + h), ``cand`` (n, d)."""
    d, k, h = layout.n_factors, layout.n_keyword_features, layout.n_history_features
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("user_embedding", f, [d]),
        helper.make_tensor_value_info("candidate_embeddings", f, ["n", d]),
        helper.make_tensor_value_info("keyword_features", f, ["n", k]),
        helper.make_tensor_value_info("prior", f, ["n"]),
    ]
    context_parts = ["keyword_features", "prior_col"]
    if h:
        inputs.append(helper.make_tensor_value_info("history_features", f, ["n", h]))
        context_parts.append("history_features")
    outputs = [
        helper.make_tensor_value_info("u_row", f, [1, d]),
        helper.make_tensor_value_info("context", f, ["n", k + 1 + h]),
        helper.make_tensor_value_info("cand", f, ["n", d]),
    ]
    inits = [helper.make_tensor("row_shape", TensorProto.INT64, [2], [1, d]),
             helper.make_tensor("col_axes", TensorProto.INT64, [1], [1])]
    nodes = [
        helper.make_node("Reshape", ["user_embedding", "row_shape"], ["u_row"]),
        helper.make_node("Unsqueeze", ["prior", "col_axes"], ["prior_col"]),
        helper.make_node("Concat", context_parts, ["context"], axis=1),
        helper.make_node("Identity", ["candidate_embeddings"], ["cand"]),
    ]
    return _model(helper.make_graph(nodes, "reranker_inputs", inputs, outputs, inits))


def _combine(layout: ParameterLayout) -> onnx.ModelProto:
    """``scores = cand · queryᵀ + context_scores`` flattened to (n,)."""
    d = layout.n_factors
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("cand", f, ["n", d]),
              helper.make_tensor_value_info("query", f, [1, d]),
              helper.make_tensor_value_info("context_scores", f, ["n", 1])]
    output = helper.make_tensor_value_info("scores", f, ["n"])
    inits = [helper.make_tensor("flat", TensorProto.INT64, [1], [-1])]
    nodes = [  # one Gemm: cand · queryᵀ + context_scores
        helper.make_node("Gemm", ["cand", "query", "context_scores"], ["total"], transB=1),
        helper.make_node("Reshape", ["total", "flat"], ["scores"]),
    ]
    return _model(helper.make_graph(nodes, "reranker_scores", inputs, [output], inits))


def _linear(coef: np.ndarray, intercept: np.ndarray | float, n_in: int, prefix: str,
            output_name: str, rows: int | None) -> onnx.ModelProto:
    """A scikit-learn LinearRegression with the given weights, converted by skl2onnx.

    Every name inside is prefixed with ``prefix`` (so two converted models can share a
    graph) except the output, renamed ``output_name``; the input is ``<prefix>X``.
    """
    linear = LinearRegression()
    linear.coef_ = np.asarray(coef, dtype=np.float64)
    linear.intercept_ = intercept
    linear.n_features_in_ = n_in
    model = to_onnx(linear, initial_types=[("X", FloatTensorType([rows, n_in]))],
                    target_opset={"": OPSET, "ai.onnx.ml": 1})
    model = compose.add_prefix(model, prefix)
    old_output = model.graph.output[0].name
    model.graph.output[0].name = output_name
    for node in model.graph.node:
        node.output[:] = [output_name if o == old_output else o for o in node.output]
    model.ir_version = IR_VERSION
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", OPSET),
                               helper.make_opsetid("ai.onnx.ml", 1)])
    return model


def export_onnx(theta: np.ndarray, layout: ParameterLayout, *,
                version: str = "") -> onnx.ModelProto:
    """One checked ONNX model scoring candidates with weights θ (P,).

    Parameters
    ----------
    theta : ndarray, shape (P,)
        Shared weights (see :class:`~reranker._model.ParameterLayout`).
    layout : ParameterLayout
        d, k and h. A package layout (h = 0) with a θ longer by
        ``len(HISTORY_FEATURE_NAMES)`` exports the sticker-row model of that layout (for
        callers that read only ``n_factors`` and ``n_keyword_features``).
    version : str
        Recorded in the model's metadata (``reranker_version``).

    Returns
    -------
    onnx.ModelProto
        Inputs :data:`INPUT_NAMES`, output ``scores`` (n,); passes ``onnx.checker``.
    """
    theta = np.asarray(theta, dtype=np.float32)
    if not layout.n_history_features and theta.ndim == 1:
        from reranker._row import HISTORY_FEATURE_NAMES

        row = ParameterLayout(layout.n_factors, layout.n_keyword_features,
                              len(HISTORY_FEATURE_NAMES))
        if theta.shape == (row.n_parameters,):
            # a caller that knows only (d, k) passing a sticker-row model's θ
            layout = row
    if theta.shape != (layout.n_parameters,) or not np.isfinite(theta).all():
        raise RerankerInputError(
            f"parameters should be finite with shape ({layout.n_parameters},), got "
            f"{theta.shape}")
    w, a, b, c = layout.unpack(theta)
    d, k, h = layout.n_factors, layout.n_keyword_features, layout.n_history_features
    # LinearRegression computes X @ coef_.T + intercept_: coef_ = W.T gives u_row @ W + c.
    user_tower = _linear(w.T, np.asarray(c, np.float64), d, "user_tower/", "query", 1)
    context = _linear(np.concatenate([a, [b], layout.history_weights(theta)]), 0.0, k + 1 + h,
                      "context/", "context_scores", None)
    model = compose.merge_models(_shape_inputs(layout), user_tower,
                                 io_map=[("u_row", "user_tower/X")])
    model = compose.merge_models(model, context, io_map=[("context", "context/X")])
    model = compose.merge_models(model, _combine(layout),
                                 io_map=[("cand", "cand"), ("query", "query"),
                                         ("context_scores", "context_scores")],
                                 doc_string="sticker-suggest on-device reranker")
    model.producer_name = "sticker-suggest"
    for key, value in (("reranker_version", version), ("n_factors", str(d)),
                       ("n_keyword_features", str(k)), ("n_history_features", str(h))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass(frozen=True)
class LinearForm:
    """The function an exported model computes, read back from onnxruntime.

    ``score_i = v_i · (Wᵀu + c) + a · K_i + b r_i + e · H_i`` (``e`` empty for a
    package model). :meth:`OnnxScorer.linear_form` probes the session for these numbers,
    so code that scores in-process computes what the ONNX file says, not what some
    other copy of the weights says.

    Attributes
    ----------
    w : ndarray of float64, shape (d, d)
    c : ndarray of float64, shape (d,)
    a : ndarray of float64, shape (k,)
    b : float
    e : ndarray of float64, shape (h,)
    """

    w: np.ndarray
    c: np.ndarray
    a: np.ndarray
    b: float
    e: np.ndarray

    def query(self, user_embedding: np.ndarray) -> np.ndarray:
        """The user tower ``Wᵀu + c`` (d,) float64 of an embedding (d,)."""
        return self.w.T @ np.asarray(user_embedding, np.float64) + self.c

    def score(self, user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
              keyword_features: np.ndarray, prior: np.ndarray,
              history_features: np.ndarray | None = None) -> np.ndarray:
        """Scores (n,) float32 of n candidates (inputs as :meth:`OnnxScorer.score_row`)."""
        total = (np.asarray(candidate_embeddings, np.float64) @ self.query(user_embedding)
                 + np.asarray(keyword_features, np.float64) @ self.a
                 + self.b * np.asarray(prior, np.float64))
        if self.e.size:
            total = total + np.asarray(history_features, np.float64) @ self.e
        return total.astype(np.float32)


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
        self.layout = ParameterLayout(int(meta["n_factors"]), int(meta["n_keyword_features"]),
                                      int(meta.get("n_history_features", 0)))
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

    def score_row(self, user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
                  keyword_features: np.ndarray, prior: np.ndarray,
                  history_features: np.ndarray) -> np.ndarray:
        """Scores (n,) float32 of a sticker-row model's candidates (inputs validated).

        Raises
        ------
        RerankerInputError
            A package model (no history input), wrong shapes or non-finite values.
        """
        h = self.layout.n_history_features
        if not h:
            raise RerankerInputError("this model has no history_features input (a package "
                                     "model); use score()")
        u, v, kf, r = check_inputs(user_embedding, candidate_embeddings, keyword_features,
                                   prior, self.layout)
        hf = np.asarray(history_features, dtype=np.float32)
        if hf.shape != (v.shape[0], h):
            raise RerankerInputError(
                f"history_features has shape {hf.shape}, expected ({v.shape[0]}, {h})")
        if not np.isfinite(hf).all():
            raise RerankerInputError("history_features contains NaN or infinite values")
        out = self.session.run(["scores"], {
            "user_embedding": u, "candidate_embeddings": v, "keyword_features": kf,
            "prior": r, "history_features": hf})
        return np.asarray(out[0])

    def linear_form(self, *, rng: np.random.Generator | None = None) -> LinearForm:
        """The model's weights as onnxruntime computes them (d + 1 probing runs).

        Run ``j`` feeds the unit embedding ``u = e_j`` (run 0: ``u = 0``) and one probe row
        per input coordinate (a unit factor, keyword feature, prior or history feature,
        the rest zero); the scores are then ``c + W[j]``, ``a``, ``b`` and ``e``. The form
        is checked against the session on random inputs, so a graph that is not this
        linear form is refused.

        Parameters
        ----------
        rng : numpy.random.Generator, optional
            Source of the check's random inputs (default: seeded 0).

        Raises
        ------
        RerankerInputError
            The session's scores differ from the probed linear form.
        """
        layout = self.layout
        d, k, h = layout.n_factors, layout.n_keyword_features, layout.n_history_features
        n = d + k + 1 + h
        eye = np.eye(n, dtype=np.float32)
        feeds = {"candidate_embeddings": np.ascontiguousarray(eye[:, :d]),
                 "keyword_features": np.ascontiguousarray(eye[:, d:d + k]),
                 "prior": np.ascontiguousarray(eye[:, d + k])}
        if h:
            feeds["history_features"] = np.ascontiguousarray(eye[:, d + k + 1:])
        runs = []
        for j in range(d + 1):
            u = np.zeros(d, np.float32)
            if j:
                u[j - 1] = 1.0
            runs.append(np.asarray(self.session.run(["scores"], {"user_embedding": u, **feeds}
                                                    )[0], np.float64))
        base = runs[0]
        form = LinearForm(w=np.stack([r[:d] - base[:d] for r in runs[1:]]), c=base[:d].copy(),
                          a=base[d:d + k].copy(), b=float(base[d + k]),
                          e=base[d + k + 1:].copy())
        rng = rng or np.random.default_rng(0)
        m = 16
        check = {"user_embedding": rng.normal(size=d).astype(np.float32),
                 "candidate_embeddings": rng.normal(size=(m, d)).astype(np.float32),
                 "keyword_features": rng.uniform(size=(m, k)).astype(np.float32),
                 "prior": -rng.uniform(0, 5, size=m).astype(np.float32)}
        if h:
            check["history_features"] = rng.uniform(size=(m, h)).astype(np.float32)
        got = np.asarray(self.session.run(["scores"], check)[0], np.float64)
        want = form.score(check["user_embedding"], check["candidate_embeddings"],
                          check["keyword_features"], check["prior"],
                          check.get("history_features"))
        scale = 1.0 + float(np.abs(got).max())
        if not np.allclose(got, want, rtol=0.0, atol=1e-4 * scale):
            raise RerankerInputError(
                "the model is not the linear form the keystroke scorer computes: max "
                f"difference {float(np.abs(got - want).max()):.3g} on random inputs")
        return form

    def bind_row(self, user_embedding: np.ndarray, capacity: int) -> BoundRowScorer:
        """A row scorer for one person with input buffers of ``capacity`` candidates.

        See :class:`BoundRowScorer`.
        """
        return BoundRowScorer(self, user_embedding, capacity)

    def bind(self, user_embedding: np.ndarray, candidate_embeddings: np.ndarray,
             prior: np.ndarray) -> BoundScorer:
        """A scorer for one user and one candidate set, fed only keyword features.

        On the phone the user embedding, the cluster's candidates and their prior stay
        the same while the person types; only the keyword features change per keystroke.
        See :class:`BoundScorer`.

        Parameters
        ----------
        user_embedding : ndarray, shape (d,)
        candidate_embeddings : ndarray, shape (n, d)
        prior : ndarray, shape (n,)

        Raises
        ------
        RerankerInputError
            Wrong shapes or non-finite values.
        """
        return BoundScorer(self, user_embedding, candidate_embeddings, prior)


class BoundScorer:
    """The keystroke loop: the user and the candidate set bound once, keyword features per call.

    The fixed inputs are validated and bound to onnxruntime once (an ``IOBinding``), and
    the output goes to a preallocated buffer, so a keystroke converts one input instead
    of four and allocates nothing in onnxruntime; scores equal :meth:`OnnxScorer.score`
    on the same inputs. Not thread-safe: one per typing session (thread).

    Parameters
    ----------
    scorer : OnnxScorer
    user_embedding : ndarray, shape (d,)
    candidate_embeddings : ndarray, shape (n, d)
    prior : ndarray, shape (n,)
    """

    def __init__(self, scorer: OnnxScorer, user_embedding: np.ndarray,
                 candidate_embeddings: np.ndarray, prior: np.ndarray) -> None:
        layout = scorer.layout
        n = np.shape(candidate_embeddings)[0] if np.ndim(candidate_embeddings) == 2 else 0
        u, v, _, r = check_inputs(user_embedding, candidate_embeddings,
                                  np.zeros((n, layout.n_keyword_features), np.float32),
                                  prior, layout)
        self.layout = layout
        self.n_candidates = int(v.shape[0])
        self._session = scorer.session
        # Own contiguous copies: onnxruntime reads these buffers on every run.
        self._fixed = tuple(np.ascontiguousarray(x).copy() for x in (u, v, r))
        self._scores = np.empty(self.n_candidates, np.float32)
        self._binding = self._session.io_binding()
        for name, array in zip(("user_embedding", "candidate_embeddings", "prior"),
                               self._fixed, strict=True):
            self._binding.bind_cpu_input(name, array)
        self._binding.bind_output("scores", "cpu", 0, np.float32, [self.n_candidates],
                                  self._scores.ctypes.data)
        # The keyword features go to one buffer bound once: a keystroke copies into it
        # (~1 µs) instead of binding a new array (~10 µs in onnxruntime).
        self._features = np.zeros((self.n_candidates, layout.n_keyword_features), np.float32)
        self._binding.bind_cpu_input("keyword_features", self._features)

    def score(self, keyword_features: np.ndarray, *, validate: bool = True,
              copy: bool = True) -> np.ndarray:
        """Scores (n,) float32 of one keystroke.

        Parameters
        ----------
        keyword_features : ndarray, shape (n, k)
            This keystroke's features of the bound candidates.
        validate : bool
            Check finiteness (skip only for features made by this code base); the shape
            is always checked.
        copy : bool
            Return a new array (default). ``False`` returns the scorer's output buffer,
            which the next call overwrites: for a caller done with the scores before then.
        """
        if validate:
            keyword_features = np.asarray(keyword_features, dtype=np.float32)
            if not np.isfinite(keyword_features).all():
                raise RerankerInputError("keyword_features contains NaN or infinite values")
        if keyword_features.shape != self._features.shape:  # copyto would broadcast
            raise RerankerInputError(
                f"keyword_features has shape {keyword_features.shape}, expected "
                f"{self._features.shape}")
        np.copyto(self._features, keyword_features, casting="same_kind")
        return self.run(copy=copy)

    @property
    def keyword_features(self) -> np.ndarray:
        """The bound input buffer, float32 (n, k), C-contiguous: a caller that computes
        features can write them here directly and call :meth:`run`."""
        return self._features

    def run(self, *, copy: bool = True) -> np.ndarray:
        """Scores (n,) float32 of the features now in :attr:`keyword_features`.

        They are not validated: for features written by this code base (finite).
        ``copy`` is as in :meth:`score`.
        """
        self._session.run_with_iobinding(self._binding)
        return self._scores.copy() if copy else self._scores


class BoundRowScorer:
    """The sticker row's keystroke loop: one person bound once, candidates written in place.

    A keystroke's candidates change (they are the stickers matching the text), so every
    per-candidate input is a buffer of ``capacity`` rows bound to onnxruntime once; the
    candidate assembly writes the first ``n`` rows and :meth:`run` scores all
    ``capacity`` rows (rows past ``n`` keep stale values and their scores are ignored):
    one fixed-shape run, no binding per keystroke. Not thread-safe.

    Parameters
    ----------
    scorer : OnnxScorer
        A sticker-row model (``n_history_features > 0``).
    user_embedding : ndarray, shape (d,)
    capacity : int
        Most candidates per keystroke (the cap plus the protected recent stickers).

    Attributes
    ----------
    candidate_embeddings : ndarray of float32, shape (capacity, d)
    keyword_features : ndarray of float32, shape (capacity, k)
    prior : ndarray of float32, shape (capacity,)
    history_features : ndarray of float32, shape (capacity, h)
        The bound input buffers (C-contiguous).
    """

    def __init__(self, scorer: OnnxScorer, user_embedding: np.ndarray, capacity: int) -> None:
        layout = scorer.layout
        if not layout.n_history_features:
            raise RerankerInputError("a row scorer needs a sticker-row model "
                                     "(n_history_features > 0)")
        if capacity < 1:
            raise RerankerInputError(f"capacity={capacity} should be >= 1")
        d, k, h = layout.n_factors, layout.n_keyword_features, layout.n_history_features
        u = np.asarray(user_embedding, dtype=np.float32)
        if u.shape != (d,) or not np.isfinite(u).all():
            raise RerankerInputError(f"user_embedding should be finite with shape ({d},), "
                                     f"got {u.shape}")
        self.layout = layout
        self.capacity = int(capacity)
        self._session = scorer.session
        self._user = np.ascontiguousarray(u).copy()
        self.candidate_embeddings = np.zeros((capacity, d), np.float32)
        self.keyword_features = np.zeros((capacity, k), np.float32)
        self.prior = np.zeros(capacity, np.float32)
        self.history_features = np.zeros((capacity, h), np.float32)
        self._scores = np.empty(capacity, np.float32)
        # One binding per size bucket (powers of two up to the capacity), each bound to
        # the buffers' leading rows: a keystroke with n candidates scores at most 2n rows.
        self._buckets: list[tuple[int, Any]] = []
        size = 32
        while True:
            size = min(size, capacity)
            binding = self._session.io_binding()
            for name, array in (("user_embedding", self._user),
                                ("candidate_embeddings", self.candidate_embeddings[:size]),
                                ("keyword_features", self.keyword_features[:size]),
                                ("prior", self.prior[:size]),
                                ("history_features", self.history_features[:size])):
                binding.bind_cpu_input(name, array)
            binding.bind_output("scores", "cpu", 0, np.float32, [size],
                                self._scores.ctypes.data)
            self._buckets.append((size, binding))
            if size == capacity:
                break
            size *= 2

    def set_user(self, user_embedding: np.ndarray) -> None:
        """Replace the bound personal embedding (d,) (copied into its bound buffer;
        the caller checks shape and finiteness)."""
        np.copyto(self._user, user_embedding, casting="same_kind")

    def run(self, n: int, *, copy: bool = True) -> np.ndarray:
        """Scores (n,) float32 of the first ``n`` rows now in the buffers.

        ``copy=False`` returns a view of the output buffer (overwritten by the next run).
        """
        binding = next((b for size, b in self._buckets if size >= n), self._buckets[-1][1])
        self._session.run_with_iobinding(binding)
        return self._scores[:n].copy() if copy else self._scores[:n]
