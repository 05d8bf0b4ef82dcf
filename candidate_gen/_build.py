"""The stage-1 batch job: dataset → matrix → ALS → clusters → candidates → artifact.

Each step is timed; the timings, the offline metrics and the cluster size distribution
go into the manifest. The published ALS model is the one fitted on the train split, so
the factors are fitted once and the evaluation measures exactly what is published.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from candidate_gen._artifact import KIND
from candidate_gen._candidates import label_demand, package_label_matrix, select_candidates
from candidate_gen._clustering import UserClusterer, cluster_means
from candidate_gen._config import Stage1Config
from candidate_gen._factorization import fit_factors
from candidate_gen._features import ColdStartAssigner, UserFeatureEncoder
from candidate_gen._matrix import build_interaction_matrix
from candidate_gen._metrics import recall_report
from candidate_gen._search import faiss_threads
from data import (
    DataFileError,
    Dataset,
    dataset_dir,
    fingerprint,
    new_version,
    open_dataset,
    progress,
    publish_artifact,
    var_root,
    verify_checksums,
)

__all__ = ["build_stage1", "resolve_dataset"]

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


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def build_stage1(
    dataset: Dataset | str | Path,
    config: Stage1Config | None = None,
    var: str | Path | None = None,
    show_progress: bool = False,
    *,
    version: str | None = None,
) -> Path:
    """Run the stage-1 job and publish ``<var>/stage1/<version>/`` (``LATEST`` updated).

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
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()

    with progress("stage 1", total=len(_STEPS), show=show_progress) as bar, faiss_threads(
        config.clusters.faiss_threads
    ), ThreadPoolExecutor(1, thread_name_prefix="verify-input") as checker:

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
            users = ds.table("users").sort("user_id")
            packages = ds.table("packages").sort("package_id")
            stickers = ds.table("stickers") if ds.has("stickers") else None
            interactions = ds.scan("interactions")
            log.info("building stage 1", dataset=str(ds.root), users=users.height,
                     packages=packages.height)

        with step("matrix"):
            matrix = build_interaction_matrix(
                interactions, users, packages, config.matrix, config.evaluation, rng
            )
            train = matrix.train
            available = packages["available"].to_numpy()

        with step("factorize"):
            factors = fit_factors(train, config.als, config.seed, show_progress=show_progress)

        with step("cluster"):
            encoder = UserFeatureEncoder(config.clusters.features).fit(users)
            encoded = encoder.transform(users)
            warm = np.flatnonzero(np.diff(train.indptr) > 0)
            n_feature_blocks = max(1, len(config.clusters.features))
            feature_scale = config.clusters.feature_weight / np.sqrt(n_feature_blocks)
            space = np.hstack([
                _normalise_rows(factors.user_factors[warm]),
                encoded[warm] * np.float32(feature_scale),
            ]).astype(np.float32)
            clusterer = UserClusterer(
                config.clusters.n_clusters, config.clusters.min_cluster_size,
                config.clusters.niter, config.clusters.max_points_per_centroid, config.seed,
            ).fit(space)
            del space
            n_clusters = clusterer.n_clusters_
            item_centroids, n_history = cluster_means(
                factors.user_factors[warm], clusterer.labels_, n_clusters
            )
            feature_centroids, _ = cluster_means(encoded[warm], clusterer.labels_, n_clusters)
            assigner = ColdStartAssigner(encoder.block_sizes, COLD_START_SMOOTHING).fit(
                feature_centroids, n_history
            )
            from_features = np.ones(len(users), dtype=bool)
            from_features[warm] = False
            user_cluster = np.empty(len(users), dtype=np.int32)
            user_cluster[warm] = clusterer.labels_
            user_cluster[from_features] = assigner.predict(encoded[from_features])

        with step("candidates"):
            coverage_note = "computed from server-visible purchases/downloads × sticker labels"
            shares = demand = label_ids = None
            if stickers is None:
                coverage_note = "skipped: dataset has no stickers table (no labels)"
            else:
                shares, label_ids = package_label_matrix(stickers, matrix.package_ids)
                if len(label_ids) == 0:
                    coverage_note = "skipped: no sticker carries a label"
                    shares = label_ids = None
                else:
                    warm_cluster = np.full(len(user_cluster), -1, dtype=np.int32)
                    warm_cluster[warm] = clusterer.labels_
                    demand = label_demand(train, warm_cluster, n_clusters, shares)
            lists = select_candidates(item_centroids, factors.package_factors, available,
                                      config.candidates, shares, demand, label_ids)

        with step("evaluate"):
            evaluation: dict[str, Any] = {}
            if matrix.holdout is not None:
                cold = assigner.predict(encoded[matrix.holdout.rows])
                evaluation = recall_report(
                    matrix.holdout, train, available, lists.packages, user_cluster, cold,
                    factors.user_factors, factors.package_factors, config.evaluation.k,
                )
                log.info("offline metrics", **evaluation)

        metrics: dict[str, Any] = {
            "evaluation": evaluation,
            "matrix": {
                "users": matrix.shape[0], "packages": matrix.shape[1],
                "available_packages": int(available.sum()),
                "interactions": matrix.n_interactions, "train_pairs": int(train.nnz),
                "held_out_pairs": matrix.holdout.n_pairs if matrix.holdout else 0,
                "users_with_history": len(warm),
                "users_from_features": int(from_features.sum()),
            },
            "clusters": _cluster_metrics(clusterer, n_history,
                                         np.bincount(user_cluster, minlength=n_clusters),
                                         config),
            "label_coverage": _coverage_metrics(lists.coverage, lists.n_swapped, coverage_note),
            "als_fit_seconds": round(factors.seconds, 3),
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
            with publish_artifact(destination, kind=KIND, parameters=config.model_dump(),
                                  input_fingerprint=input_fp) as writer:
                out = writer.path
                np.save(out / "package_ids.npy", matrix.package_ids.astype(np.int32))
                np.save(out / "package_factors.npy", factors.package_factors)
                np.save(out / "item_centroids.npy", item_centroids.astype(np.float32))
                np.save(out / "cluster_centroids.npy", clusterer.cluster_centers_)
                np.save(out / "feature_centroids.npy", feature_centroids.astype(np.float32))
                n_users = np.bincount(user_cluster, minlength=n_clusters)
                pl.DataFrame({
                    "cluster_id": np.arange(n_clusters, dtype=np.int32),
                    "n_users": n_users.astype(np.int32),
                    "n_history": n_history.astype(np.int32),
                }).write_parquet(out / "clusters.parquet")
                pl.DataFrame({
                    "user_id": matrix.user_ids.astype(np.int32),
                    "cluster_id": user_cluster.astype(np.int32),
                    "from_features": from_features,
                }).write_parquet(out / "user_clusters.parquet")
                lists.table(matrix.package_ids).write_parquet(out / "candidates.parquet")
                lists.coverage.write_parquet(out / "label_coverage.parquet")
                writer.write_json("cold_start.json", {
                    "encoder": encoder.to_dict(), "smoothing": COLD_START_SMOOTHING,
                    "feature_scale": float(feature_scale),
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
                    "label_coverage": coverage_note,
                }
    log.info("stage 1 published", path=str(destination), seconds=timings["total"])
    return destination


def _cluster_metrics(clusterer: UserClusterer, n_history: np.ndarray, n_users: np.ndarray,
                     config: Stage1Config) -> dict[str, Any]:
    q = np.percentile(n_history, [0, 10, 50, 90, 100]) if len(n_history) else [0] * 5
    return {
        "n_clusters": int(clusterer.n_clusters_),
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
