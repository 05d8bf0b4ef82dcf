"""Experiment: can any shared list assigned by taste beat demographic popularity by 5 %?

Issue #16 asks the cluster lists for recall@100 ≥ 1.05× the best popularity baseline.
On the generated worlds they only match the finest demographic segment. This
experiment says whether that is our clustering's fault or the world's: it generates
worlds that differ only in how much of a user's taste is individual (the knobs
``taste_individual`` and ``demographic_prior`` of :class:`data.WorldConfig`; every other
knob and the seed stay) and, on each, compares on the same held-out users:

* our cluster lists (``stickers candidates build`` with the given config, defaults
  otherwise) and every popularity baseline of the stage-1 report;
* popularity of the *taste segment* (language × age × gender: exactly the
  demographics the generator puts into a taste), a reference, not a baseline;
* an **oracle**: clusters of the same count made by the same k-means (with the same
  k-anonymity merge) on the users' TRUE unit taste vectors joined with their scaled
  one-hot demographics, as our clustering joins ALS factors with them, read from the
  world's ground truth (``var/truth/<world>/users.parquet``, which no model reads);
  each cluster's list is its members' popularity before the split, plain (``members``)
  or shrunk towards the members' segments as ours is (``shrunk``). That is the best a
  shared list assigned by taste can be expected to do; its two settings (demographic
  weight, plain or shrunk) are chosen on the validation split, never on the report's;
* a **personal oracle** (a reference above any shared list): each user's own top-k of
  packages they do not hold, ranked by the generator's choice probability from the true
  taste, ``log P(creator | u) + log P(package | creator, u)`` with ``P(k | u) ∝ pop_k ·
  exp(β cos(t_u, c_k))`` and, within a creator, ``∝ quality_p · exp(β cos(t_u, v_p))``
  (the generator's best-of-three-by-quality draw, smoothed).

Every figure is recall@k on new packages after the split, as :func:`candidate_gen.
evaluate_stage1` measures it: the ``test`` phase (fit before ``test_start``, scored on
non-validation users) is reported; the ``validation`` phase (fit before
``validation_start``, scored on validation devices) is used for the oracle's choice
and reported beside it.

    python -m bench.bench_stage1_oracle                      # the default five worlds
    python -m bench.bench_stage1_oracle --world "" --world taste_individual=0 \
        --size small --world-set n_users=50000 --set clusters.n_clusters=256

Worlds are generated under ``<var>/data`` (named ``<size>-<knobs>``) unless present and
deleted when done unless ``--keep-worlds`` (worlds that were there are never deleted). Writes
``var/bench/stage1_oracle.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from bench._results import write_results
from candidate_gen import (
    Stage1Config,
    evaluate_stage1,
    fit_stage1,
    load_stage1_data,
    resolve_dataset,
    segment_codes,
)
from candidate_gen.clusters import (
    UserClusterer,
    UserFeatureEncoder,
    estimate_shrinkage,
    top_stable,
)
from candidate_gen.metrics import BASELINES, holder_counts, list_recall
from data import (
    ConfigError,
    dataset_dir,
    ensure_catalog,
    generate_world,
    load_catalog,
    read_manifest,
    var_root,
    world_config,
)

__all__ = [
    "DEFAULT_WORLDS", "ORACLE_LIST_KINDS", "ORACLE_WEIGHTS", "TASTE_SEGMENT", "OracleLists",
    "TrueChoice", "main", "nearest_centre", "oracle_lists", "oracle_space",
    "personal_oracle_top_k", "run_world", "segment_prior", "shared_lists", "source_ids",
    "world_name",
]

DEFAULT_WORLDS: tuple[str, ...] = (
    "", "taste_individual=0", "taste_individual=1.8", "taste_individual=3.6",
    "demographic_prior=0",
)
"""Knob settings of the default worlds ("" = the preset as it is: taste_individual 0.9)."""
ORACLE_WEIGHTS: tuple[float, ...] = (0.0, 1.5, 3.0)
"""Norms of the demographic block next to the unit taste in the oracle's clustering."""
ORACLE_LIST_KINDS: tuple[str, ...] = ("members", "shrunk")
"""``members``: the cluster members' popularity; ``shrunk``: towards their segments."""
TASTE_SEGMENT: tuple[str, ...] = ("language", "age_bucket", "gender")
"""The demographics the generator puts into a taste (region and subscriber are not)."""
TARGET = 1.05


def world_name(size: str, knobs: Sequence[str]) -> str:
    """``small`` for no knob, else ``small-<k=v>-…`` with the keys sorted (no prefix)."""
    items = sorted(k.strip().removeprefix("world.") for k in knobs if k.strip())
    return "-".join([size, *items])


def oracle_space(taste: np.ndarray, demographics: np.ndarray, weight: float,
                 n_blocks: int) -> np.ndarray:
    """The oracle's clustering space: unit taste joined with scaled one-hot demographics.

    The same construction as the job's (unit ALS factors next to one-hot features, each
    block scaled by ``weight / sqrt(n_blocks)``), with the true taste in place of the
    factors.

    Parameters
    ----------
    taste : ndarray, shape (n, dim)
        True taste vectors (the generator's are unit already; normalised again).
    demographics : ndarray, shape (n, n_onehot)
        One-hot features (:class:`candidate_gen.clusters.UserFeatureEncoder`).
    weight : float
        Norm of the whole demographic block when every block has a value.
    n_blocks : int
        Number of one-hot blocks (features).

    Returns
    -------
    ndarray of float32, shape (n, dim + n_onehot)
    """
    unit = taste / np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)
    scale = weight / np.sqrt(max(1, n_blocks))
    return np.hstack([unit, scale * demographics]).astype(np.float32)


def nearest_centre(x: np.ndarray, centres: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Index of the nearest row of ``centres`` (k, d) for every row of ``x`` (n, d) (int64)."""
    out = np.empty(len(x), dtype=np.int64)
    c2 = np.einsum("ij,ij->i", centres, centres)
    for lo in range(0, len(x), block):
        chunk = x[lo:lo + block]
        out[lo:lo + block] = np.argmin(c2[None, :] - 2.0 * chunk @ centres.T, axis=1)
    return out


def shared_lists(train: sp.csr_matrix, member_of: np.ndarray, n_lists: int,
                 available: np.ndarray, k: int, prior: np.ndarray | None = None,
                 shrinkage: float | str = 0.0, min_shrinkage: float = 0.0) -> np.ndarray:
    """Each group's top-k available packages by its members' (shrunk) holder share.

    A package's score in group ``g`` is ``(holders_g + m·prior_g) / (n_g + m)``, where
    ``holders_g`` counts the group's members holding it in ``train``, ``n_g`` is the
    number of members with history and ``m = shrinkage``; ``m = 0`` is plain popularity
    among the members.

    Parameters
    ----------
    train : csr_matrix, shape (n_users, n_packages)
        Interactions before the split (non-zero = held).
    member_of : ndarray of int, shape (n_users,)
        Group of every user; -1 leaves a user out.
    n_lists : int
    available : ndarray of bool, shape (n_packages,)
    k : int
    prior : ndarray, shape (n_lists, n_packages), optional
        Holder share each group is shrunk towards (needed when ``shrinkage > 0``).
    shrinkage : float or "auto"
        ``"auto"``: the median group's members with history, at least
        ``min_shrinkage``, as the job's (:func:`candidate_gen.estimate_shrinkage`).
    min_shrinkage : float
        The floor of ``"auto"``.

    Returns
    -------
    ndarray of int64, shape (n_lists, min(k, available packages))
        Package indices, best first, ties by package index.
    """
    member_of = np.asarray(member_of, dtype=np.int64)
    held = train.copy()
    held.data = np.ones_like(held.data)
    held.eliminate_zeros()
    counts = holder_counts(held, member_of, n_lists)
    history = (np.diff(held.indptr) > 0) & (member_of >= 0)
    n_members = np.bincount(member_of[history], minlength=n_lists).astype(np.float64)
    score = counts.astype(np.float64)
    if shrinkage == "auto":
        shrinkage = estimate_shrinkage(n_members, min_shrinkage)
    shrinkage = float(shrinkage)
    if shrinkage > 0:
        if prior is None:
            raise ValueError("shrinkage > 0 needs a prior")
        score += shrinkage * prior
    score /= (n_members + shrinkage)[:, None] if shrinkage > 0 else 1.0
    avail = np.flatnonzero(available)
    n = min(k, len(avail))
    return np.stack([avail[top_stable(score[g, avail], n)] for g in range(n_lists)]) \
        if n_lists else np.empty((0, n), dtype=np.int64)


def segment_prior(train: sp.csr_matrix, member_of: np.ndarray, n_lists: int,
                  segment: np.ndarray, n_segments: int) -> np.ndarray:
    """Each group's holder share in its members' segments, as the job's prior.

    The share of users with history in segment ``s`` holding a package, averaged over a
    group's members with history (float64, shape (n_lists, n_packages)).
    """
    held = train.copy()
    held.data = np.ones_like(held.data)
    history = np.diff(held.indptr) > 0
    seg_counts = holder_counts(held, np.where(history, segment, -1), n_segments)
    seg_sizes = np.bincount(segment[history], minlength=n_segments)
    seg_share = seg_counts / np.maximum(seg_sizes, 1)[:, None]
    rows = history & (member_of >= 0)
    mix = sp.csr_matrix((np.ones(int(rows.sum())), (member_of[rows], segment[rows])),
                        shape=(n_lists, n_segments)).toarray()
    mix /= np.maximum(mix.sum(axis=1, keepdims=True), 1.0)
    return np.asarray(mix @ seg_share, dtype=np.float64)


@dataclass(frozen=True)
class OracleLists:
    """The oracle's clusters and lists.

    Attributes
    ----------
    user_cluster : ndarray of int64, shape (n_users,)
        Cluster of every user (k-means on users with history; the rest by nearest centre).
    lists : ndarray of int64, shape (n_clusters, k)
    n_clusters : int
    """

    user_cluster: np.ndarray
    lists: np.ndarray
    n_clusters: int


def oracle_lists(space: np.ndarray, train: sp.csr_matrix, available: np.ndarray,
                 config: Stage1Config, kind: str, segment: np.ndarray | None = None,
                 n_segments: int = 1, shrinkage: float | str | None = None) -> OracleLists:
    """Cluster ``space`` as the job clusters its own, then list each cluster's popularity.

    Parameters
    ----------
    space : ndarray of float32, shape (n_users, d)
        The clustering space (:func:`oracle_space`), rows in matrix order.
    train : csr_matrix, shape (n_users, n_packages)
    available : ndarray of bool, shape (n_packages,)
    config : Stage1Config
        ``clusters`` (count, k-anonymity, iterations, sample, seed), the list length
        ``candidates.n_candidates`` and, for ``shrunk``, ``candidates.shrinkage``.
    kind : ``"members"`` or ``"shrunk"``
    segment : ndarray of int, shape (n_users,), optional
        Segment of every user (the prior of ``shrunk``).
    n_segments : int
    shrinkage : float or "auto", optional
        Pseudo-users of ``shrunk``'s prior (default ``candidates.shrinkage``; ``"auto"``
        the median cluster's members with history, as the job).
    """
    if kind not in ORACLE_LIST_KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {ORACLE_LIST_KINDS}")
    warm = np.flatnonzero(np.diff(train.indptr) > 0)
    cl = config.clusters
    clusterer = UserClusterer(cl.n_clusters, cl.min_cluster_size, cl.niter,
                              cl.max_points_per_centroid, config.seed).fit(space[warm])
    user_cluster = nearest_centre(space, clusterer.cluster_centers_)
    user_cluster[warm] = clusterer.labels_
    k = clusterer.n_clusters_
    if kind == "members":
        lists = shared_lists(train, user_cluster, k, available, config.candidates.n_candidates)
    else:
        if segment is None:
            raise ValueError("kind='shrunk' needs each user's segment")
        prior = segment_prior(train, user_cluster, k, segment, n_segments)
        m = shrinkage if shrinkage is not None else config.candidates.shrinkage
        lists = shared_lists(train, user_cluster, k, available,
                             config.candidates.n_candidates, prior, m,
                             config.candidates.min_shrinkage)
    return OracleLists(user_cluster, lists, k)


@dataclass(frozen=True)
class TrueChoice:
    """The generator's choice model of one world, from its ground truth.

    Attributes
    ----------
    creator_style : ndarray of float32, shape (n_creators, dim)
        Unit styles.
    creator_log_pop : ndarray of float64, shape (n_creators,)
    package_style : ndarray of float32, shape (n_packages, dim)
        Unit styles, rows in package-index (matrix column) order.
    package_log_quality : ndarray of float64, shape (n_packages,)
    package_creator : ndarray of int64, shape (n_packages,)
    beta : float
        ``taste_beta`` of the world.
    """

    creator_style: np.ndarray
    creator_log_pop: np.ndarray
    package_style: np.ndarray
    package_log_quality: np.ndarray
    package_creator: np.ndarray
    beta: float

    def log_choice(self, taste: np.ndarray) -> np.ndarray:
        """``log P(package | user)`` of every package (float64, shape (n, n_packages)).

        ``taste`` (n, dim) are unit tastes. Creator by ``pop · exp(β cos)``, then the
        package within its creator by ``quality · exp(β cos)``.
        """
        creator = self.creator_log_pop[None, :] + self.beta * (taste @ self.creator_style.T)
        creator -= np.logaddexp.reduce(creator, axis=1, keepdims=True)
        within = self.package_log_quality[None, :] + self.beta * (taste @ self.package_style.T)
        n_creators = len(self.creator_log_pop)
        norm = np.full((len(taste), n_creators), -np.inf)
        for c in range(n_creators):  # log-sum-exp over each creator's packages
            cols = self.package_creator == c
            if cols.any():
                norm[:, c] = np.logaddexp.reduce(within[:, cols], axis=1)
        return creator[:, self.package_creator] + within - norm[:, self.package_creator]


def personal_oracle_top_k(choice: TrueChoice, taste: np.ndarray, available: np.ndarray,
                          owned: sp.csr_matrix, k: int, block: int = 2048) -> np.ndarray:
    """Each user's top-k available packages they do not own, by true choice probability.

    Parameters
    ----------
    choice : TrueChoice
    taste : ndarray, shape (n, dim)
        Unit true tastes of the users.
    available : ndarray of bool, shape (n_packages,)
    owned : csr_matrix, shape (n, n_packages)
        Packages each user holds already (excluded).
    k : int
    block : int
        Users scored at once (bounds memory at ``block × n_packages`` floats).

    Returns
    -------
    ndarray of int64, shape (n, min(k, available packages))
    """
    n_avail = int(available.sum())
    n = min(k, n_avail)
    out = np.empty((len(taste), n), dtype=np.int64)
    for lo in range(0, len(taste), block):
        score = choice.log_choice(taste[lo:lo + block])
        score[:, ~available] = -np.inf
        rows = owned[lo:lo + block]
        score[np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices] = -np.inf
        for i in range(len(score)):
            out[lo + i] = top_stable(score[i], n)
    return out


def source_ids(ds: Any, table: str) -> np.ndarray:
    """Ids in the log's source world of the dataset's users or packages, in id order.

    A log loaded by ``stickers data load-interactions`` renumbers its ids and keeps the
    map (``id_maps/<table>.parquet``: id → ``external_id``); for a log exported from a
    generated world (``small-nodemo`` from ``small``) the external ids are the world's,
    which its ground truth is keyed by. A generated world is its own source.

    Parameters
    ----------
    ds : data.Dataset
    table : ``"users"`` or ``"packages"``

    Returns
    -------
    ndarray of int64, shape (n_rows,)
        The source id of each row of ``table`` sorted by its own id.
    """
    key = "user_id" if table == "users" else "package_id"
    ids = ds.table(table).sort(key)[key].to_numpy()
    maps = Path(ds.root) / "id_maps" / f"{table}.parquet"
    if not maps.is_file():
        return ids.astype(np.int64)
    mapped = pl.read_parquet(maps).sort(key)
    if not np.array_equal(mapped[key].to_numpy(), ids):
        raise ConfigError(f"{maps}: the map's ids are not the dataset's {table}")
    try:
        return mapped["external_id"].cast(pl.Int64).to_numpy()
    except pl.exceptions.InvalidOperationError as err:
        raise ConfigError(f"{maps}: external ids are not a generated world's integer "
                          "ids; this log has no ground truth") from err


def _rows_of(truth_ids: np.ndarray, wanted: np.ndarray, where: Path) -> np.ndarray:
    """Row of ``truth_ids`` (sorted) holding each of ``wanted``; error if one is missing."""
    rows = np.searchsorted(truth_ids, wanted)
    rows = np.minimum(rows, max(0, len(truth_ids) - 1))
    if len(wanted) and (len(truth_ids) == 0 or not np.array_equal(truth_ids[rows], wanted)):
        raise ConfigError(f"{where}: the ground truth does not hold every id of the dataset")
    return rows


def _true_choice(var: Path, name: str, source: Any, package_ids: np.ndarray) -> TrueChoice:
    """The choice model of world ``name`` over ``package_ids`` (its ids, in matrix order).

    ``source`` is the generated world's dataset (its packages table gives the creators).
    """
    truth = var / "truth" / name
    creators = pl.read_parquet(truth / "creators.parquet").sort("creator_id")
    packages = pl.read_parquet(truth / "packages.parquet").sort("package_id")
    by_id = source.table("packages").select("package_id", "creator_id").sort("package_id")
    if not np.array_equal(packages["package_id"].to_numpy(), by_id["package_id"].to_numpy()):
        raise ConfigError(f"{truth}: the ground truth's packages are not the world's")
    rows = _rows_of(packages["package_id"].to_numpy(), package_ids, truth)
    creator_index = np.searchsorted(creators["creator_id"].to_numpy(),
                                    by_id["creator_id"].to_numpy()[rows])
    return TrueChoice(
        np.asarray(creators["style"].to_list(), dtype=np.float32),
        np.log(creators["popularity"].to_numpy()),
        np.asarray(packages["style"].to_list(), dtype=np.float32)[rows],
        np.log(packages["quality"].to_numpy())[rows],
        creator_index.astype(np.int64),
        float(source.manifest.parameters["taste_beta"]),
    )


def _true_taste(var: Path, name: str, user_ids: np.ndarray) -> np.ndarray:
    """True tastes of world ``name``'s users ``user_ids`` (its ids), shape (n, dim)."""
    truth = var / "truth" / name
    read_manifest(truth, kind="truth", checksums=False)
    users = pl.read_parquet(truth / "users.parquet", columns=["user_id", "taste"])
    users = users.sort("user_id")
    rows = _rows_of(users["user_id"].to_numpy(), user_ids, truth)
    return np.asarray(users["taste"].to_list(), dtype=np.float32)[rows] if users.height \
        else np.empty((0, 0), dtype=np.float32)


def _phase(ds: Any, taste: np.ndarray, config: Stage1Config, phase: str,
           weights: Sequence[float], kinds: Sequence[str],
           choice: TrueChoice | None,
           shrinkages: Sequence[float] | None = None) -> dict[str, Any]:
    """Our lists, the baselines and every oracle variant on one phase of the split."""
    data = load_stage1_data(ds, config, phase)  # type: ignore[arg-type]
    fit = fit_stage1(data, config)
    report = evaluate_stage1(data, fit, config)
    holdout = data.matrix.holdout
    assert holdout is not None
    train, users = data.matrix.train, data.users
    available = data.packages["available"].to_numpy()
    k = report["k"]
    taste_seg, n_taste = segment_codes(users, TASTE_SEGMENT)
    ts_lists = shared_lists(train, taste_seg, n_taste, available, k)
    recall: dict[str, float] = dict(report["recall"])
    recall["taste_segment_popularity"] = round(
        list_recall(holdout.test, ts_lists, taste_seg[holdout.rows]), 5)
    if choice is not None:
        personal = personal_oracle_top_k(choice, taste[holdout.rows], available,
                                         train[holdout.rows], k)
        recall["personal_oracle"] = round(
            list_recall(holdout.test, personal, np.arange(len(holdout.rows))), 5)
    features = list(config.clusters.features)
    encoder = UserFeatureEncoder(features).fit(users)
    demographics = encoder.transform(users)
    segment, n_segments = segment_codes(users, config.candidates.segment_features)
    oracle: dict[str, float] = {}
    oracle_new: dict[str, float] = {}
    for weight in weights:
        space = oracle_space(taste, demographics, weight, len(features))
        variants: list[tuple[str, str, float | None]] = []
        for kind in kinds:
            if kind == "shrunk" and shrinkages:
                variants += [(f"w={weight:g},shrunk,m={m:g}", kind, m) for m in shrinkages]
            else:
                variants.append((f"w={weight:g},{kind}", kind, None))
        for key, kind, m in variants:
            result = oracle_lists(space, train, available, config, kind, segment, n_segments,
                                  shrinkage=m)
            lists = result.lists[:, :k]
            oracle[key] = round(list_recall(holdout.test, lists,
                                            result.user_cluster[holdout.rows]), 5)
            if len(holdout.new_rows):
                oracle_new[key] = round(list_recall(holdout.new_test, lists,
                                                    result.user_cluster[holdout.new_rows]), 5)
    return {"recall": recall, "oracle": oracle, "oracle_new_users": oracle_new,
            "best_baseline": report["best_baseline"], "eval_users": report["eval_users"],
            "held_out_pairs": report["held_out_pairs"], "n_clusters": fit.clusterer.n_clusters_,
            "new_users": report.get("new_users", {})}


def run_world(ds: Any, taste: np.ndarray, config: Stage1Config,
              weights: Sequence[float] = ORACLE_WEIGHTS,
              kinds: Sequence[str] = ORACLE_LIST_KINDS,
              choice: TrueChoice | None = None,
              shrinkages: Sequence[float] | None = None) -> dict[str, Any]:
    """Both phases of one world; the oracle variant is the best on validation.

    ``shrinkages`` (optional) are the pseudo-user counts tried for the ``shrunk`` oracle
    (default ``candidates.shrinkage`` alone); like the weights, chosen on validation.

    Returns
    -------
    dict
        ``validation`` and ``test`` (each: ``recall`` of our lists and every baseline,
        ``oracle`` per variant, ...), ``oracle_choice`` (the validation's best variant),
        and on the test phase the ratios ``cluster_vs_best_baseline``,
        ``oracle_vs_best_baseline`` and ``cluster_vs_oracle``.
    """
    validation = _phase(ds, taste, config, "validation", weights, kinds, choice, shrinkages)
    picked = max(validation["oracle"], key=lambda key: validation["oracle"][key])
    test = _phase(ds, taste, config, "test", weights, kinds, choice, shrinkages)
    best = max(BASELINES, key=lambda name: test["recall"][name])
    ours, oracle = test["recall"]["cluster_lists"], test["oracle"][picked]
    return {
        "validation": validation, "test": test, "oracle_choice": picked,
        "best_baseline": best, "best_baseline_recall": test["recall"][best],
        "oracle_recall": oracle,
        "cluster_vs_best_baseline": round(ours / test["recall"][best], 4),
        "oracle_vs_best_baseline": round(oracle / test["recall"][best], 4),
        "cluster_vs_oracle": round(ours / oracle, 4),
    }


def main(argv: list[str]) -> int:
    """Run the experiment; prints a table and writes ``var/bench/stage1_oracle.json``."""
    parser = argparse.ArgumentParser(prog="bench_stage1_oracle",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="World preset (tiny, small, large).")
    parser.add_argument("--world", dest="worlds", action="append", default=None,
                        metavar="KNOBS", help="Comma-separated world.KEY=VALUE knobs of one "
                        "world; repeatable; \"\" = the preset [default: the five of "
                        "DEFAULT_WORLDS].")
    parser.add_argument("--world-set", dest="world_set", action="append", default=[],
                        metavar="KEY=VALUE", help="A knob for every world (e.g. n_users=50000).")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="Stage-1 config override.")
    parser.add_argument("--keep-worlds", action="store_true",
                        help="Keep the worlds this run generated (deleted when done "
                        "otherwise; worlds already present are never deleted).")
    parser.add_argument("--truth-from", dest="truth_from", default=None, metavar="WORLD",
                        help="Take the ground truth of generated world WORLD, for a log "
                        "exported from it and loaded with its ids mapped (e.g. "
                        "--size small-nodemo --world \"\" --truth-from small); nothing is "
                        "generated.")
    parser.add_argument("--oracle-weight", dest="oracle_weights", action="append",
                        type=float, default=None, metavar="W",
                        help="Demographic weight of the oracle's clustering; repeatable "
                        f"[default: {', '.join(f'{w:g}' for w in ORACLE_WEIGHTS)}].")
    parser.add_argument("--oracle-shrinkage", dest="oracle_shrinkages", action="append",
                        type=float, default=None, metavar="M",
                        help="Pseudo-users of the shrunk oracle's prior; repeatable, chosen "
                        "on validation with the weight [default: candidates.shrinkage].")
    parser.add_argument("--no-personal-oracle", dest="personal", action="store_false",
                        help="Skip the personal oracle (a float64 users × packages score "
                        "per block: slow on the large world).")
    parser.add_argument("--output", default="stage1_oracle",
                        help="Name of the JSON under var/bench/ [stage1_oracle].")
    args = parser.parse_args(argv)
    var = var_root()
    config = Stage1Config().with_overrides(args.overrides)
    worlds = DEFAULT_WORLDS if args.worlds is None else tuple(args.worlds)
    weights = tuple(args.oracle_weights or ORACLE_WEIGHTS)
    catalog = None
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    loads: list[float] = []
    generated: list[str] = []
    started = time.perf_counter()
    for spec in worlds:
        knobs = [*args.world_set, *[k for k in spec.split(",") if k.strip()]]
        name = world_name(args.size, knobs)
        truth_name = args.truth_from or name
        if args.truth_from is not None:
            if not (dataset_dir(var, name).is_dir() and (var / "truth" / truth_name).is_dir()):
                raise ConfigError(f"--truth-from {truth_name}: needs {dataset_dir(var, name)} "
                                  f"and {var / 'truth' / truth_name}")
        elif not (dataset_dir(var, name).is_dir() and (var / "truth" / name).is_dir()):
            catalog = catalog or load_catalog(ensure_catalog(var))
            print(f"generating {name}", flush=True)
            generate_world(world_config(args.size, knobs, name=name), catalog, var,
                           show_progress=False)
            generated.append(name)
        ds = resolve_dataset(name, var)
        source = resolve_dataset(truth_name, var) if args.truth_from else ds
        taste = _true_taste(var, truth_name, source_ids(ds, "users"))
        print(f"{name}: our lists, baselines and the oracle on both phases", flush=True)
        choice = (_true_choice(var, truth_name, source, source_ids(ds, "packages"))
                  if args.personal else None)
        out = run_world(ds, taste, config, weights=weights, choice=choice,
                        shrinkages=args.oracle_shrinkages)
        loads.append(os.getloadavg()[0])
        results[name] = {"knobs": knobs, **out}
        r = out["test"]["recall"]
        rows.append([
            ",".join(spec.split(",")) or "(preset)", r["cluster_lists"], r["global_popularity"],
            r["language_popularity"], r["segment_popularity"], r["demographics_assignment"],
            r["taste_segment_popularity"], out["oracle_recall"], out["oracle_choice"],
            out["cluster_vs_best_baseline"], out["oracle_vs_best_baseline"],
            out["cluster_vs_oracle"], r.get("personal_oracle"),
        ])
    columns = ["world knobs", "cluster lists", "global", "language", "segment",
               "demographics assignment", "taste segment (ref.)", "oracle",
               "oracle (validation's choice)", "ours ÷ best", "oracle ÷ best", "ours ÷ oracle",
               "personal oracle (ref.)"]
    meta = {
        "size": args.size, "world_set": args.world_set, "overrides": args.overrides,
        "config": config.model_dump(), "target": TARGET, "worlds": results,
        "oracle_weights": list(weights), "oracle_list_kinds": list(ORACLE_LIST_KINDS),
        "oracle_shrinkages": args.oracle_shrinkages, "truth_from": args.truth_from,
        "seconds": round(time.perf_counter() - started, 1), "load_average": loads,
    }
    write_results(args.output, columns, rows, meta)
    if not args.keep_worlds:
        for name in generated:
            shutil.rmtree(dataset_dir(var, name), ignore_errors=True)
            shutil.rmtree(var / "truth" / name, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
