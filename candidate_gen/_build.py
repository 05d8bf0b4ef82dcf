"""The stage-1 batch job: dataset → matrix → ALS → clusters → candidates → artifact.

The job fits only on interactions before the dataset split's ``test_start``; what it
publishes is exactly what its forward-in-time evaluation measures. Each step is timed;
the timings, the offline metrics, the split and the cluster size distribution go into
the manifest. :func:`load_stage1_data` and :func:`fit_stage1` are the same steps for
the tuner, which runs them on the validation phase of the split.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import polars as pl
import scipy.sparse as sp
import structlog

from candidate_gen._artifact import KIND
from candidate_gen._candidates import (
    CandidateLists,
    cluster_scores,
    estimate_shrinkage,
    holder_label_demand,
    package_label_matrix,
    select_candidates,
)
from candidate_gen._clustering import UserClusterer, cluster_means
from candidate_gen._config import USER_FEATURES, Stage1Config
from candidate_gen._factorization import FactorModel, fit_factors
from candidate_gen._features import ColdStartAssigner, UserFeatureEncoder
from candidate_gen._matrix import InteractionMatrix, build_interaction_matrix
from candidate_gen._metrics import (
    aggregate_groups,
    evaluation_top_k,
    holder_counts,
    recall_report,
)
from candidate_gen._search import faiss_threads, one_search_thread
from data import (
    DataFileError,
    Dataset,
    TimeSplit,
    dataset_dir,
    fingerprint,
    new_version,
    open_dataset,
    progress,
    publish_artifact,
    time_split,
    var_root,
    verify_checksums,
)

__all__ = [
    "Stage1Data", "Stage1Fit", "UserSegments", "build_stage1", "evaluate_stage1",
    "fit_stage1", "load_stage1_data", "nonempty_rows", "own_top_k_of",
    "package_mean_taste", "resolve_dataset", "segment_codes",
]

log = structlog.get_logger(__name__)

COLD_START_SMOOTHING = 1.0
_STEPS = ("load", "matrix", "factorize", "cluster", "candidates", "evaluate", "write")


def resolve_dataset(dataset: Dataset | str | Path, var: Path, *, verify: bool = True,
                    checksums: bool = True) -> Dataset:
    """A :class:`data.Dataset` from itself, a directory, or a name under ``var/data``.

    ``verify`` and ``checksums`` are passed to :func:`data.open_dataset` (an already
    opened dataset is returned as it is).
    """
    if isinstance(dataset, Dataset):
        return dataset
    path = Path(dataset)
    if not path.is_dir() and len(path.parts) == 1:
        path = dataset_dir(var, str(dataset))
    if not path.is_dir():
        raise DataFileError(f"{path}: no such dataset directory (generate or load one first)")
    return open_dataset(path, verify=verify, checksums=checksums)


Phase = Literal["test", "validation"]


def segment_codes(users: pl.DataFrame, features: Sequence[str]) -> tuple[np.ndarray, int]:
    """Segment of every user: the combination of their ``features`` values.

    Parameters
    ----------
    users : polars.DataFrame
        The ``users`` table (rows in matrix order).
    features : sequence of str
        Columns combined; columns the table lacks are left out (no columns = one segment).

    Returns
    -------
    codes : ndarray of int64, shape (n_users,)
        Dense segment codes in ``[0, n_segments)``, in the sorted order of the
        combined values (a null is ``"unknown"``).
    n_segments : int
    """
    present = [f for f in features if f in users.columns]
    if not present or users.height == 0:
        return np.zeros(users.height, dtype=np.int64), 1
    # Each column's values as sorted codes, combined in mixed radix: ordering the
    # combinations as the columns' values would be, without sorting a million strings.
    combined = np.zeros(users.height, dtype=np.int64)
    radix = 1
    for feature in present:
        column = users[feature].cast(pl.String).fill_null("unknown")
        values = column.unique().sort()
        # An Enum of the sorted values numbers each row by its value's rank (~2× faster
        # than replace_strict on a million rows).
        codes = column.cast(pl.Enum(values)).to_physical().to_numpy()
        combined = combined * len(values) + codes
        radix *= len(values)
    if radix <= 4 * users.height + (1 << 20):
        seen = np.bincount(combined, minlength=radix) > 0
        dense = np.cumsum(seen) - 1
        return dense[combined].astype(np.int64), int(seen.sum())
    uniq, inverse = np.unique(combined, return_inverse=True)
    return inverse.astype(np.int64).ravel(), len(uniq)


class UserSegments:
    """:func:`segment_codes` of one ``users`` table for any subset of ``features``.

    The table is coded once by every feature (``combo``); a subset's codes then come from
    one representative user per combination (a few hundred rows instead of a million).
    Each subset's numbering is :func:`segment_codes`' own: a representative table holds
    every value of every feature, so the sorted values and the combinations present are
    the same.

    Parameters
    ----------
    users : polars.DataFrame
        The ``users`` table (rows in matrix order).
    features : sequence of str
        Every feature a subset may name; columns the table lacks are left out.

    Attributes
    ----------
    combo : ndarray of int64, shape (n_users,)
        Each user's combination of all ``features``, as :func:`segment_codes` numbers it.
    n_combos : int
    representative : polars.DataFrame
        The first user of each combination (``n_combos`` rows, in combination order).
    """

    def __init__(self, users: pl.DataFrame, features: Sequence[str]) -> None:
        self.users = users
        self.features = tuple(f for f in dict.fromkeys(features) if f in users.columns)
        self.combo, self.n_combos = segment_codes(users, self.features)
        self.representative = users[first_of_each(self.combo, self.n_combos)]
        self._codes: dict[tuple[str, ...], tuple[np.ndarray, int]] = {}

    def codes(self, features: Sequence[str]) -> tuple[np.ndarray, int]:
        """``segment_codes(users, features)`` (cached; shared arrays: do not modify)."""
        key = tuple(features)
        if key not in self._codes:
            if set(f for f in key if f in self.users.columns) <= set(self.features):
                local, n = segment_codes(self.representative, key)
                self._codes[key] = (local[self.combo], n)
            else:
                self._codes[key] = segment_codes(self.users, key)
        return self._codes[key]


def first_of_each(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Position of the first element holding each code (int64, shape (n_codes,); -1 if none)."""
    first = np.full(n_codes, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1, dtype=np.int64)
    return first


def nonempty_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``matrix[rows]`` for ``rows`` = every non-empty row, in order, without a copy.

    The empty rows left out hold nothing, so the kept rows' offsets are the matrix's own:
    the result shares ``data`` and ``indices`` with ``matrix`` (read only).

    Parameters
    ----------
    matrix : csr_matrix, shape (n, m)
    rows : ndarray of int, shape (n_rows,)
        ``np.flatnonzero(np.diff(matrix.indptr) > 0)``.

    Returns
    -------
    csr_matrix, shape (n_rows, m)
    """
    indptr = np.append(matrix.indptr[rows], matrix.indptr[-1]).astype(matrix.indptr.dtype)
    return sp.csr_matrix((matrix.data, matrix.indices, indptr),
                         shape=(len(rows), matrix.shape[1]), copy=False)


def package_mean_taste(held: sp.csr_matrix, package_factors: np.ndarray) -> np.ndarray:
    """Each user's mean of the unit factors of the packages they hold.

    The ``package_mean`` representation of :attr:`ClusterConfig.representation`: every
    held package counts once, whatever its weight, and only its direction counts.

    Parameters
    ----------
    held : csr_matrix, shape (n, n_packages)
        The users' rows of the train matrix (any stored pair is a held package).
    package_factors : ndarray of float32, shape (n_packages, d)

    Returns
    -------
    ndarray of float32, shape (n, d)
        Zero for a user holding nothing.
    """
    package = np.asarray(package_factors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", package, package))
    unit = package / np.where(norms > 0, norms, np.float32(1.0))[:, None]
    ones = sp.csr_matrix((np.ones(held.nnz, dtype=np.float32), held.indices, held.indptr),
                         shape=held.shape)
    out = np.asarray(ones @ unit, dtype=np.float32)
    out /= np.maximum(np.diff(held.indptr), 1).astype(np.float32)[:, None]
    return out


def _sorted_by(table: pl.DataFrame, column: str) -> pl.DataFrame:
    """``table.sort(column)``; a table already in order (the usual case) is returned as is."""
    return table if table[column].is_sorted() else table.sort(column)


@dataclass(frozen=True)
class Stage1Data:
    """What a stage-1 fit reads: the tables, the split and the matrix of one phase.

    Attributes
    ----------
    dataset : data.Dataset
    users, packages : polars.DataFrame
        Sorted by id (matrix row / column order).
    stickers : polars.DataFrame or None
    split : data.TimeSplit
    phase : ``"test"`` or ``"validation"``
        ``test``: fit before ``test_start``, evaluate on ``[test_start, end)`` on
        non-validation users; ``validation``: fit before ``validation_start``, evaluate on
        ``[validation_start, test_start)`` on validation devices only.
    matrix : InteractionMatrix
    pending : dict of str to Future
        ``segments`` and ``label_shares`` being computed in a thread (see
        :func:`load_stage1_data`'s ``background``); computed on first use without it.
    """

    dataset: Dataset
    users: pl.DataFrame
    packages: pl.DataFrame
    stickers: pl.DataFrame | None
    split: TimeSplit
    phase: Phase
    matrix: InteractionMatrix
    pending: dict[str, Future[Any]] = field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def segments(self) -> UserSegments:
        """The users' segment codes by any of the user features (computed once)."""
        if "segments" in self.pending:
            segments: UserSegments = self.pending["segments"].result()
            return segments
        return UserSegments(self.users, USER_FEATURES)

    @functools.cached_property
    def label_shares(self) -> tuple[sp.csr_matrix, np.ndarray] | None:
        """:func:`package_label_matrix` of the stickers over the matrix columns (None
        without a stickers table)."""
        if self.stickers is None:
            return None
        if "label_shares" in self.pending:
            ids, shares = self.pending["label_shares"].result()
            if np.array_equal(ids, self.matrix.package_ids):
                return shares
        return package_label_matrix(self.stickers, self.matrix.package_ids)


def load_stage1_data(ds: Dataset, config: Stage1Config, phase: Phase = "test",
                     *, evaluate: bool | None = None, background: Executor | None = None,
                     ) -> Stage1Data:
    """Read a dataset and build the matrix of one phase of its split.

    Parameters
    ----------
    ds : data.Dataset
    config : Stage1Config
        ``matrix`` weighting, ``evaluation`` sample size, ``seed``.
    phase : ``"test"`` or ``"validation"``
        See :class:`Stage1Data`.
    evaluate : bool, optional
        Sample the evaluation window (default: ``config.evaluation.enabled``).
    background : concurrent.futures.Executor, optional
        Computes :attr:`Stage1Data.segments` and :attr:`Stage1Data.label_shares` while
        the matrix is built (polars does most of that work outside the GIL, on the core
        the matrix's numpy steps leave idle).
    """
    users = _sorted_by(ds.table("users"), "user_id")
    packages = _sorted_by(ds.table("packages"), "package_id")
    stickers = ds.table("stickers") if ds.has("stickers") else None
    split = time_split(ds)
    evaluate = config.evaluation.enabled if evaluate is None else evaluate
    window: tuple[float, float] | None = None
    eligible: Callable[[np.ndarray], np.ndarray] | None = None
    if phase == "validation":
        fit_end = split.validation_start
        window = (split.validation_start, split.test_start)
    else:
        fit_end = split.test_start
        window = (split.test_start, float("inf"))
    if evaluate:
        user_ids = users["user_id"].to_numpy()
        want = phase == "validation"

        def eligible(rows: np.ndarray) -> np.ndarray:
            return split.is_validation_device(user_ids[rows]) == want
    else:
        window = None
    pending: dict[str, Future[Any]] = {}
    if background is not None:
        pending["segments"] = background.submit(UserSegments, users, USER_FEATURES)
        if stickers is not None:
            pending["label_shares"] = background.submit(_label_shares, stickers, packages)
    matrix = build_interaction_matrix(
        ds.scan("interactions"), users, packages, config.matrix, fit_end,
        np.random.default_rng(config.seed), window=window,
        eval_users=config.evaluation.eval_users, eligible=eligible,
    )
    return Stage1Data(ds, users, packages, stickers, split, phase, matrix, pending)


def _label_shares(stickers: pl.DataFrame, packages: pl.DataFrame
                  ) -> tuple[np.ndarray, tuple[sp.csr_matrix, np.ndarray]]:
    # the matrix's columns are the sorted package ids (checked again on use)
    ids = np.sort(packages["package_id"].to_numpy()).astype(np.int32)
    return ids, package_label_matrix(stickers, ids)


@dataclass(frozen=True)
class Stage1Fit:
    """Everything a stage-1 fit learns (what the artifact publishes).

    Attributes
    ----------
    factors : FactorModel
    encoder : UserFeatureEncoder
    encoded : ndarray of float32, shape (n_combos, n_features_out)
        One-hot features of each distinct combination of feature values.
    combo : ndarray of int64, shape (n_users,)
        Each user's combination (row of ``encoded``); ``encoded[combo]`` is every user's.
    clusterer : UserClusterer
        Fitted on the users with history (``warm``).
    warm : ndarray of int64, shape (n_warm,)
        Matrix rows with history before the fit's end.
    user_cluster : ndarray of int32, shape (n_users,)
        Cluster of every user (from features for those without history).
    from_features : ndarray of bool, shape (n_users,)
    feature_cluster : ndarray of int32, shape (n_users,)
        The cluster every user's features alone assign (the cold-start rule).
    item_centroids : ndarray of float32, shape (n_clusters, d)
    feature_centroids : ndarray of float32, shape (n_clusters, n_features_out)
    n_history : ndarray of int64, shape (n_clusters,)
        Users with history per cluster.
    assigner : ColdStartAssigner
    lists : CandidateLists
    coverage_note : str
    feature_scale : float
        Scale of each one-hot block in the clustering space.
    segment_holders : (tuple of str, ndarray, ndarray) or None
        The prior's segment features, each user's segment (n_users,) and the holder
        counts per segment (n_segments, n_packages), kept for the evaluation.
    cluster_centroids : ndarray of float32, shape (n_lists, d_space) or None
        Centroids in the clustering space, the fallback's (the mean of every user with
        history) included.
    fallback_cluster : int or None
        The list of users with neither history nor a known value of a feature with two
        or more categories (:meth:`UserFeatureEncoder.has_informative_value`): global
        popularity (the last cluster id; None when every user without history has a
        feature to be assigned by).
    shrinkage : float or None
        Pseudo-users of the segment prior the lists used (``candidates.shrinkage``, or
        the median cluster's members with history when that is ``"auto"``); None when the
        lists ignore popularity (``popularity_blend = 0``).

    With a fallback cluster, ``n_lists = n_clusters + 1`` rows of ``item_centroids``,
    ``feature_centroids`` (all zero for the fallback), ``n_history`` (0) and ``lists``.
    """

    factors: FactorModel
    encoder: UserFeatureEncoder
    encoded: np.ndarray
    combo: np.ndarray
    clusterer: UserClusterer
    warm: np.ndarray
    user_cluster: np.ndarray
    from_features: np.ndarray
    feature_cluster: np.ndarray
    item_centroids: np.ndarray
    feature_centroids: np.ndarray
    n_history: np.ndarray
    assigner: ColdStartAssigner
    lists: CandidateLists
    coverage_note: str
    feature_scale: float
    segment_holders: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None
    cluster_centroids: np.ndarray | None = None
    fallback_cluster: int | None = None
    shrinkage: float | None = None

    @property
    def n_lists(self) -> int:
        """Candidate lists (clusters, the fallback included)."""
        return len(self.item_centroids)


def fit_stage1(data: Stage1Data, config: Stage1Config, *, show_progress: bool = False,
               factors: FactorModel | None = None,
               step: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
               on_factors: Callable[[FactorModel], None] | None = None,
               ) -> Stage1Fit:
    """Factorise, cluster and choose the candidate lists from ``data.matrix.train``.

    Parameters
    ----------
    data : Stage1Data
    config : Stage1Config
    show_progress : bool
    factors : FactorModel, optional
        Already fitted factors of ``config.als`` on this matrix (the tuner reuses them).
    step : callable, optional
        ``step(name)`` returns a context manager timing a step (``factorize``,
        ``cluster``, ``candidates``).
    on_factors : callable, optional
        Called with the factors as soon as they are fitted, before the clustering (the
        job starts the evaluation's own top-k search there).
    """
    timed = step or (lambda _name: contextlib.nullcontext())
    train = data.matrix.train
    users = data.users
    available = data.packages["available"].to_numpy()
    with timed("factorize"):
        if factors is None:
            factors = fit_factors(train, config.als, config.seed, show_progress=show_progress)
    if on_factors is not None:
        on_factors(factors)

    with timed("cluster"):
        # Users with the same feature values encode (and are assigned) alike: encode and
        # assign each combination once instead of a million rows. The representatives
        # hold every value of every feature, so the encoder learns the same categories.
        combo, n_combos = data.segments.codes(config.clusters.features)
        representative = users[first_of_each(combo, n_combos)]
        encoder = UserFeatureEncoder(config.clusters.features).fit(representative)
        encoded_combo = encoder.transform(representative)
        warm = np.flatnonzero(np.diff(train.indptr) > 0)
        n_feature_blocks = max(1, len(config.clusters.features))
        feature_scale = config.clusters.feature_weight / np.sqrt(n_feature_blocks)
        if config.clusters.representation == "user_factors":
            taste = factors.user_factors[warm]
        else:
            taste = package_mean_taste(nonempty_rows(train, warm), factors.package_factors)
        d = taste.shape[1]
        space = np.empty((len(warm), d + encoded_combo.shape[1]), dtype=np.float32)
        space[:, :d] = taste
        del taste
        norms = np.sqrt(np.einsum("ij,ij->i", space[:, :d], space[:, :d]))
        space[:, :d] /= np.where(norms > 0, norms, np.float32(1.0))[:, None]
        space[:, d:] = encoded_combo[combo[warm]]
        space[:, d:] *= np.float32(feature_scale)
        clusterer = UserClusterer(
            config.clusters.n_clusters, config.clusters.min_cluster_size,
            config.clusters.niter, config.clusters.max_points_per_centroid, config.seed,
        )
        if config.clusters.method == "segments":
            present = np.bincount(combo[warm], minlength=n_combos) > 0
            clusterer.fit_groups(space, (np.cumsum(present) - 1)[combo[warm]])
        else:
            clusterer.fit(space)
        del space
        n_clusters = clusterer.n_clusters_
        item_centroids, n_history = cluster_means(
            factors.user_factors[warm], clusterer.labels_, n_clusters
        )
        members = sp.csr_matrix(  # users with history per (cluster, feature combination)
            (np.ones(len(warm), dtype=np.float32), (clusterer.labels_, combo[warm])),
            shape=(n_clusters, n_combos))
        feature_centroids = np.asarray(members @ encoded_combo, dtype=np.float32)
        feature_centroids /= np.maximum(n_history, 1).astype(np.float32)[:, None]
        assigner = ColdStartAssigner(encoder.block_sizes, COLD_START_SMOOTHING).fit(
            feature_centroids, n_history
        )
        feature_cluster = assigner.predict(encoded_combo)[combo]
        from_features = np.ones(len(users), dtype=bool)
        from_features[warm] = False
        # Users with no history and no known value of a feature that varies have nothing
        # to be assigned by: rather than the biggest cluster's list, global popularity.
        featureless = ~encoder.has_informative_value(encoded_combo)[combo]
        fallback: int | None = None
        cluster_centroids = clusterer.cluster_centers_
        if (featureless & from_features).any():
            fallback = n_clusters
            feature_cluster[featureless] = fallback
            weights = n_history.astype(np.float64)[:, None] / max(1, int(n_history.sum()))
            item_centroids = np.vstack([
                item_centroids, (weights * item_centroids).sum(axis=0, keepdims=True)
            ]).astype(np.float32)
            cluster_centroids = np.vstack([
                cluster_centroids, (weights * cluster_centroids).sum(axis=0, keepdims=True)
            ]).astype(np.float32)
            feature_centroids = np.vstack([
                feature_centroids, np.zeros((1, feature_centroids.shape[1]), np.float32)])
            n_history = np.append(n_history, 0)
        user_cluster = feature_cluster.copy()
        user_cluster[warm] = clusterer.labels_

    with timed("candidates"):
        warm_cluster = np.full(len(user_cluster), -1, dtype=np.int64)
        warm_cluster[warm] = clusterer.labels_
        avail = np.flatnonzero(available)
        cluster_holders = holder_counts(train, warm_cluster, n_clusters)
        holders = cluster_holders[:, avail]
        kept: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None
        if config.candidates.popularity_blend > 0:
            features = tuple(config.candidates.segment_features)
            segment, n_segments = data.segments.codes(features)
            segment_holders = holder_counts(train, segment, n_segments)
            kept = (features, segment, segment_holders)
            segment_sizes = np.bincount(segment[warm], minlength=n_segments)
            segment_share = segment_holders[:, avail]
            segment_share /= np.maximum(segment_sizes, 1).astype(np.float32)[:, None]
            mix = sp.csr_matrix(
                (np.ones(len(warm), dtype=np.float32), (clusterer.labels_, segment[warm])),
                shape=(n_clusters, n_segments)).toarray()
            mix /= np.maximum(mix.sum(axis=1, keepdims=True), 1.0)
            prior = mix @ segment_share
            del segment_share
        else:
            prior = np.zeros((n_clusters, len(avail)), dtype=np.float32)
        shrinkage: float | None = None
        if config.candidates.popularity_blend > 0:
            shrinkage = (estimate_shrinkage(n_history[:n_clusters],
                                            config.candidates.min_shrinkage)
                         if config.candidates.shrinkage == "auto"
                         else float(config.candidates.shrinkage))
        scores = cluster_scores(item_centroids[:n_clusters], factors.package_factors[avail],
                                holders, n_history[:n_clusters], prior, config.candidates,
                                shrinkage)
        del holders, prior
        if fallback is not None:  # global popularity: holder share over every user
            cluster_holders = np.vstack([cluster_holders,
                                         cluster_holders.sum(axis=0, keepdims=True)])
            everyone = cluster_holders[-1, avail] / np.float32(max(1, len(warm)))
            scores = np.vstack([scores, everyone[None, :].astype(scores.dtype)])
        coverage_note = "computed from server-visible purchases/downloads × sticker labels"
        shares = demand = label_ids = None
        if data.stickers is None:
            coverage_note = "skipped: dataset has no stickers table (no labels)"
        else:
            shares, label_ids = data.label_shares or package_label_matrix(
                data.stickers, data.matrix.package_ids)
            if len(label_ids) == 0:
                coverage_note = "skipped: no sticker carries a label"
                shares = label_ids = None
            else:
                demand = holder_label_demand(cluster_holders, shares)
        del cluster_holders
        lists = select_candidates(scores, available, config.candidates, shares, demand,
                                  label_ids)
    return Stage1Fit(factors, encoder, encoded_combo, combo, clusterer, warm, user_cluster,
                     from_features, feature_cluster, item_centroids, feature_centroids,
                     n_history, assigner, lists, coverage_note, float(feature_scale), kept,
                     cluster_centroids, fallback, shrinkage)


def evaluate_stage1(data: Stage1Data, fit: Stage1Fit, config: Stage1Config, *,
                    own_top_k: np.ndarray | None = None) -> dict[str, Any]:
    """The recall table of ``fit`` on ``data``'s evaluation window (empty without one).

    ``own_top_k`` is :func:`own_top_k_of` already searched (else it is searched here).
    """
    holdout = data.matrix.holdout
    if holdout is None:
        return {}
    train = data.matrix.train
    features = tuple(config.evaluation.segment_features)
    segment, n_segments = data.segments.codes(features)
    language, n_languages = data.segments.codes(["language"])
    if fit.segment_holders is not None and set(features) <= set(fit.segment_holders[0]):
        # Each of the prior's (finer) segments lies in one evaluation segment and one
        # language: their holder counts add up, without another pass over the matrix.
        _, fine, fine_holders = fit.segment_holders
        first = first_of_each(fine, len(fine_holders))
        present = first >= 0
        parent = np.zeros(len(fine_holders), dtype=np.int64)
        parent[present] = segment[first[present]]
        segment_holders = aggregate_groups(fine_holders, parent, n_segments)
        parent[present] = language[first[present]]
        language_holders = aggregate_groups(fine_holders, parent, n_languages)
    else:
        segment_holders = holder_counts(train, segment, n_segments)
        parent = np.zeros(n_segments, dtype=np.int64)
        if "language" in features or n_languages == 1:
            first = first_of_each(segment, n_segments)
            parent[first >= 0] = language[first[first >= 0]]
            language_holders = aggregate_groups(segment_holders, parent, n_languages)
        else:
            language_holders = holder_counts(train, language, n_languages)
    popularity = {
        "global": (language_holders.sum(axis=0, keepdims=True),
                   np.zeros(train.shape[0], dtype=np.int64)),
        "language": (language_holders, language),
        "segment": (segment_holders, segment),
    }
    report = recall_report(
        holdout, train, data.packages["available"].to_numpy(),
        fit.lists.packages, fit.user_cluster, fit.feature_cluster,
        fit.factors.user_factors, fit.factors.package_factors, popularity,
        config.evaluation.k, config.als.popularity_prior, own_top_k,
    )
    report["phase"] = data.phase
    report["fit_end"] = data.matrix.fit_end
    return report


def own_top_k_of(data: Stage1Data, factors: FactorModel, config: Stage1Config
                 ) -> np.ndarray | None:
    """The evaluation users' own top-k that :func:`evaluate_stage1` reports (None without
    an evaluation window).

    ``k`` is the recall cut-off the report uses: ``evaluation.k``, at most the lists'
    length ``min(n_candidates, available packages)``.
    """
    holdout = data.matrix.holdout
    if holdout is None:
        return None
    available = data.packages["available"].to_numpy()
    k = min(config.evaluation.k, config.candidates.n_candidates, int(available.sum()))
    return evaluation_top_k(holdout, data.matrix.train, available, factors.user_factors,
                            factors.package_factors, k, config.als.popularity_prior)


def build_stage1(
    dataset: Dataset | str | Path,
    config: Stage1Config | None = None,
    var: str | Path | None = None,
    show_progress: bool = False,
    *,
    version: str | None = None,
) -> Path:
    """Run the stage-1 job and publish ``<var>/stage1/<version>/`` (``LATEST`` updated).

    The job fits only on interactions before the dataset split's ``test_start``
    (:func:`data.time_split`) and evaluates forward in time on ``[test_start, end)``.

    Parameters
    ----------
    dataset : Dataset, str or Path
        A dataset, its directory, or its name under ``<var>/data/``.
    config : Stage1Config, optional
        Defaults to ``Stage1Config()``.
    var : str or Path, optional
        Artifact root (default: ``$STICKERS_VAR`` or ``./var``).
    show_progress : bool
        Progress bars on stderr.
    version : str, optional
        Version name (default: a new timestamped one).

    Returns
    -------
    Path
        The published version directory.
    """
    config = config or Stage1Config()
    root = var_root(var)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with progress("stage 1", total=len(_STEPS), show=show_progress) as bar, faiss_threads(
        config.clusters.faiss_threads
    ), ThreadPoolExecutor(1, thread_name_prefix="verify-input") as checker, ThreadPoolExecutor(
        1, thread_name_prefix="own-top-k"
    ) as searcher:

        checksums: Future[None] | None = None

        @contextlib.contextmanager
        def step(name: str) -> Iterator[None]:
            bar.update(description=f"stage 1: {name}")
            t0 = time.perf_counter()
            try:
                yield
            except Exception as exc:
                # A corrupt input file may fail to parse before its checksum is done:
                # report the corruption, which names the file, rather than the symptom.
                corrupt = checksums.exception() if checksums is not None else None
                if corrupt is not None:
                    raise corrupt from exc
                raise
            timings[name] = round(time.perf_counter() - t0, 3)
            log.debug("step done", step=name, seconds=timings[name])
            bar.advance()

        with step("load"):
            # Sizes are checked now; the sha256 sums in a thread while the tables load and
            # the matrix is built. Nothing is published before they match (see "write").
            ds = resolve_dataset(dataset, root, checksums=False)
            checksums = (None if isinstance(dataset, Dataset) else
                         checker.submit(verify_checksums, ds.root, ds.manifest))

        with step("matrix"):
            data = load_stage1_data(ds, config, "test", background=searcher)
            matrix = data.matrix
            log.info("building stage 1", dataset=str(ds.root), users=data.users.height,
                     packages=data.packages.height, fit_end=matrix.fit_end)
            available = data.packages["available"].to_numpy()

        # The evaluation's own top-k search needs only the factors: it runs in a thread
        # (faiss releases the GIL) while the mostly single-threaded cluster and
        # candidates steps run, on the core they leave idle.
        own: Future[np.ndarray | None] | None = None

        def start_own_top_k(factors: FactorModel) -> None:
            nonlocal own
            if config.evaluation.enabled:
                own = searcher.submit(_own_top_k_thread, data, factors, config)

        fit = fit_stage1(data, config, show_progress=show_progress, step=step,
                         on_factors=start_own_top_k)

        with step("evaluate"):
            evaluation = evaluate_stage1(data, fit, config,
                                         own_top_k=own.result() if own else None)
            if evaluation:
                log.info("offline metrics", recall=evaluation["recall"])

        n_clusters = fit.n_lists
        metrics: dict[str, Any] = {
            "evaluation": evaluation,
            "split": {**data.split.to_parameters(), "source": data.split.source,
                      "fit_end": matrix.fit_end},
            "matrix": {
                "users": matrix.shape[0], "packages": matrix.shape[1],
                "available_packages": int(available.sum()),
                "interactions": matrix.n_interactions,
                "fit_interactions": matrix.n_fit_interactions,
                "train_pairs": int(matrix.train.nnz),
                "held_out_pairs": matrix.holdout.n_pairs if matrix.holdout else 0,
                "users_with_history": len(fit.warm),
                "users_from_features": int(fit.from_features.sum()),
            },
            "clusters": _cluster_metrics(fit.clusterer, fit.n_history,
                                         np.bincount(fit.user_cluster, minlength=n_clusters),
                                         config, fit.fallback_cluster),
            "label_coverage": _coverage_metrics(fit.lists.coverage, fit.lists.n_swapped,
                                                fit.coverage_note),
            "als_fit_seconds": round(fit.factors.seconds, 3),
            "shrinkage_used": (None if fit.shrinkage is None else round(fit.shrinkage, 1)),
        }

        with step("write"):
            if checksums is not None:
                checksums.result()  # raises ArtifactError naming a corrupt input file
            version = version or new_version()
            destination = root / KIND / version
            input_fp = fingerprint(
                sorted((name, info["sha256"]) for name, info in ds.manifest.files.items()),
                config.model_dump(),
            )
            parameters = {**config.model_dump(), "split": data.split.to_parameters(),
                          "fit_end": matrix.fit_end}
            with publish_artifact(destination, kind=KIND, parameters=parameters,
                                  input_fingerprint=input_fp) as writer:
                out = writer.path
                np.save(out / "package_ids.npy", matrix.package_ids.astype(np.int32))
                np.save(out / "package_factors.npy", fit.factors.package_factors)
                np.save(out / "item_centroids.npy", fit.item_centroids.astype(np.float32))
                np.save(out / "cluster_centroids.npy",
                        fit.cluster_centroids if fit.cluster_centroids is not None
                        else fit.clusterer.cluster_centers_)
                np.save(out / "feature_centroids.npy",
                        fit.feature_centroids.astype(np.float32))
                n_users = np.bincount(fit.user_cluster, minlength=n_clusters)
                pl.DataFrame({
                    "cluster_id": np.arange(n_clusters, dtype=np.int32),
                    "n_users": n_users.astype(np.int32),
                    "n_history": fit.n_history.astype(np.int32),
                }).write_parquet(out / "clusters.parquet")
                pl.DataFrame({
                    "user_id": matrix.user_ids.astype(np.int32),
                    "cluster_id": fit.user_cluster.astype(np.int32),
                    "from_features": fit.from_features,
                }).write_parquet(out / "user_clusters.parquet")
                fit.lists.table(matrix.package_ids).write_parquet(out / "candidates.parquet")
                fit.lists.coverage.write_parquet(out / "label_coverage.parquet")
                writer.write_json("cold_start.json", {
                    "encoder": fit.encoder.to_dict(), "smoothing": COLD_START_SMOOTHING,
                    "feature_scale": fit.feature_scale,
                    "fallback_cluster": fit.fallback_cluster,
                })
                (out / "config.json").write_text(config.to_json())
                timings["write"] = round(time.perf_counter() - started - sum(timings.values()),
                                         3)
                timings["total"] = round(time.perf_counter() - started, 3)
                metrics["timings_s"] = timings
                writer.metrics = metrics
                writer.extra = {
                    "dataset": {"name": ds.name, "path": str(ds.root),
                                "version": ds.manifest.version},
                    "label_coverage": fit.coverage_note,
                }
    log.info("stage 1 published", path=str(destination), seconds=timings["total"])
    return destination


def _own_top_k_thread(data: Stage1Data, factors: FactorModel, config: Stage1Config
                      ) -> np.ndarray | None:
    faiss.omp_set_num_threads(1)  # as the job's main thread (OpenMP settings are per thread)
    with one_search_thread():  # one core; the clustering keeps the other
        return own_top_k_of(data, factors, config)


def _cluster_metrics(clusterer: UserClusterer, n_history: np.ndarray, n_users: np.ndarray,
                     config: Stage1Config, fallback: int | None = None) -> dict[str, Any]:
    k = clusterer.n_clusters_
    fallback_users = int(n_users[fallback]) if fallback is not None else 0
    n_history, n_users = n_history[:k], n_users[:k]
    q = np.percentile(n_history, [0, 10, 50, 90, 100]) if len(n_history) else [0] * 5
    return {
        "n_clusters": int(clusterer.n_clusters_),
        "fallback_cluster": fallback,
        "fallback_users": fallback_users,
        "requested": config.clusters.n_clusters,
        "kmeans_k": int(clusterer.k_used_),
        "merged_for_k_anonymity": int(clusterer.n_merged_),
        "min_cluster_size": config.clusters.min_cluster_size,
        "size_with_history": {"min": int(q[0]), "p10": float(q[1]), "median": float(q[2]),
                              "p90": float(q[3]), "max": int(q[4])},
        "size_all_users": {"min": int(n_users.min()), "max": int(n_users.max())},
    }


def _coverage_metrics(coverage: pl.DataFrame, n_swapped: int, note: str) -> dict[str, Any]:
    if coverage.height == 0:
        return {"status": note}
    before = coverage.select((pl.col("n_in_top") >= pl.col("required")).mean()).item()
    return {
        "status": note,
        "demanded_pairs": coverage.height,
        "labels_per_cluster": round(coverage.height / coverage["cluster_id"].n_unique(), 2),
        "covered_share_before_repair": round(float(before), 4),
        "covered_share": round(float(coverage["covered"].mean()), 4),  # type: ignore[arg-type]
        "packages_swapped_in": n_swapped,
    }
