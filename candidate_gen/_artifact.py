"""The stage-1 artifact (``var/stage1/<version>/``): writing it and reading it back.

Files (rows of ``package_ids.npy`` and ``package_factors.npy`` are aligned):

=========================  ================================================================
``package_ids.npy``        int32 (n_packages,), sorted
``package_factors.npy``    float32 (n_packages, d)
``item_centroids.npy``     float32 (n_clusters, d): mean user factor per cluster (scoring)
``cluster_centroids.npy``  float32 (n_clusters, d_space): centroids in the clustering space
``feature_centroids.npy``  float32 (n_clusters, n_features_out): mean one-hot features
``clusters.parquet``       cluster_id i32, n_users i32 (all assigned), n_history i32
``user_clusters.parquet``  user_id i32, cluster_id i32, from_features bool
``candidates.parquet``     cluster_id i32, rank i32 (1 = best), package_id i32, score f32
``label_coverage.parquet`` see :class:`candidate_gen.CandidateLists` (empty without labels)
``cold_start.json``        feature encoder spec and smoothing of the cold-start assigner;
                           ``fallback_cluster``: the list (global popularity) of users
                           with no history and no feature to be assigned by, or null
``config.json``            the :class:`Stage1Config` of the run
``manifest.json``          written last: checksums, parameters, metrics, timings
=========================  ================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from candidate_gen._config import Stage1Config
from candidate_gen._features import ColdStartAssigner, UserFeatureEncoder
from candidate_gen._matrix import index_of
from data import MANIFEST, ArtifactError, Manifest, read_manifest, resolve_artifact

__all__ = ["KIND", "Stage1Artifact"]

KIND = "stage1"

REQUIRED_FILES = (
    "package_ids.npy", "package_factors.npy", "item_centroids.npy", "cluster_centroids.npy",
    "feature_centroids.npy", "clusters.parquet", "user_clusters.parquet",
    "candidates.parquet", "label_coverage.parquet", "cold_start.json", "config.json",
)


def _locate(path_or_var: str | Path, version: str) -> Path:
    path = Path(path_or_var)
    if (path / MANIFEST).is_file():
        return path  # a version directory
    if (path / "LATEST").is_file() or path.name == KIND:
        return resolve_artifact(path, version)
    if (path / KIND).is_dir():
        return resolve_artifact(path / KIND, version)
    if path.is_dir() and path.parent.name == KIND:
        return path  # a version directory without a manifest: read_manifest refuses it
    raise ArtifactError(
        f"{path}: neither a stage-1 version, a {KIND!r} directory nor an artifact root "
        f"holding {KIND!r}/"
    )


class Stage1Artifact:
    """A verified stage-1 artifact, loaded into memory.

    Use :meth:`load`; the constructor only stores what it is given.

    Attributes
    ----------
    directory : Path
    manifest : data.Manifest
    config : Stage1Config
    package_ids : ndarray of int32, shape (n_packages,)
    package_factors : ndarray of float32, shape (n_packages, d)
    item_centroids : ndarray of float32, shape (n_clusters, d)
    cluster_centroids : ndarray of float32, shape (n_clusters, d_space)
    feature_centroids : ndarray of float32, shape (n_clusters, n_features_out)
    clusters : polars.DataFrame
    user_clusters : polars.DataFrame
    candidate_table : polars.DataFrame
        ``cluster_id``, ``rank``, ``package_id``, ``score`` sorted by cluster then rank.
    label_coverage : polars.DataFrame
    """

    def __init__(self, directory: Path, manifest: Manifest, config: Stage1Config,
                 arrays: Mapping[str, np.ndarray], tables: Mapping[str, pl.DataFrame],
                 cold_start: Mapping[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self.package_ids = arrays["package_ids"]
        self.package_factors = arrays["package_factors"]
        self.item_centroids = arrays["item_centroids"]
        self.cluster_centroids = arrays["cluster_centroids"]
        self.feature_centroids = arrays["feature_centroids"]
        self.clusters = tables["clusters"]
        self.user_clusters = tables["user_clusters"].sort("user_id")
        self.candidate_table = tables["candidates"].sort("cluster_id", "rank")
        self.label_coverage = tables["label_coverage"]
        self.encoder = UserFeatureEncoder.from_dict(cold_start["encoder"])
        self.assigner = ColdStartAssigner(
            self.encoder.block_sizes, cold_start["smoothing"]
        ).fit(self.feature_centroids, self.clusters["n_history"].to_numpy())
        fallback = cold_start.get("fallback_cluster")
        self.fallback_cluster: int | None = None if fallback is None else int(fallback)
        self._user_ids = self.user_clusters["user_id"].to_numpy()
        self._user_cluster = self.user_clusters["cluster_id"].to_numpy()
        cluster_col = self.candidate_table["cluster_id"].to_numpy()
        self._offsets = np.searchsorted(cluster_col, np.arange(self.n_clusters + 1))
        self._candidate_ids = self.candidate_table["package_id"].to_numpy()

    @classmethod
    def load(cls, path_or_var: str | Path, version: str = "latest") -> Stage1Artifact:
        """Load and verify a published version.

        Parameters
        ----------
        path_or_var : str or Path
            A version directory, the ``stage1`` directory, or the artifact root (``var``).
        version : str
            A version name, or ``latest`` (follows the ``LATEST`` pointer).

        Raises
        ------
        data.ArtifactError
            If the version does not exist, has no manifest (partial), a checksum does not
            match (corrupt), a required file is missing, or shapes disagree.
        """
        directory = _locate(path_or_var, version)
        manifest = read_manifest(directory, verify=True, kind=KIND)
        missing = [f for f in REQUIRED_FILES if f not in manifest.files]
        if missing:
            raise ArtifactError(f"{directory}: stage-1 artifact lacks {missing}; rebuild it")
        try:
            arrays = {
                name.removesuffix(".npy"): np.load(manifest.file(name), allow_pickle=False)
                for name in REQUIRED_FILES if name.endswith(".npy")
            }
            tables = {
                name.removesuffix(".parquet"): pl.read_parquet(manifest.file(name))
                for name in REQUIRED_FILES if name.endswith(".parquet")
            }
            config = Stage1Config.from_json(manifest.file("config.json").read_text())
            cold_start = json.loads(manifest.file("cold_start.json").read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: cannot read stage-1 artifact ({exc})") from exc
        n_packages, n_clusters = len(arrays["package_ids"]), len(arrays["item_centroids"])
        checks = {
            "package_factors rows": (len(arrays["package_factors"]), n_packages),
            "cluster_centroids rows": (len(arrays["cluster_centroids"]), n_clusters),
            "feature_centroids rows": (len(arrays["feature_centroids"]), n_clusters),
            "clusters rows": (tables["clusters"].height, n_clusters),
            "factor dimension": (arrays["package_factors"].shape[1],
                                 arrays["item_centroids"].shape[1]),
        }
        for what, (found, expected) in checks.items():
            if found != expected:
                raise ArtifactError(f"{directory}: {what} is {found}, expected {expected}")
        return cls(directory, manifest, config, arrays, tables, cold_start)

    @property
    def version(self) -> str:
        """The version name (the directory name)."""
        return self.manifest.version

    @property
    def n_clusters(self) -> int:
        """Number of clusters (and candidate lists)."""
        return len(self.item_centroids)

    @property
    def metrics(self) -> dict[str, Any]:
        """Offline metrics and timings recorded in the manifest."""
        return self.manifest.metrics

    def candidates(self, cluster_id: int) -> np.ndarray:
        """Package ids of a cluster's candidates in rank order (int32, shape (n,))."""
        if not 0 <= int(cluster_id) < self.n_clusters:
            raise KeyError(f"cluster_id={cluster_id} should be in [0, {self.n_clusters})")
        c = int(cluster_id)
        return self._candidate_ids[self._offsets[c]:self._offsets[c + 1]]

    def package_rows(self, package_ids: np.ndarray | list[int]) -> np.ndarray:
        """Rows of ``package_factors`` for package ids (int32, -1 for unknown ids)."""
        return index_of(self.package_ids, np.asarray(package_ids))

    def cluster_of(self, user_id: int | np.ndarray | list[int]) -> Any:
        """Cluster of known users.

        A scalar returns an ``int`` and raises ``KeyError`` for an unknown user (use
        :meth:`assign` with their features); an array returns int32 with -1 for unknowns.
        """
        if np.isscalar(user_id):
            pos = index_of(self._user_ids, np.asarray([user_id]))[0]
            if pos < 0:
                raise KeyError(f"user_id={user_id!r} is not in stage-1 version {self.version}; "
                               "assign it from its features instead")
            return int(self._user_cluster[pos])
        pos = index_of(self._user_ids, np.asarray(user_id))
        return np.where(pos >= 0, self._user_cluster[pos], -1).astype(np.int32)

    def assign(self, features: Mapping[str, Any] | pl.DataFrame) -> Any:
        """Cold start: the cluster for a user (mapping → int) or users (frame → int32 array).

        Features are the columns of the ``users`` table named in ``clusters.features``;
        missing or ``"unknown"`` values are ignored. A user with no known value of a
        feature that has two or more categories gets the fallback list (global
        popularity) when the version has one (:attr:`fallback_cluster`), else the most
        probable cluster a priori.
        """
        encoded = self.encoder.transform(features)
        clusters = self.assigner.predict(encoded)
        if self.fallback_cluster is not None:
            clusters[~self.encoder.has_informative_value(encoded)] = self.fallback_cluster
        return int(clusters[0]) if isinstance(features, Mapping) else clusters
