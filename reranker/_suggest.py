"""Suggestions for one keystroke, and the device bundle: what serving and phones run.

:class:`Suggester` pairs a stage-1 version with a reranker version and answers
"which stickers, for this text, for this person" exactly as the phone would: keyword
match → keyword features of the cluster's candidates → ONNX scores with the person's
embedding → the best sticker of each top package.
"""

from __future__ import annotations

import io
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl

from candidate_gen import Stage1Artifact
from data import Dataset
from keyword_index import FEATURE_NAMES
from reranker._artifact import RerankerArtifact
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._model import ParameterLayout, initial_parameters
from reranker._onnx import BoundRowScorer, BoundScorer, LinearForm, OnnxScorer, export_onnx
from reranker._row import (
    HISTORY_FEATURE_NAMES,
    CatalogView,
    DeviceHistory,
    RowConfig,
    StickerCatalog,
)

__all__ = ["BUNDLE_BUDGET_BYTES", "Keyboard", "Ranking", "Suggester", "Suggestion"]

BUNDLE_BUDGET_BYTES = 1_200_000  # the size of LINE's on-device FL SDK


@dataclass(frozen=True)
class Suggestion:
    """One sticker in the suggestion row."""

    sticker_id: int
    package_id: int
    labels: list[str]
    emojis: list[str]
    character: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"sticker_id": self.sticker_id, "package_id": self.package_id,
                "labels": self.labels, "emojis": self.emojis, "character": self.character,
                "score": self.score}


class Ranking(NamedTuple):
    """The suggestion row as plain lists, best first (what :meth:`Suggester.rank` returns).

    ``sticker_ids[i]`` is the sticker shown for package ``package_ids[i]``, scored
    ``scores[i]``; :meth:`Suggester.describe` adds its labels, emoji and character.
    """

    sticker_ids: list[int]
    package_ids: list[int]
    scores: list[float]


class Suggester:
    """Keystroke-time ranking with one stage-1 and one reranker version.

    Use :meth:`load`. ``reranker`` may be ``None``: the model then has the initial
    weights (keyword match, then stage-1 order; no personal or history term), version
    ``initial``. A sticker-row model (``n_history_features > 0``, what federated training
    now publishes, and the initial model) ranks every matching sticker of the cluster's
    packages and of the device's own (:meth:`rank` with ``history``); a package model
    (older versions) ranks one sticker per stage-1 package as before.

    ``keystroke_scorer`` says how a sticker-row keystroke is scored: ``"compiled"``
    (default) assembles the candidates and scores them in one compiled call with the
    linear form read back from the ONNX session (:meth:`OnnxScorer.linear_form`; equal to
    onnxruntime's scores to float32 rounding, tested); ``"onnx"`` assembles into the
    bound buffers of a :class:`BoundRowScorer` and runs onnxruntime on them.
    """

    def __init__(self, context: RankingContext, reranker: RerankerArtifact | None, *,
                 keystroke_scorer: Literal["compiled", "onnx"] = "compiled") -> None:
        if keystroke_scorer not in ("compiled", "onnx"):
            raise RerankerInputError(f"keystroke_scorer={keystroke_scorer!r} should be "
                                     "'compiled' or 'onnx'")
        self.context = context
        self.reranker = reranker
        layout = context.layout
        if reranker is not None:
            if reranker.layout.package_level != layout:
                raise RerankerInputError(
                    f"reranker {reranker.version} has layout {reranker.layout}, stage 1 "
                    f"{context.stage1.version} needs {layout}")
            if reranker.stage1_version and reranker.stage1_version != context.stage1.version:
                raise RerankerInputError(
                    f"reranker {reranker.version} was trained against stage 1 "
                    f"{reranker.stage1_version}, not {context.stage1.version}; its weights "
                    "do not apply to other factors")
            self.model_bytes = reranker.model_bytes
            self.layout = reranker.layout
            row_settings = reranker.info.get("row", {})
        else:
            self.layout = ParameterLayout(layout.n_factors, layout.n_keyword_features,
                                          len(HISTORY_FEATURE_NAMES))
            self.model_bytes = export_onnx(initial_parameters(self.layout), self.layout,
                                           version="initial").SerializeToString()
            row_settings = {}
        self.scorer = OnnxScorer(self.model_bytes)
        self.is_row = self.layout.n_history_features > 0
        self.keystroke_scorer = keystroke_scorer
        # The compiled keystroke scores with the linear form read back from the ONNX
        # session (so it computes what model.onnx says), in the same call as the assembly.
        self._form: LinearForm | None = None
        if self.is_row and keystroke_scorer == "compiled":
            if (self.layout.n_keyword_features, self.layout.n_history_features) != (
                    len(FEATURE_NAMES), len(HISTORY_FEATURE_NAMES)):
                raise RerankerInputError(
                    f"the compiled keystroke scores {len(FEATURE_NAMES)} keyword and "
                    f"{len(HISTORY_FEATURE_NAMES)} history features; the model has "
                    f"{self.layout.n_keyword_features} and {self.layout.n_history_features}"
                    " (use keystroke_scorer='onnx')")
            self._form = self.scorer.linear_form()
        self.row_config = RowConfig(**row_settings)
        self.catalog: StickerCatalog | None = None
        if self.is_row:
            self.catalog = StickerCatalog.build(context)
            from reranker import _row_kernels

            self._assemble: Callable[..., int] = _row_kernels.assemble
            self._keystroke: Callable[..., tuple[int, int]] = _row_kernels.keystroke
            self._keystroke_rows: Callable[..., tuple[int, int, bool]] = (
                _row_kernels.keystroke_rows)
            # the server's keystroke, called through its entry point per job type
            self._server_entry: Callable[[Any], Callable[..., tuple[int, int, bool]]] = (
                _row_kernels.server_entry)
            self._new_inputs: Callable[..., Any] = _row_kernels.new_keystroke_inputs
            self._new_job: Callable[..., Any] = _row_kernels.new_keystroke_job
            # a device's inputs (its compact view's arrays, and their struct) per view
            self._view_inputs: weakref.WeakKeyDictionary[
                CatalogView, tuple[Any, np.ndarray]] = weakref.WeakKeyDictionary()
            self._empty = DeviceHistory(self.catalog, self.row_config)
            self._empty.view(0.0)
            self._empty.own_csr()
            self._empty.VIEW_REFRESH_S = float("inf")  # nothing in it ever changes
            for arr in (self._empty.st_val, self._empty.st_last, self._empty.pk_val,
                        self._empty.pk_last, self._empty.lb_val, self._empty.lb_last,
                        self._empty.v_st, self._empty.v_pk, self._empty.v_lb):
                arr.flags.writeable = False
            first = np.searchsorted(self.catalog.st_pk, np.arange(self.catalog.n_packages))
            self._first_sticker = np.minimum(first, self.catalog.n_stickers - 1).astype(np.int32)
            self._no_fallback = np.zeros(0, np.int32)
            # the empty state's keystroke inputs per cluster (every cluster a server is
            # asked for; never evicted: the state never changes)
            self._empty_inputs: dict[int, _RowInputs] = {}
            self._protect_s = self.row_config.protect_s
        # per-cluster contiguous inputs, prepared once (the per-keystroke path only slices)
        self._zeros = np.zeros(layout.n_factors, np.float32)
        self._n_candidates = [int(x) for x in context.candidate_mask.sum(axis=1)]
        self._cand_factors = [np.ascontiguousarray(context.candidate_factors[c, :n])
                              for c, n in enumerate(self._n_candidates)]
        self._prior = [np.ascontiguousarray(context.prior[:n]) for n in self._n_candidates]
        # Per thread (a BoundScorer is not thread-safe), per cluster: the scorer with the
        # zero embedding and the cluster's candidates bound once, for requests without a
        # personal embedding; built on a thread's first keystroke in the cluster. Also
        # per thread: the output arrays of the row.
        self._local = threading.local()
        from reranker import _kernels  # numba: imported here, not at ``import reranker``

        _kernels.load()
        self._top_candidates = _kernels.top_candidates
        ds = context.dataset
        packages = ds.table("packages").select("package_id", "character")
        self._character = dict(packages.iter_rows())
        labels = ds.table("labels").select("label_id", "label", "emoji")
        self._label = {i: (name, emoji) for i, name, emoji in labels.iter_rows()}
        stickers = ds.table("stickers").select("sticker_id", "label_ids")
        self._sticker_labels = dict(stickers.iter_rows())

    @classmethod
    def load(cls, var: str | Path, *, stage1_version: str = "latest",
             reranker_version: str | None = "latest",
             dataset: Dataset | str | Path | None = None,
             keystroke_scorer: Literal["compiled", "onnx"] = "compiled") -> Suggester:
        """Load and verify both artifacts (checksums) and build the keystroke machinery.

        ``reranker_version=None`` uses the initial weights; ``"latest"`` falls back to
        them only if no reranker was ever published. ``keystroke_scorer`` chooses how a
        sticker-row keystroke is scored (see the class docstring).
        """
        stage1 = Stage1Artifact.load(var, stage1_version)
        reranker: RerankerArtifact | None = None
        if reranker_version is not None:
            kind_dir = Path(var) / "reranker"
            if reranker_version != "latest" or (kind_dir / "LATEST").is_file():
                reranker = RerankerArtifact.load(var, reranker_version)
        return cls(RankingContext.build(stage1, dataset), reranker,
                   keystroke_scorer=keystroke_scorer)

    @property
    def stage1_version(self) -> str:
        """Version of the stage-1 artifact."""
        return self.context.stage1.version

    @property
    def reranker_version(self) -> str:
        """Version of the reranker artifact (``initial`` when none)."""
        return self.reranker.version if self.reranker is not None else "initial"

    @property
    def languages(self) -> list[str]:
        """Languages with a keyword index."""
        return self.context.languages

    @property
    def n_factors(self) -> int:
        """d, the length of a user embedding."""
        return self.context.layout.n_factors

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return self.context.n_clusters

    def assign(self, features: dict[str, Any]) -> int:
        """Cold-start cluster of a user from features alone (stage 1's assigner)."""
        return int(np.asarray(self.context.stage1.assign(features)).ravel()[0])

    def suggest(self, *, language: str, text: str, cluster_id: int,
                user_embedding: np.ndarray | None = None, limit: int = 5) -> list[Suggestion]:
        """The suggestion row for ``text`` typed so far (:meth:`rank`, then :meth:`describe`).

        Parameters and errors are those of :meth:`rank`.
        """
        ranking = self.rank(language=language, text=text, cluster_id=cluster_id,
                            user_embedding=user_embedding, limit=limit)
        return [self.describe(*entry) for entry in zip(*ranking, strict=True)]

    def rank(self, *, language: str, text: str, cluster_id: int,
             user_embedding: np.ndarray | None = None, limit: int = 5,
             history: DeviceHistory | dict[str, Any] | None = None,
             now: float | None = None) -> Ranking:
        """The ranked stickers for ``text`` typed so far, as plain lists (no labels).

        A sticker-row model ranks stickers (:meth:`rank_row`; ``history`` and ``now``
        apply to it only); a package model, one sticker per stage-1 package, as below.

        The keystroke path of a server, which formats each sticker once per artifact
        version: keyword match, keystroke features, ONNX scores, the best ``limit``
        candidates that show a sticker (ties keep candidate order; one compiled pass,
        :func:`reranker._kernels.top_candidates`).

        Parameters
        ----------
        language : str
            One of :attr:`languages`.
        text : str
            The text typed so far (never logged or stored).
        cluster_id : int
            The user's cluster.
        user_embedding : ndarray of float32, shape (d,), optional
            The personal embedding (zeros when absent: no personal term).
        limit : int
            Stickers in the row (1–50).

        Raises
        ------
        RerankerInputError
            Unknown language or cluster, wrong-shaped or non-finite embedding, bad limit.
        """
        if not 1 <= limit <= 50:
            raise RerankerInputError(f"limit={limit} should be between 1 and 50")
        if self.is_row:
            if history is None and self._form is not None:
                return self._rank_server(language, text, cluster_id, user_embedding, limit, now)
            return self.rank_row(language=language, text=text, cluster_id=cluster_id,
                                 user_embedding=user_embedding, limit=limit, history=history,
                                 now=now)
        ctx = self.context
        if user_embedding is None:
            # The zero embedding and the cluster's candidates are bound once per thread;
            # the features are written straight into the scorer's input buffer.
            index = ctx.index_for(cluster_id, language)
            bound, shown = self._bound_scorer(cluster_id)
            ctx.featurizer.features(index.match(text), ctx.cluster_candidates(cluster_id),
                                    out=(bound.keyword_features, shown))
            scores = bound.run(copy=False)  # its buffer: read before the next run
        else:  # the only untrusted array: candidates and features come from the artifacts
            u = self._checked_embedding(user_embedding)
            feats, shown = ctx.keystroke_features(cluster_id, language, text)
            n = self._n_candidates[cluster_id]
            scores = self.scorer.score(u, self._cand_factors[cluster_id], feats[:n],
                                       self._prior[cluster_id], validate=False)
        out = self._row_buffers()
        m = self._top_candidates(scores, shown, ctx.cluster_candidates(cluster_id), limit,
                                 *out)
        stickers, packages, row_scores = out
        return Ranking(stickers[:m].tolist(), packages[:m].tolist(), row_scores[:m].tolist())

    def rank_row(self, *, language: str, text: str, cluster_id: int,
                 user_embedding: np.ndarray | None = None, limit: int = 5,
                 history: DeviceHistory | dict[str, Any] | None = None,
                 now: float | None = None) -> Ranking:
        """The sticker row: every matching sticker of the device's catalogue view, scored.

        Candidates are the stickers carrying a label the text matches, from the cluster's
        stage-1 packages and the packages the device holds or has sent from; each once,
        capped at ``cap`` by a pre-score that keeps the person's own recent stickers; with
        nothing matched, the cluster's packages' first stickers and the person's recent
        ones. With ``explore_slots`` the last slot(s) go to the best candidate from a
        package new to the device when the row has none.

        Parameters
        ----------
        language, text, cluster_id, limit
            As in :meth:`rank`.
        user_embedding : ndarray of float32, shape (d,), optional
            The personal embedding (zeros when absent).
        history : DeviceHistory or dict, optional
            The device's history state. On a phone this is its own local state; a server
            gets it only as the explicit thin-client option (a :meth:`DeviceHistory.summary`
            dict). Absent: a device with no history (cluster packages only, history
            features zero).
        now : float, optional
            Seconds since the epoch (default: the latest send in ``history``, else 0).

        Raises
        ------
        RerankerInputError
            Unknown language or cluster, bad embedding, malformed history summary.
        """
        if not 1 <= limit <= 50:
            raise RerankerInputError(f"limit={limit} should be between 1 and 50")
        if not self.is_row or self.catalog is None:
            raise RerankerInputError(f"reranker {self.reranker_version} is a package model; "
                                     "use rank()")
        if history is None and self._form is not None:
            return self._rank_server(language, text, cluster_id, user_embedding, limit, now)
        ctx, cat, cfg = self.context, self.catalog, self.row_config
        index = ctx.index_for(cluster_id, language)
        scratch = self._row_scratch()
        u = self._zeros if user_embedding is None else self._checked_embedding(user_embedding)
        match = index.match(text)
        if history is None:
            # a device with no history (what a server answers): the cluster's inputs,
            # prepared once; its no-match fallback is the listed packages' first stickers
            # (the kernels read the fallback only when nothing matched)
            state = self._empty
            t = float(now) if now is not None else 0.0
            inputs = self._empty_row_inputs(cluster_id)
            fallback = inputs.fallback
        else:
            state = (history if isinstance(history, DeviceHistory)
                     else DeviceHistory.from_summary(cat, history, cfg))
            t = float(now) if now is not None else max(float(state.total[1]), 0.0)
            if isinstance(history, dict):
                # a one-off state (the thin-client option): the catalogue-wide arrays, no
                # compact view to build
                inputs = self._with_kernel(_RowInputs.of_catalog(cat, cluster_id, state, t,
                                                                 self._first_sticker))
            else:  # the device's compact catalogue view (cached on its state)
                inputs = self._view_row_inputs(state, cluster_id, t)
            fallback = self._no_fallback
            if len(match) == 0:
                recent = (inputs.view.recent_stickers(t - cfg.protect_s)
                          if inputs.view is not None
                          else state.recent_stickers(t).astype(np.int32))
                fallback = np.concatenate([recent, inputs.fallback])
        if self._form is not None:
            # one compiled call with two structs in place of ~54 arguments (the dispatch
            # of each argument is what a server's cold keystroke spends most on)
            personal = user_embedding is not None
            if personal:
                scratch.query(u, self._form)
            n, m, explore = self._keystroke_rows(
                match.label_ids, match.strengths, match.kinds, fallback, inputs.kernel,
                scratch.kernel, state.subscriber, t - cfg.protect_s, personal, limit)
            if n == 0:
                return Ranking([], [], [])
            ranking = Ranking(scratch.row_stickers[:m].tolist(),
                              scratch.row_packages[:m].tolist(),
                              scratch.row_scores[:m].tolist())
            if not explore:  # the kernel saw that no exploration slot applies
                return ranking
            return self._explore(ranking, inputs, scratch, n, scratch.o_score[:n], limit)
        else:
            # the arguments every keystroke kernel starts with (see _row_kernels.assemble)
            shared = (match.label_ids, match.strengths, match.kinds, *inputs.arrays,
                      state.subscriber, t - cfg.protect_s, fallback, cfg.cap,
                      *scratch.assembly)
            out = self._row_buffers()
            scorer = scratch.scorer
            scorer.set_user(u)
            n = self._assemble(*shared, scratch.o_st, scratch.o_pk,
                               scorer.candidate_embeddings, scorer.keyword_features,
                               scorer.prior, scorer.history_features)
            if n == 0:
                return Ranking([], [], [])
            scores = scorer.run(n, copy=False)
            m = self._top_candidates(scores, inputs.sticker_ids[scratch.o_st[:n]],
                                     inputs.package_ids[scratch.o_pk[:n]], limit, *out)
            ranking = Ranking(out[0][:m].tolist(), out[1][:m].tolist(), out[2][:m].tolist())
        if not (cfg.explore_slots and m):
            return ranking
        return self._explore(ranking, inputs, scratch, n, scores, limit)

    def _explore(self, ranking: Ranking, inputs: _RowInputs, scratch: _RowScratch, n: int,
                 scores: np.ndarray, limit: int) -> Ranking:
        """``ranking`` with the last slot(s) given to the best candidates of packages new
        to the device when it shows none (``explore_slots``); ``scores`` (n,) are the
        candidates' (in the order of ``scratch.o_st``)."""
        cfg = self.row_config
        stickers, pkgs, row_scores = ranking
        m = len(stickers)
        if cfg.explore_slots and m:
            shown = inputs.sticker_ids[scratch.o_st[:n]]
            packages = inputs.package_ids[scratch.o_pk[:n]]
            new = inputs.v_pk[scratch.o_pk[:n], 3] > 0  # the package_new feature
            in_row = np.isin(shown, stickers)
            if not new[in_row].any() and new.any():
                extra = np.flatnonzero(new)
                extra = extra[np.argsort(-scores[extra], kind="stable")][
                    : min(cfg.explore_slots, limit)]
                keep = max(m - extra.size, 0) if m == limit else m
                stickers = stickers[:keep] + shown[extra].tolist()
                pkgs = pkgs[:keep] + packages[extra].tolist()
                row_scores = row_scores[:keep] + scores[extra].astype(float).tolist()
        return Ranking(stickers, pkgs, row_scores)

    def _rank_server(self, language: str, text: str, cluster_id: int,
                     user_embedding: np.ndarray | None, limit: int, now: float | None
                     ) -> Ranking:
        """:meth:`rank_row` of a device with no history with the compiled keystroke (what
        a server answers; ``limit`` checked): the same row in as few Python steps as can
        be — on a busy server's cold caches each costs microseconds."""
        index = self.context.index_for(cluster_id, language)
        try:
            scratch: _RowScratch = self._local.row_scratch
        except AttributeError:
            scratch = self._row_scratch()
        route = scratch.jobs.get(cluster_id)
        if route is None:
            job = self._new_job(self._empty_row_inputs(cluster_id).kernel, scratch.kernel)
            route = scratch.jobs[cluster_id] = (job, self._server_entry(job))
        job, keystroke_server = route
        personal = False
        if user_embedding is not None:
            assert self._form is not None
            scratch.query(self._checked_embedding(user_embedding), self._form)
            personal = True
        match = index.match(text)
        # the empty state: nothing sent, so nothing protected whatever the time
        n, m, explore = keystroke_server(
            match.label_ids, match.strengths, match.kinds, job,
            (0.0 if now is None else float(now)) - self._protect_s, personal, limit)
        if n == 0:
            return Ranking([], [], [])
        rows = scratch.row_views
        ranking = Ranking(rows[0][:m].tolist(), rows[1][:m].tolist(), rows[2][:m].tolist())
        if not explore:  # never, in fact: every package is new to an empty device
            return ranking
        return self._explore(ranking, self._empty_row_inputs(cluster_id), scratch, n,
                             scratch.o_score[:n], limit)

    def _empty_row_inputs(self, cluster_id: int) -> _RowInputs:
        """The empty state's inputs in ``cluster_id`` (built once per cluster)."""
        inputs = self._empty_inputs.get(cluster_id)
        if inputs is None:
            assert self.catalog is not None
            state = self._empty
            inputs = self._empty_inputs[cluster_id] = self._with_kernel(
                _RowInputs.of_view(state.catalog_view(cluster_id, 0.0), state, self.catalog))
        return inputs

    def _checked_embedding(self, user_embedding: np.ndarray) -> np.ndarray:
        """``user_embedding`` as float32 (d,), finite; :class:`RerankerInputError` if not."""
        u = np.asarray(user_embedding, dtype=np.float32)
        if u.shape != self._zeros.shape:
            raise RerankerInputError(f"user_embedding has shape {u.shape}, expected "
                                     f"{self._zeros.shape}")
        if not np.isfinite(u).all():
            raise RerankerInputError("user_embedding contains NaN or infinite values")
        return u

    def _with_kernel(self, inputs: _RowInputs) -> _RowInputs:
        """``inputs`` with their compiled struct (:class:`_row_kernels.KeystrokeInputs`)
        when the compiled keystroke is used."""
        if self._form is None:
            return inputs
        return inputs._replace(kernel=self._new_inputs(*inputs.arrays, inputs.sticker_ids,
                                                       inputs.package_ids, inputs.fallback))

    def _view_row_inputs(self, state: DeviceHistory, cluster_id: int, t: float) -> _RowInputs:
        """The inputs of a device's compact view at ``t``; their struct is built once per
        view (the view's arrays are updated in place; a new view is a new object)."""
        assert self.catalog is not None
        inputs = _RowInputs.of_view(state.catalog_view(cluster_id, t), state, self.catalog)
        if self._form is None:
            return inputs
        assert inputs.view is not None
        # cached per view, the struct with the state's label view it was built with (the
        # value must not refer to the view: it would keep its weak key alive)
        cached = self._view_inputs.get(inputs.view)
        if cached is None or cached[1] is not state.v_lb:
            cached = self._view_inputs[inputs.view] = (
                self._with_kernel(inputs).kernel, state.v_lb)
        return inputs._replace(kernel=cached[0])

    def _row_scratch(self) -> _RowScratch:
        """This thread's buffers of the sticker row (scorer bound once)."""
        scratch: _RowScratch | None = getattr(self._local, "row_scratch", None)
        if scratch is None:
            assert self.catalog is not None
            scratch = self._local.row_scratch = _RowScratch(
                self.scorer, self.catalog, self.row_config, self._zeros, self._form)
        return scratch

    def keyboard(self, cluster_id: int, language: str, *,
                 history: DeviceHistory | None = None,
                 user_embedding: np.ndarray | None = None) -> Keyboard:
        """The phone's keyboard for one person (its history state lives in it)."""
        return Keyboard(self, cluster_id, language, history=history,
                        user_embedding=user_embedding)

    def _row_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's output arrays of the row (sticker ids, package ids, scores)."""
        buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = getattr(
            self._local, "row", None)
        if buffers is None:
            buffers = self._local.row = (np.empty(50, np.int64), np.empty(50, np.int64),
                                         np.empty(50, np.float64))
        return buffers

    def _bound_scorer(self, cluster_id: int) -> tuple[BoundScorer, np.ndarray]:
        """This thread's scorer of ``cluster_id`` with the zero embedding bound, and its
        buffer of shown stickers (int32, one per candidate)."""
        scorers: dict[int, tuple[BoundScorer, np.ndarray]] | None = getattr(
            self._local, "scorers", None)
        if scorers is None:
            scorers = self._local.scorers = {}
        bound = scorers.get(cluster_id)
        if bound is None:
            bound = scorers[cluster_id] = (
                self.scorer.bind(self._zeros, self._cand_factors[cluster_id],
                                 self._prior[cluster_id]),
                np.empty(self._n_candidates[cluster_id], np.int32))
        return bound

    def describe(self, sticker_id: int, package_id: int, score: float = 0.0) -> Suggestion:
        """The :class:`Suggestion` of one ranked sticker: its labels, emoji and character.

        Parameters
        ----------
        sticker_id, package_id : int
            An entry of a :class:`Ranking`.
        score : float
            Its score.
        """
        labels = [self._label[x] for x in self._sticker_labels.get(sticker_id, [])
                  if x in self._label]
        return Suggestion(sticker_id=sticker_id, package_id=package_id,
                          labels=[x[0] for x in labels], emojis=[x[1] for x in labels],
                          character=str(self._character.get(package_id, "")), score=score)

    def bundle(self, cluster_id: int, language: str) -> dict[str, bytes]:
        """The device bundle of one user: model, candidates, stickers, keyword index.

        Files: ``model.onnx``; ``candidates.npz`` (package ids, float16 factors, prior,
        the factor Gram matrix and ALS λ/α for the on-device fold-in, label embeddings of
        the labels the candidates carry); ``catalog.npz`` (what the keyboard app computes
        the row with: every package's float32 stage-1 factor, every label's embedding,
        the candidates' premium flags, the list width and cluster count);
        ``stickers.json`` (per candidate: sticker ids and their labels; label slugs and
        emoji; characters); ``keywords-<lang>.kwi``;
        ``bundle.json`` (versions, feature names). Budget: :data:`BUNDLE_BUDGET_BYTES`.
        """
        ctx = self.context
        ctx.check_language(language)
        ctx.check_cluster(cluster_id)
        n = int(ctx.candidate_mask[cluster_id].sum())
        ids = ctx.candidate_ids[cluster_id, :n]
        stickers = (ctx.dataset.table("stickers").filter(pl.col("package_id").is_in(ids))
                    .sort("package_id", "position"))
        carried = np.unique(stickers["label_ids"].explode().drop_nulls().to_numpy())
        factors = ctx.stage1.package_factors.astype(np.float64)
        buf = io.BytesIO()
        np.savez_compressed(
            buf, package_ids=ids.astype(np.int32),
            factors=ctx.candidate_factors[cluster_id, :n].astype(np.float16),
            prior=ctx.prior[:n], gram=(factors.T @ factors).astype(np.float32),
            label_ids=carried.astype(np.int32),
            label_embeddings=ctx.label_embeddings[carried].astype(np.float16),
        )
        by_package: dict[str, list[list[int]]] = {}
        for package, sticker, labels in stickers.select(
                "package_id", "sticker_id", "label_ids").iter_rows():
            by_package.setdefault(str(package), []).append([sticker, *labels])
        labels_meta = {str(i): list(self._label[int(i)]) for i in carried.tolist()
                       if int(i) in self._label}
        s1 = ctx.stage1.config
        meta = {"stage1_version": self.stage1_version, "reranker_version": self.reranker_version,
                "cluster_id": cluster_id, "language": language,
                "keyword_features": list(FEATURE_NAMES), "n_factors": self.n_factors,
                "history_features": list(HISTORY_FEATURE_NAMES) if self.is_row else [],
                "row": self.row_config.model_dump(mode="json") if self.is_row else None,
                "regularization": float(s1.regularization), "alpha": float(s1.als.alpha)}
        # what a phone computes its row with besides the candidates (the keyboard app
        # builds its tables from the bundle alone): every package's stage-1 factor
        # (float32, as the server scores: the fold-in and the row need the packages the
        # phone holds, which no cluster list knows), every label's embedding, the
        # candidates' premium flags and the list width that sets the unlisted prior
        premium = dict(zip(*ctx.dataset.table("packages").select(
            "package_id", "premium").to_dict(as_series=False).values(), strict=True))
        device = io.BytesIO()
        np.savez_compressed(
            device, factor_package_ids=ctx.stage1.package_ids.astype(np.int32),
            factors=ctx.stage1.package_factors.astype(np.float32),
            label_embeddings=np.asarray(ctx.label_embeddings, np.float32),
            candidate_premium=np.array([bool(premium.get(int(p), False)) for p in ids], bool),
            candidate_width=np.int64(ctx.candidate_ids.shape[1]),
            n_clusters=np.int64(ctx.n_clusters))
        characters = {str(p): str(self._character.get(int(p), "")) for p in ids.tolist()}
        return {
            "model.onnx": self.model_bytes,
            "candidates.npz": buf.getvalue(),
            "catalog.npz": device.getvalue(),
            "stickers.json": json.dumps({"packages": by_package, "labels": labels_meta,
                                         "characters": characters},
                                        ensure_ascii=False, separators=(",", ":")).encode(),
            f"keywords-{language}.kwi": ctx.indexes[language].to_bytes(),
            "bundle.json": json.dumps(meta, separators=(",", ":")).encode(),
        }


class _RowInputs(NamedTuple):
    """What a keystroke kernel reads of one device's catalogue (view or whole catalogue).

    ``arrays`` are the kernels' arguments ``lab_ptr`` … ``st_last`` in their order
    (:func:`reranker._row_kernels.assemble`); ``fallback`` the listed packages' first
    stickers (the no-match candidates before the device's recent ones); ``kernel`` the
    compiled keystroke's struct of ``arrays``, ``sticker_ids`` and ``package_ids``.
    """

    arrays: tuple[np.ndarray, ...]
    sticker_ids: np.ndarray
    package_ids: np.ndarray
    v_pk: np.ndarray
    fallback: np.ndarray
    view: CatalogView | None
    kernel: Any = None
    """The same arrays in one compiled struct (:class:`_row_kernels.KeystrokeInputs`;
    ``None`` until :meth:`Suggester._with_kernel`)."""

    @classmethod
    def of_view(cls, view: CatalogView, state: DeviceHistory, catalog: StickerCatalog
                ) -> _RowInputs:
        """The inputs of a device's compact view."""
        return cls((view.lab_ptr, view.lab_st, view.own_ptr, view.own_st, view.st_pk,
                    view.st_lab_ptr, view.st_lab, view.pk_size, view.pk_factor, view.pk_unit,
                    view.pk_premium, catalog.label_unit, view.pk_prior, view.pk_flags,
                    view.v_st, view.v_pk, state.v_lb, view.st_last),
                   view.sticker_ids, view.package_ids, view.v_pk,
                   view.first_listed, view)

    @classmethod
    def of_catalog(cls, catalog: StickerCatalog, cluster_id: int, state: DeviceHistory,
                   now: float, first_sticker: np.ndarray) -> _RowInputs:
        """The catalogue-wide inputs of a one-off state (no compact view);
        ``first_sticker`` (n_pk,) int32: each package's first sticker."""
        v_st, v_pk, v_lb = state.view(now)
        flags, prior = catalog.cluster_view(cluster_id)
        lab_ptr, lab_st = catalog.cluster_csr(cluster_id)
        own_ptr, own_st = state.own_csr()
        c = catalog
        return cls((lab_ptr, lab_st, own_ptr, own_st, c.st_pk, c.st_lab_ptr, c.st_lab,
                    c.pk_size, c.pk_factor, c.pk_unit, c.pk_premium, c.label_unit, prior,
                    flags, v_st, v_pk, v_lb, state.st_last),
                   c.sticker_ids, c.package_ids, v_pk,
                   first_sticker[c.cluster_pk[cluster_id]], None)


class _RowScratch:
    """Per-thread buffers of :meth:`Suggester.rank_row`: the bound scorer, the candidate
    assembly's scratch arrays (sized to the catalogue) and, for the compiled keystroke
    (``form`` given), the same buffers with the form's weights in one compiled struct
    (:attr:`kernel`, a :class:`_row_kernels.KeystrokeScratch`)."""

    def __init__(self, scorer: OnnxScorer, catalog: StickerCatalog, config: RowConfig,
                 zeros: np.ndarray, form: LinearForm | None = None) -> None:
        n_st, n_pk = catalog.n_stickers, catalog.n_packages
        capacity = min(config.cap + 512, n_st)  # room for the protected recent stickers
        self.scorer: BoundRowScorer = scorer.bind_row(zeros, capacity)
        self.pre_w = np.asarray(config.pre_weights, np.float32)
        self.seen = np.zeros(n_st, np.int32)
        self.slot = np.zeros(n_st, np.int32)
        self.pk_seen = np.zeros(n_pk, np.int32)
        self.pk_cnt = np.zeros(n_pk, np.int32)
        self.stamp = np.zeros(2, np.int32)
        self.c_st = np.empty(n_st, np.int32)
        self.c_bs = np.empty(n_st, np.float32)
        self.c_kind = np.empty(n_st, np.int8)
        self.c_lab = np.empty(n_st, np.int32)
        self.c_pre = np.empty(n_st, np.float32)
        self.c_protect = np.empty(n_st, np.bool_)
        self.keep = np.empty(n_st, np.int64)
        self.q = np.empty(zeros.shape[0], np.float32)
        self.o_st = np.empty(capacity, np.int32)
        self.o_pk = np.empty(capacity, np.int32)
        self.o_score = np.empty(capacity, np.float32)
        self.pk_mark = np.zeros(n_pk, np.int32)
        self.pk_part = np.zeros(n_pk, np.float64)
        # the kernels' scratch arguments ``pre_w`` … ``q``, in their order
        self.assembly = (self.pre_w, self.seen, self.slot, self.pk_seen, self.pk_cnt,
                         self.stamp, self.c_st, self.c_bs, self.c_kind, self.c_lab, self.c_pre,
                         self.c_protect, self.keep, self.q)
        self._user = np.full(zeros.shape[0], np.nan, np.float32)
        self._query = np.zeros(zeros.shape[0])
        # the row (sticker ids, package ids, scores) of the compiled keystroke
        self.row_stickers = np.empty(50, np.int64)
        self.row_packages = np.empty(50, np.int64)
        self.row_scores = np.empty(50, np.float64)
        # read through memoryviews: slicing one costs less than slicing an ndarray
        self.row_views: tuple[Any, Any, Any] = (
            self.row_stickers.data, self.row_packages.data, self.row_scores.data)
        self.kernel: Any = None
        # the server's keystroke per cluster: a _row_kernels.KeystrokeJob (the empty
        # device's inputs of the cluster with this scratch) and the compiled entry point
        # of its type (_row_kernels.server_entry)
        self.jobs: dict[int, tuple[Any, Callable[..., tuple[int, int, bool]]]] = {}
        if form is not None:
            from reranker import _row_kernels

            self.kernel = _row_kernels.new_keystroke_scratch(
                *self.assembly, self.o_st, self.o_pk, form.query(np.zeros(zeros.shape[0])),
                self._query, form.a, float(form.b), form.e, self.pk_mark, self.pk_part,
                self.o_score, self.row_stickers, self.row_packages, self.row_scores,
                int(config.cap), int(config.explore_slots))

    def query(self, user_embedding: np.ndarray, form: LinearForm) -> np.ndarray:
        """The user tower's output (d,) float64 for ``user_embedding``, written into this
        scratch's query buffer (the struct's ``query``; recomputed only when the embedding
        differs from the previous call's)."""
        if not np.array_equal(user_embedding, self._user):
            np.copyto(self._user, user_embedding)
            self._query[:] = form.query(self._user)
        return self._query


class Keyboard:
    """The keyboard app on one phone: its history state, embedding and the sticker row.

    Every suggestion is computed here from the local state (typed text and history never
    leave); :meth:`record_send` updates the counts at once, so the next row already
    reflects the send.

    Parameters
    ----------
    suggester : Suggester
        With a sticker-row model.
    cluster_id : int
    language : str
    history : DeviceHistory, optional
        The phone's state (default: empty, a new device).
    user_embedding : ndarray, shape (d,), optional
    """

    def __init__(self, suggester: Suggester, cluster_id: int, language: str, *,
                 history: DeviceHistory | None = None,
                 user_embedding: np.ndarray | None = None) -> None:
        if not suggester.is_row or suggester.catalog is None:
            raise RerankerInputError("the keyboard needs a sticker-row model")
        suggester.context.index_for(cluster_id, language)
        self.suggester = suggester
        self.cluster_id = cluster_id
        self.language = language
        self.history = history or DeviceHistory(suggester.catalog, suggester.row_config)
        self.user_embedding = user_embedding

    def rank(self, text: str, *, limit: int = 5, now: float | None = None) -> Ranking:
        """The row for ``text`` typed so far at time ``now`` (seconds)."""
        return self.suggester.rank_row(language=self.language, text=text,
                                       cluster_id=self.cluster_id,
                                       user_embedding=self.user_embedding, limit=limit,
                                       history=self.history, now=now)

    def record_send(self, sticker_id: int, ts: float) -> None:
        """The person sent ``sticker_id`` at ``ts``: counts update now."""
        self.history.record_send(sticker_id, ts)
