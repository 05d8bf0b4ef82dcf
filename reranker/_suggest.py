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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from candidate_gen import Stage1Artifact
from data import Dataset
from keyword_index import FEATURE_NAMES
from reranker._artifact import RerankerArtifact
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._model import initial_parameters
from reranker._onnx import BoundScorer, OnnxScorer, export_onnx

__all__ = ["BUNDLE_BUDGET_BYTES", "Ranking", "Suggester", "Suggestion"]

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
    weights (keyword match, then stage-1 order; no personal term), version ``initial``.
    """

    def __init__(self, context: RankingContext, reranker: RerankerArtifact | None) -> None:
        self.context = context
        self.reranker = reranker
        layout = context.layout
        if reranker is not None:
            if reranker.layout != layout:
                raise RerankerInputError(
                    f"reranker {reranker.version} has layout {reranker.layout}, stage 1 "
                    f"{context.stage1.version} needs {layout}")
            if reranker.stage1_version and reranker.stage1_version != context.stage1.version:
                raise RerankerInputError(
                    f"reranker {reranker.version} was trained against stage 1 "
                    f"{reranker.stage1_version}, not {context.stage1.version}; its weights "
                    "do not apply to other factors")
            self.model_bytes = reranker.model_bytes
        else:
            self.model_bytes = export_onnx(initial_parameters(layout), layout,
                                           version="initial").SerializeToString()
        self.scorer = OnnxScorer(self.model_bytes)
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
             dataset: Dataset | str | Path | None = None) -> Suggester:
        """Load and verify both artifacts (checksums) and build the keystroke machinery.

        ``reranker_version=None`` uses the initial weights; ``"latest"`` falls back to
        them only if no reranker was ever published.
        """
        stage1 = Stage1Artifact.load(var, stage1_version)
        reranker: RerankerArtifact | None = None
        if reranker_version is not None:
            kind_dir = Path(var) / "reranker"
            if reranker_version != "latest" or (kind_dir / "LATEST").is_file():
                reranker = RerankerArtifact.load(var, reranker_version)
        return cls(RankingContext.build(stage1, dataset), reranker)

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
             user_embedding: np.ndarray | None = None, limit: int = 5) -> Ranking:
        """The ranked stickers for ``text`` typed so far, as plain lists (no labels).

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
            u = np.asarray(user_embedding, dtype=np.float32)
            if u.shape != self._zeros.shape:
                raise RerankerInputError(f"user_embedding has shape {u.shape}, expected "
                                         f"{self._zeros.shape}")
            if not np.isfinite(u).all():
                raise RerankerInputError("user_embedding contains NaN or infinite values")
            feats, shown = ctx.keystroke_features(cluster_id, language, text)
            n = self._n_candidates[cluster_id]
            scores = self.scorer.score(u, self._cand_factors[cluster_id], feats[:n],
                                       self._prior[cluster_id], validate=False)
        out = self._row_buffers()
        m = self._top_candidates(scores, shown, ctx.cluster_candidates(cluster_id), limit,
                                 *out)
        stickers, packages, row_scores = out
        return Ranking(stickers[:m].tolist(), packages[:m].tolist(), row_scores[:m].tolist())

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
        the labels the candidates carry); ``stickers.json`` (per candidate: sticker ids
        and their labels; label slugs and emoji); ``keywords-<lang>.kwi``;
        ``bundle.json`` (versions, feature names). Budget: :data:`BUNDLE_BUDGET_BYTES`.
        """
        ctx = self.context
        if language not in ctx.languages:
            raise RerankerInputError(f"language {language!r} has no keyword index; expected "
                                     f"one of {', '.join(ctx.languages)}")
        if not 0 <= cluster_id < ctx.n_clusters:
            raise RerankerInputError(
                f"cluster_id={cluster_id} is out of range; expected 0..{ctx.n_clusters - 1}")
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
                "regularization": float(s1.regularization), "alpha": float(s1.als.alpha)}
        return {
            "model.onnx": self.model_bytes,
            "candidates.npz": buf.getvalue(),
            "stickers.json": json.dumps({"packages": by_package, "labels": labels_meta},
                                        ensure_ascii=False, separators=(",", ":")).encode(),
            f"keywords-{language}.kwi": ctx.indexes[language].to_bytes(),
            "bundle.json": json.dumps(meta, separators=(",", ":")).encode(),
        }
