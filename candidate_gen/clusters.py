"""Stage 1's second half: user clusters, cold start and each cluster's candidate list.

:func:`candidate_gen.build_stage1` runs them; this submodule is for tests and code that
clusters or selects candidates itself: faiss k-means with k-anonymity (small clusters
merged), the cold-start assigner and its feature encoding, the centroid scores, label
demand and coverage, the stable top-k, and the threaded exact faiss search.
"""

from candidate_gen._build import UserSegments, nonempty_rows, package_mean_taste
from candidate_gen._candidates import (
    CandidateLists,
    cluster_scores,
    estimate_shrinkage,
    label_demand,
    package_label_matrix,
    select_candidates,
    top_stable,
)
from candidate_gen._clustering import UserClusterer, cluster_means, merge_small_clusters
from candidate_gen._features import ColdStartAssigner, UserFeatureEncoder
from candidate_gen._search import (
    faiss_threads,
    map_slices,
    one_search_thread,
    search,
    search_threads,
)

__all__ = [
    "CandidateLists",
    "ColdStartAssigner",
    "UserClusterer",
    "UserFeatureEncoder",
    "UserSegments",
    "cluster_means",
    "cluster_scores",
    "estimate_shrinkage",
    "faiss_threads",
    "label_demand",
    "map_slices",
    "merge_small_clusters",
    "nonempty_rows",
    "one_search_thread",
    "package_label_matrix",
    "package_mean_taste",
    "search",
    "search_threads",
    "select_candidates",
    "top_stable",
]
