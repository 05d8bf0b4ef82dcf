"""What a phone knows when it scores: stage-1 candidates, factors, stickers and keyword indexes.

:class:`RankingContext` gathers, from a stage-1 artifact and the dataset it was built
from, everything the reranker needs per keystroke: each cluster's candidate packages
(ids, factors, rank prior, padded to one width), the keyword indexes per language and
the candidate featurizer. It is shared by on-device training, evaluation, serving and
the device bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from candidate_gen import Stage1Artifact
from data import Dataset, open_dataset
from keyword_index import (
    FEATURE_NAMES,
    CandidateFeaturizer,
    KeywordIndex,
    Match,
    MultilingualIndex,
    label_embeddings,
)
from reranker._errors import RerankerInputError, UnknownClusterError, UnknownLanguageError
from reranker._model import ParameterLayout, rank_prior

__all__ = ["RankingContext", "check_cluster", "check_language"]


def check_language(language: str, languages: Sequence[str]) -> None:
    """The reranker's check of a request's language.

    Raises
    ------
    UnknownLanguageError
        ``language`` is not one of ``languages`` (those with a keyword index).
    """
    if language not in languages:
        raise UnknownLanguageError(f"language {language!r} has no keyword index; expected "
                                   f"one of {', '.join(languages)}")


def check_cluster(cluster_id: int, stage1: Stage1Artifact) -> None:
    """The reranker's check of a request's cluster.

    Raises
    ------
    UnknownClusterError
        ``cluster_id`` is not in ``0 .. stage1.n_clusters - 1``.
    """
    n = stage1.n_clusters
    if not 0 <= cluster_id < n:
        raise UnknownClusterError(f"cluster_id={cluster_id} is not a cluster of stage-1 "
                                  f"version {stage1.version}; it has clusters 0..{n - 1}")


@dataclass
class RankingContext:
    """Candidates and keyword machinery of one stage-1 version (read-only after build).

    Attributes
    ----------
    stage1 : Stage1Artifact
    dataset : data.Dataset
        The dataset stage 1 was built from (stickers, labels, keywords, packages).
    candidate_ids : ndarray of int32, shape (n_clusters, n_cand)
        Package ids per cluster in stage-1 rank order; ``-1`` pads short lists.
    candidate_factors : ndarray of float32, shape (n_clusters, n_cand, d)
        Their stage-1 factors (zeros for padding).
    candidate_mask : ndarray of bool, shape (n_clusters, n_cand)
        True for real candidates.
    prior : ndarray of float32, shape (n_cand,)
        :func:`rank_prior` of ranks ``0 .. n_cand-1``.
    indexes : MultilingualIndex
    featurizer : CandidateFeaturizer
    package_row : dict
        Package id → row of the stage-1 factors.
    label_embeddings : ndarray of float32, shape (n_labels, d)
        Mean factor of the packages carrying each label (keyword query vectors).
    """

    stage1: Stage1Artifact
    dataset: Dataset
    candidate_ids: np.ndarray
    candidate_factors: np.ndarray
    candidate_mask: np.ndarray
    prior: np.ndarray
    indexes: MultilingualIndex
    featurizer: CandidateFeaturizer
    package_row: dict[int, int]
    label_embeddings: np.ndarray

    @property
    def layout(self) -> ParameterLayout:
        """The reranker's parameter layout for this stage-1 version."""
        return ParameterLayout(int(self.stage1.package_factors.shape[1]), len(FEATURE_NAMES))

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return int(self.candidate_ids.shape[0])

    @property
    def languages(self) -> list[str]:
        """Languages with a keyword index."""
        return list(self._languages)

    @cached_property
    def _languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.indexes))

    @cached_property
    def _cluster_candidates(self) -> list[np.ndarray]:
        # contiguous int32 ids per cluster: the featurizer keys its tables on their bytes
        return [np.ascontiguousarray(ids[mask], dtype=np.int32)
                for ids, mask in zip(self.candidate_ids, self.candidate_mask, strict=True)]

    @classmethod
    def build(cls, stage1: Stage1Artifact, dataset: Dataset | str | Path | None = None,
              languages: list[str] | None = None) -> RankingContext:
        """Assemble the context of ``stage1`` (dataset defaults to the one it was built from)."""
        if dataset is None:
            recorded = stage1.manifest.extra.get("dataset", {}).get("path")
            if recorded is None:
                raise RerankerInputError(
                    f"{stage1.directory}: stage-1 manifest does not record its dataset; "
                    "pass the dataset explicitly")
            dataset = recorded
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(Path(dataset))
        if not ds.has("stickers") or not ds.has("keywords"):
            raise RerankerInputError(
                f"{ds.root}: the reranker needs stickers and keywords; this dataset has "
                f"{', '.join(ds.tables)}")
        stickers = ds.table("stickers")
        keywords = ds.table("keywords")
        n_labels = int(ds.table("labels")["label_id"].to_numpy().max()) + 1
        factors = stage1.package_factors.astype(np.float32)
        lists = [stage1.candidates(c) for c in range(stage1.n_clusters)]
        width = max((len(x) for x in lists), default=0)
        if width == 0:
            raise RerankerInputError(f"{stage1.directory}: stage 1 has no candidates")
        package_row = {int(p): i for i, p in enumerate(stage1.package_ids.tolist())}
        ids = np.full((len(lists), width), -1, np.int32)
        cand_factors = np.zeros((len(lists), width, factors.shape[1]), np.float32)
        for c, lst in enumerate(lists):
            ids[c, : len(lst)] = lst
            rows = np.array([package_row.get(int(p), -1) for p in lst], dtype=np.int64)
            known = rows >= 0
            cand_factors[c, : len(lst)][known] = factors[rows[known]]
        embeddings = label_embeddings(stage1.package_ids, factors, stickers, n_labels)
        # One table per cluster's candidate set (~0.7 MB each), kept for every cluster:
        # a server answers random clusters, and a rebuild costs ~5 ms per keystroke.
        featurizer = CandidateFeaturizer(stickers, embeddings, stage1.package_ids, factors,
                                         cache_size=max(stage1.n_clusters, 1))
        langs = languages or sorted(keywords["language"].unique().to_list())
        indexes = MultilingualIndex.build(keywords.filter(pl.col("language").is_in(langs)),
                                          languages=langs)
        return cls(stage1=stage1, dataset=ds, candidate_ids=ids, candidate_factors=cand_factors,
                   candidate_mask=ids >= 0, prior=rank_prior(np.arange(width)),
                   indexes=indexes, featurizer=featurizer, package_row=package_row,
                   label_embeddings=np.asarray(embeddings, dtype=np.float32))

    def keystroke_features(self, cluster_id: int, language: str, text: str
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Keyword features (n_cand, k) and shown sticker ids (n_cand,) for one text.

        Padding rows get zero features and sticker ``-1``.
        """
        return self.match_features(cluster_id, self.index_for(cluster_id, language).match(text))

    def index_for(self, cluster_id: int, language: str) -> KeywordIndex:
        """The keyword index of ``language``, after checking ``language`` and ``cluster_id``.

        Raises
        ------
        RerankerInputError
            Unknown language, cluster out of range.
        """
        index = self._index_of.get(language)
        if index is None:
            check_language(language, self._languages)
        if not 0 <= cluster_id < self.candidate_ids.shape[0]:
            check_cluster(cluster_id, self.stage1)
        assert index is not None  # check_language raised otherwise
        return index

    def check_language(self, language: str) -> None:
        """:func:`check_language` against this context's languages."""
        check_language(language, self._languages)

    def check_cluster(self, cluster_id: int) -> None:
        """:func:`check_cluster` against this context's stage-1 artifact."""
        check_cluster(cluster_id, self.stage1)

    @cached_property
    def _index_of(self) -> dict[str, KeywordIndex]:
        return {language: self.indexes[language] for language in self._languages}

    def cluster_candidates(self, cluster_id: int) -> np.ndarray:
        """The real candidates of a cluster (no padding), contiguous int32 (n,)."""
        return self._cluster_candidates[cluster_id]

    def match_features(self, cluster_id: int, match: Match) -> tuple[np.ndarray, np.ndarray]:
        """Keyword features (n_cand, k) and shown stickers (n_cand,) for a computed match."""
        ids = self._cluster_candidates[cluster_id]
        f, s = self.featurizer.features(match, ids)
        width = self.candidate_ids.shape[1]
        if ids.shape[0] == width:
            return f, s
        feats = np.zeros((width, len(FEATURE_NAMES)), np.float32)
        shown = np.full(width, -1, np.int32)
        feats[: ids.shape[0]], shown[: ids.shape[0]] = f, s
        return feats, shown
