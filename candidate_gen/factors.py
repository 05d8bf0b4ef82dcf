"""Stage 1's first half: the interaction matrix and its implicit-ALS factors.

:func:`candidate_gen.build_stage1` runs them; this submodule is for tests, benchmarks and
code that fits factors itself: the confidence-weighted user × package matrix and its
holdout, the id index, and the ALS model (``implicit``).
"""

from candidate_gen._factorization import FactorModel, confidence_matrix, fit_factors, make_model
from candidate_gen._matrix import (
    Holdout,
    InteractionMatrix,
    build_interaction_matrix,
    group_order,
    index_of,
)

__all__ = [
    "FactorModel",
    "Holdout",
    "InteractionMatrix",
    "build_interaction_matrix",
    "confidence_matrix",
    "fit_factors",
    "group_order",
    "index_of",
    "make_model",
]
