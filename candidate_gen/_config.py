"""The typed configuration of the stage-1 job: one pydantic object, JSON/TOML round-trip.

Every field carries a docstring (it becomes the field's description), every section
rejects unknown keys, and :meth:`Stage1Config.with_overrides` applies ``section.key=value``
strings from the command line. Loading, overrides and TOML/JSON come from
:class:`data.ComponentConfig`; invalid values raise :class:`data.ConfigError` naming the
field, the value and what was expected.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from data import EVENTS, ComponentConfig, ConfigSection

__all__ = [
    "ALSConfig",
    "CandidateConfig",
    "ClusterConfig",
    "EvaluationConfig",
    "MatrixConfig",
    "Stage1Config",
]

USER_FEATURES: tuple[str, ...] = ("language", "region", "age_bucket", "gender", "subscriber")


class MatrixConfig(ConfigSection):
    """How interactions become confidence weights of the user × package matrix."""

    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"purchase": 4.0, "download": 1.0}
    )
    """Confidence of one event of each kind (a purchase says more than a free download)."""

    recency_decay: bool = True
    """Down-weight old interactions exponentially with age (see ``half_life_days``)."""

    half_life_days: float = Field(default=180.0, gt=0)
    """Age in days, counted back from the newest interaction the fit sees, at which a
    weight halves."""

    @model_validator(mode="after")
    def _check_events(self) -> MatrixConfig:
        unknown = sorted(set(self.event_weights) - set(EVENTS))
        missing = sorted(set(EVENTS) - set(self.event_weights))
        if unknown or missing:
            raise ValueError(
                f"event_weights must have exactly the keys {list(EVENTS)}; "
                f"unknown {unknown}, missing {missing}"
            )
        negative = {k: v for k, v in self.event_weights.items() if not v >= 0}
        if negative:
            raise ValueError(f"event_weights must be >= 0, got {negative}")
        if not any(v > 0 for v in self.event_weights.values()):
            raise ValueError("at least one event weight must be > 0")
        return self


class ALSConfig(ConfigSection):
    """Matrix factorisation with ``implicit`` (ALS by default, BPR for comparison)."""

    algorithm: Literal["als", "bpr"] = "als"
    """``als`` (implicit-feedback ALS, the default) or ``bpr`` (Bayesian personalised
    ranking; uses only which pairs are observed)."""

    confidence: Literal["linear", "log", "bm25"] = "log"
    """How a pair's summed weight ``w`` becomes ALS confidence: ``linear`` = ``1 + alpha·w``
    (Hu, Koren & Volinsky 2008), ``log`` = ``1 + alpha·log(1 + w)`` (their log scaling),
    ``bm25`` = ``1 + alpha·bm25(w)`` (implicit's ``bm25_weight``: saturates heavy users
    and down-weights very popular packages)."""

    bm25_k1: float = Field(default=100.0, gt=0)
    """BM25 term-frequency saturation (``confidence = "bm25"`` only)."""

    bm25_b: float = Field(default=0.8, ge=0, le=1)
    """BM25 length normalisation (``confidence = "bm25"`` only)."""

    factors: int = Field(default=32, ge=2, le=1024)
    """Latent dimension of user and package factors (the reranker reuses it)."""

    iterations: int = Field(default=10, ge=1, le=1000)
    """ALS sweeps (or BPR epochs)."""

    regularization: float = Field(default=100.0, ge=0)
    """L2 penalty on factors (the reranker reuses it for the ridge fold-in of a user)."""

    alpha: float = Field(default=3.0, gt=0)
    """ALS confidence scaling of an observed pair (see ``confidence``)."""

    learning_rate: float = Field(default=0.01, gt=0)
    """BPR step size (ignored by ALS)."""

    num_threads: int = Field(default=0, ge=0)
    """Threads implicit uses for fitting; 0 = every core (BLAS itself is held to one)."""

    popularity_prior: float = Field(default=3.0, ge=0)
    """Weight of the package's standardised log global popularity added to a user's
    standardised factor scores when ranking that user's own top-k (0 = factor scores
    alone). Light users' factors are shrunk towards zero, so their ranking leans on
    popularity; chosen on the small world's validation split (3: 0.199 vs 0.189 at 0,
    global popularity 0.181). Does not change the fit."""


class ClusterConfig(ConfigSection):
    """Faiss k-means over normalised user factors joined with scaled user features."""

    n_clusters: int = Field(default=128, ge=1)
    """Requested k-means clusters; capped at ``n_users // min_cluster_size``."""

    min_cluster_size: int = Field(default=50, ge=1)
    """k-anonymity: smaller clusters are merged into their nearest neighbour."""

    features: list[Literal["language", "region", "age_bucket", "gender", "subscriber"]] = Field(
        default_factory=lambda: list(USER_FEATURES)  # type: ignore[arg-type]
    )
    """User columns one-hot encoded into the clustering space and used for cold start."""

    method: Literal["kmeans", "segments"] = "kmeans"
    """``kmeans``: k-means over each user's taste joined with the scaled features (below);
    ``segments``: each combination of the ``features`` values is a cluster (no k-means,
    behaviour unused), small ones merged as after k-means. With ``candidates.shrinkage``
    0 a segment's list is that segment's popularity: the tuner's way to ship a
    popularity list when no clustering beats it on validation."""

    representation: Literal["user_factors", "package_mean"] = "package_mean"
    """Each user's taste in the clustering space (its unit direction): ``user_factors``,
    the user's ALS factors; ``package_mean``, the mean of the unit factors of the
    packages the user held before the split (each held package counts once). The ALS
    user factor is a ridge solve that whitens by every package's factors, which turns
    the noise of a user's ~10 logged pairs into large moves along weak directions; the
    mean of held packages' directions does not. The default since session 9, with
    ``candidates.shrinkage = "auto"``: on the validation splits of the small world, its
    log without demographics and the large world it validates at 0.997 / 1.18 / 1.010×
    the best baseline (ALS factors: 1.011 / 1.08 / 0.990×), the better worst case."""

    feature_weight: float = Field(default=3.0, ge=0)
    """Norm of the scaled feature block next to the unit-norm factor block: the proportion
    of demographics to behaviour in the clustering (0 = behaviour alone). A dataset whose
    users have no known feature value clusters on behaviour alone whatever this is."""

    niter: int = Field(default=20, ge=1)
    """k-means iterations."""

    max_points_per_centroid: int = Field(default=128, ge=8)
    """k-means trains on at most this many users per centroid (a seeded sample)."""

    faiss_threads: int = Field(default=0, ge=0)
    """Threads for faiss searches (assigning users to centroids, top-k lists); 0 = every
    core. Each thread searches a slice of the queries with faiss itself single-threaded:
    faiss' OpenMP parallel regions slow down ~7× when a shared machine is busy, threads
    over slices do not. k-means training stays on one thread (it sees a small sample)."""


class CandidateConfig(ConfigSection):
    """The per-cluster candidate list and its label coverage guarantee."""

    n_candidates: int = Field(default=100, ge=1)
    """Packages per cluster list."""

    top_labels: int = Field(default=10, ge=0)
    """At most this many of a cluster's most used labels must be covered (0 = no coverage)."""

    min_label_share: float = Field(default=0.02, ge=0, le=1)
    """A label counts as used often if it holds at least this share of the cluster's demand."""

    min_packages_per_label: int = Field(default=3, ge=1)
    """Each covered label is carried by at least this many candidate packages."""

    popularity_blend: float = Field(default=1.0, ge=0, le=1)
    """Weight of the cluster's own popularity in a package's score, against the centroid
    score ``item_centroid · package_factor`` (each standardised over the available
    packages of the cluster first): 0 = factor model alone, 1 = popularity alone."""

    shrinkage: float | Literal["auto"] = "auto"
    """Pseudo-users ``m`` of the segment prior in a cluster's popularity: a package's share
    of holders in cluster ``c`` is ``(holders_c + m·prior_c) / (n_c + m)``, where
    ``prior_c`` is the holder share in the segments of the cluster's members. Small
    clusters lean on their segment; 0 = the cluster's own share. ``"auto"``: ``m`` is the
    median cluster's number of members with history, at least ``min_shrinkage``
    (``candidate_gen.estimate_shrinkage``): a median cluster of a big log weighs itself and
    its segments' prior equally, instead of a count fixed on one world."""

    min_shrinkage: float = Field(default=800.0, ge=0)
    """With ``shrinkage = "auto"``, the least number of pseudo-users: on a small log whose
    clusters hold a few dozen users the median cluster alone trusts their own counts too
    much (MovieLens-100k, clusters of ~59: 0.85× global popularity; with 800, 1.02×).
    800 was the fixed default before ``"auto"`` (chosen on the small world)."""

    @field_validator("shrinkage")
    @classmethod
    def _check_shrinkage(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not value >= 0:
            raise ValueError(f"shrinkage={value} must be >= 0 or \"auto\"")
        return value

    segment_features: list[Literal["language", "region", "age_bucket", "gender",
                                   "subscriber"]] = Field(
        default_factory=lambda: list(USER_FEATURES)  # type: ignore[arg-type]
    )
    """User columns whose combined value is a user's segment (the shrinkage prior);
    missing columns and ``"unknown"`` values form one segment."""

    @model_validator(mode="after")
    def _check_room(self) -> CandidateConfig:
        need = self.top_labels * self.min_packages_per_label
        if need > self.n_candidates:
            raise ValueError(
                f"top_labels × min_packages_per_label = {self.top_labels} × "
                f"{self.min_packages_per_label} = {need} must be <= n_candidates="
                f"{self.n_candidates}, or the coverage guarantee cannot always hold"
            )
        return self


class EvaluationConfig(ConfigSection):
    """The offline metrics, forward in time across the dataset's split.

    The job fits only on interactions before the split's ``test_start``; the evaluation
    samples users (never validation devices) who acquire, in ``[test_start, end)``,
    packages they did not hold before it, and measures recall@k of every list on those
    new packages.
    """

    enabled: bool = True
    """Evaluate and publish the recall table (off = no sampling, no metrics)."""

    eval_users: int = Field(default=10_000, ge=1)
    """Users sampled for the evaluation, with history before the split and at least one
    new package after it (as many again without history: the cold-start line)."""

    k: int = Field(default=100, ge=1)
    """Cut-off of recall@k for every list compared."""

    segment_features: list[Literal["language", "region", "age_bucket", "gender",
                                   "subscriber"]] = Field(
        default_factory=lambda: ["language", "region", "age_bucket"]  # type: ignore[arg-type]
    )
    """User columns of the per-segment popularity baseline (language × region × age)."""


class Stage1Config(ComponentConfig):
    """Configuration of the stage-1 candidate-generation job.

    The defaults of ``clusters.representation`` and ``candidates.shrinkage`` are a rule
    checked on three logs' validation splits (their docstrings); the others are what
    ``stickers candidates tune`` chose on the small world's
    validation split (fit before ``validation_start``, scored on validation devices in
    ``[validation_start, test_start)``). A full search of 20 trials (seed 0): among the
    trials whose own factorisation top-k beat global popularity, the best cluster lists
    were the starting factorisation (``log`` confidence, α 3, regularisation 100, 10
    iterations; two trials with lists 0.5 % better had an own top-k below popularity). A
    second search of 16 trials (seed 1) over clusters and lists with that factorisation
    chose 128 clusters, demographics weight 3, lists by the cluster's own popularity
    (blend 1) shrunk with 800 pseudo-users towards the full demographic segment.

    Sections: ``matrix``, ``als``, ``clusters``, ``candidates``, ``evaluation``.
    ``factors`` and ``regularization`` are also exposed at the top level because the
    on-device reranker reuses them for the ridge fold-in of a user embedding.
    """

    config_name: ClassVar[str] = "stage-1 config"

    seed: int = Field(default=0, ge=0)
    """Seeds the factorisation, k-means and the evaluation sample."""

    matrix: MatrixConfig = Field(default_factory=MatrixConfig)
    """Interaction weighting."""

    als: ALSConfig = Field(default_factory=ALSConfig)
    """Matrix factorisation."""

    clusters: ClusterConfig = Field(default_factory=ClusterConfig)
    """User clustering and k-anonymity."""

    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    """Candidate lists and label coverage."""

    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """Offline metrics."""

    @property
    def factors(self) -> int:
        """Latent dimension of the package factors (``als.factors``)."""
        return self.als.factors

    @property
    def regularization(self) -> float:
        """L2 penalty of the factorisation (``als.regularization``)."""
        return self.als.regularization
