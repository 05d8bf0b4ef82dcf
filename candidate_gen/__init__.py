"""Stage 1: batch candidate generation.

Interactions before the split → a confidence-weighted user × package matrix → implicit
ALS factors → faiss k-means user clusters with k-anonymity → ~100 candidate packages per
cluster (centroid score blended with the cluster's shrunk popularity) with label
coverage → a versioned, checksummed artifact under ``var/stage1/<version>/``, evaluated
forward in time against popularity baselines.

Public API: :class:`Stage1Config` and its sections, :func:`build_stage1` (or
:func:`fit_stage1` and :func:`evaluate_stage1`), :class:`Stage1Artifact`,
:func:`tune_stage1`, :func:`recall_report`. The building blocks, for tests, benchmarks
and new pieces, are in three documented submodules: :mod:`candidate_gen.factors` (matrix
and ALS), :mod:`candidate_gen.clusters` (clusters, cold start, candidate lists, faiss
search) and :mod:`candidate_gen.metrics` (recall and baselines).
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
from candidate_gen._config import (
    ALSConfig,
    CandidateConfig,
    ClusterConfig,
    EvaluationConfig,
    MatrixConfig,
    Stage1Config,
)
from candidate_gen._metrics import recall_report
from candidate_gen._tune import (
    SEARCH_SPACE,
    TrialResult,
    TuneResult,
    popularity_overrides,
    tune_stage1,
)

__all__ = [
    "SEARCH_SPACE",
    "ALSConfig",
    "CandidateConfig",
    "ClusterConfig",
    "EvaluationConfig",
    "MatrixConfig",
    "Stage1Artifact",
    "Stage1Config",
    "Stage1Data",
    "Stage1Fit",
    "TrialResult",
    "TuneResult",
    "build_stage1",
    "evaluate_stage1",
    "fit_stage1",
    "load_stage1_data",
    "popularity_overrides",
    "recall_report",
    "resolve_dataset",
    "segment_codes",
    "tune_stage1",
]
