"""Stage 1: batch candidate generation.

Interactions → a confidence-weighted user × package matrix → implicit ALS factors →
faiss k-means user clusters with k-anonymity → ~100 candidate packages per cluster with
label coverage → a versioned, checksummed artifact under ``var/stage1/<version>/``.

Public API: :class:`Stage1Config`, :func:`build_stage1`, :class:`Stage1Artifact`, plus
the building blocks (matrix, clusterer, cold-start assigner, candidate selection) for
tests and other stages.
"""

from candidate_gen._artifact import Stage1Artifact
from candidate_gen._build import build_stage1, resolve_dataset
from candidate_gen._candidates import (
    CandidateLists,
    label_demand,
    package_label_matrix,
    select_candidates,
)
from candidate_gen._clustering import UserClusterer, cluster_means, merge_small_clusters
from candidate_gen._config import (
    ALSConfig,
    CandidateConfig,
    ClusterConfig,
    EvaluationConfig,
    MatrixConfig,
    Stage1Config,
)
from candidate_gen._factorization import FactorModel, confidence_matrix, fit_factors, make_model
from candidate_gen._features import ColdStartAssigner, UserFeatureEncoder
from candidate_gen._matrix import Holdout, InteractionMatrix, build_interaction_matrix, index_of
from candidate_gen._metrics import list_recall, popularity_top, recall_report, user_top_k

__all__ = [
    "ALSConfig",
    "CandidateConfig",
    "CandidateLists",
    "ClusterConfig",
    "ColdStartAssigner",
    "EvaluationConfig",
    "FactorModel",
    "Holdout",
    "InteractionMatrix",
    "MatrixConfig",
    "Stage1Artifact",
    "Stage1Config",
    "UserClusterer",
    "UserFeatureEncoder",
    "build_interaction_matrix",
    "build_stage1",
    "cluster_means",
    "confidence_matrix",
    "fit_factors",
    "index_of",
    "label_demand",
    "list_recall",
    "make_model",
    "merge_small_clusters",
    "package_label_matrix",
    "popularity_top",
    "recall_report",
    "resolve_dataset",
    "select_candidates",
    "user_top_k",
]
