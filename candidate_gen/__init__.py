"""Stage 1: batch candidate generation.

Interactions before the split → a confidence-weighted user × package matrix → implicit
ALS factors → faiss k-means user clusters with k-anonymity → ~100 candidate packages per
cluster (centroid score blended with the cluster's shrunk popularity) with label
coverage → a versioned, checksummed artifact under ``var/stage1/<version>/``, evaluated
forward in time against popularity baselines.

Public API: :class:`Stage1Config`, :func:`build_stage1`, :class:`Stage1Artifact`,
:func:`tune_stage1`, plus the building blocks (matrix, clusterer, cold-start assigner,
candidate selection, metrics) for tests and other stages.
"""

from candidate_gen._artifact import Stage1Artifact
from candidate_gen._build import (
    Stage1Data,
    Stage1Fit,
    build_stage1,
    evaluate_stage1,
    fit_stage1,
    load_stage1_data,
    resolve_dataset,
    segment_codes,
)
from candidate_gen._candidates import (
    CandidateLists,
    cluster_scores,
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
from candidate_gen._metrics import (
    BASELINES,
    LISTS,
    group_popularity_top,
    holder_counts,
    list_recall,
    popularity_top,
    recall_report,
    user_top_k,
)
from candidate_gen._tune import SEARCH_SPACE, TrialResult, TuneResult, tune_stage1

__all__ = [
    "BASELINES",
    "LISTS",
    "SEARCH_SPACE",
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
    "Stage1Data",
    "Stage1Fit",
    "TrialResult",
    "TuneResult",
    "UserClusterer",
    "UserFeatureEncoder",
    "build_interaction_matrix",
    "build_stage1",
    "cluster_means",
    "cluster_scores",
    "confidence_matrix",
    "evaluate_stage1",
    "fit_factors",
    "fit_stage1",
    "group_popularity_top",
    "holder_counts",
    "index_of",
    "label_demand",
    "list_recall",
    "load_stage1_data",
    "make_model",
    "merge_small_clusters",
    "package_label_matrix",
    "popularity_top",
    "recall_report",
    "resolve_dataset",
    "segment_codes",
    "select_candidates",
    "tune_stage1",
    "user_top_k",
]
