"""The one owner of a reranker version (``var/reranker/<version>/``): writing and reading.

Every version — central training (``stickers reranker train-central``), federated
publishing (the tasks' :meth:`export`, called by ``federated.publish_model``) and HTTP
aggregation (``serving``) — is written here: :func:`write_model_files` writes
``model.onnx`` and ``reranker.json`` (every task's ``export`` calls it),
:meth:`RerankerArtifact.publish` a whole version and :meth:`RerankerArtifact.successor`
the next version of a served one. The container
(``global_weights.npy``, ``privacy.json``, ``rounds.json``, ``metrics.json``, manifest
last) is the platform's :func:`federated.publish_version`. :meth:`RerankerArtifact.load`
reads and verifies any of them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data import ArtifactError, Manifest, new_version, read_manifest, resolve_artifact
from federated import ExportFiles, VersionRecords, publish_version
from reranker._model import ParameterLayout
from reranker._onnx import export_onnx

__all__ = ["RerankerArtifact", "write_model_files"]

KIND = "reranker"
MODEL_FILES = ("model.onnx", "reranker.json")
_RECORDS = ("global_weights.npy", "privacy.json", "rounds.json", "metrics.json")


def write_model_files(directory: Path, parameters: np.ndarray, layout: ParameterLayout,
                      info: Mapping[str, Any], *, version: str = "") -> list[str]:
    """Write ``model.onnx`` and ``reranker.json`` of a reranker into ``directory``.

    Parameters
    ----------
    directory : Path
        An existing directory (an artifact writer's).
    parameters : ndarray of float, shape (P,)
        Global weights for ``layout``.
    layout : ParameterLayout
        Its ``n_factors``, ``n_keyword_features`` and ``n_history_features`` are recorded
        first in ``reranker.json``.
    info : mapping
        The rest of ``reranker.json`` (stage-1 version, dataset, feature names, ...).
    version : str, optional
        Version name embedded in the ONNX model's metadata ("" = none).

    Returns
    -------
    list of str
        The file names written.
    """
    directory = Path(directory)
    model = export_onnx(np.asarray(parameters, np.float32), layout, version=version)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    record = {"n_factors": layout.n_factors, "n_keyword_features": layout.n_keyword_features,
              "n_history_features": layout.n_history_features,
              **{k: v for k, v in info.items() if k not in _LAYOUT_KEYS}}
    (directory / "reranker.json").write_text(json.dumps(record, indent=2) + "\n")
    return list(MODEL_FILES)


_LAYOUT_KEYS = ("n_factors", "n_keyword_features", "n_history_features")


@dataclass(frozen=True)
class RerankerArtifact:
    """A verified reranker version: ONNX model, global weights and its privacy statement.

    Attributes
    ----------
    directory : Path
    manifest : data.Manifest
    model_bytes : bytes
        ``model.onnx``.
    sha256 : str
        Checksum of ``model.onnx`` (from the verified manifest).
    weights : ndarray of float32, shape (P,)
    layout : ParameterLayout
    info : dict
        ``reranker.json``: stage-1 version, dataset, feature names.
    privacy : dict
        ``privacy.json`` (σ, C, q, rounds, δ, ε of each kind, accountant).
    """

    directory: Path
    manifest: Manifest
    model_bytes: bytes
    sha256: str
    weights: np.ndarray
    layout: ParameterLayout
    info: dict[str, Any]
    privacy: dict[str, Any]

    @property
    def version(self) -> str:
        """The version name."""
        return self.manifest.version

    @property
    def n_parameters(self) -> int:
        """P."""
        return self.layout.n_parameters

    @property
    def stage1_version(self) -> str:
        """The stage-1 version whose factors the weights were trained against."""
        return str(self.info.get("stage1_version", ""))

    @property
    def clip_norm(self) -> float | None:
        """The clip norm C devices used, if the model was trained federatedly."""
        value = self.privacy.get("clip_norm") or self.privacy.get("C")
        return None if value is None else float(value)

    @classmethod
    def publish(cls, kind_dir: Path, parameters: np.ndarray, export: ExportFiles,
                records: VersionRecords, *, version: str | None = None,
                update_latest: bool = True) -> Path:
        """Publish a new version under ``kind_dir`` and return its directory.

        Parameters
        ----------
        kind_dir : Path
            ``var/reranker`` (``var/reranker_central`` for the non-private reference).
        parameters : ndarray of float, shape (P,)
            Global weights.
        export : callable
            ``export(directory) -> file names``: writes ``model.onnx`` and
            ``reranker.json`` — a task's :meth:`export` or :func:`write_model_files`.
        records : federated.VersionRecords
            Manifest parameters, ``privacy.json``, ``rounds.json``, ``metrics.json``
            (written by :func:`federated.publish_version`, manifest last).
        version : str, optional
            Version name (default: a new timestamp).
        update_latest : bool
            Point ``LATEST`` at the new version.
        """
        return publish_version(Path(kind_dir), parameters, export, records, kind=KIND,
                               version=version, update_latest=update_latest)

    def successor(self, parameters: np.ndarray, records: VersionRecords, *,
                  kind_dir: Path | None = None, update_latest: bool = False) -> Path:
        """Publish the next version of this one with new ``parameters`` (P,).

        Same layout (history features included) and ``reranker.json``; the ONNX model
        carries the new version name; every other file of this version besides the model
        files and the records is copied. Written under ``kind_dir`` (default: next to
        this version); ``LATEST`` untouched unless ``update_latest``.

        Raises
        ------
        ArtifactError
            If ``parameters`` do not have shape (P,) for this version's layout.
        """
        parameters = np.asarray(parameters, np.float32)
        if parameters.shape != (self.n_parameters,):
            raise ArtifactError(f"{self.directory}: new parameters have shape "
                                f"{parameters.shape}, expected ({self.n_parameters},)")
        version = new_version()
        copied = {name: self.manifest.file(name) for name in self.manifest.files
                  if name not in (*MODEL_FILES, *_RECORDS)}

        def export(directory: Path) -> list[str]:
            files = write_model_files(directory, parameters, self.layout, self.info,
                                      version=version)
            for name, source in copied.items():
                target = directory / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            return list(self.manifest.extra.get("model_files", files))

        return type(self).publish(kind_dir or self.directory.parent, parameters, export,
                                  records, version=version, update_latest=update_latest)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """``rounds.json`` (the rounds that trained this version; empty if none)."""
        if "rounds.json" not in self.manifest.files:
            return []
        return list(json.loads(self.manifest.file("rounds.json").read_text()))

    @property
    def model_version(self) -> int:
        """The platform's integer model version (manifest metric; 0 if none)."""
        return int(self.manifest.metrics.get("model_version", 0))

    @staticmethod
    def read_weights(path_or_var: str | Path, version: str = "latest",
                     kind_dir: str = KIND) -> tuple[Manifest, np.ndarray]:
        """Only the verified manifest and global weights of a version: what a federated
        round starts from (no ONNX model or layout is read).

        Parameters are as in :meth:`load`. Returns the manifest and the weights, float32
        (P,).

        Raises
        ------
        ArtifactError
            A missing, corrupt or wrongly shaped ``global_weights.npy``.
        """
        path = _version_directory(path_or_var, version, kind_dir)
        manifest = read_manifest(path, kind=KIND)
        try:
            weights = np.load(manifest.file("global_weights.npy"), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: cannot read global_weights.npy ({exc!r})") from exc
        if weights.ndim != 1:
            raise ArtifactError(f"{path}: global_weights.npy has shape {weights.shape}, "
                                "expected (P,)")
        return manifest, weights.astype(np.float32)

    @classmethod
    def load(cls, path_or_var: str | Path, version: str = "latest",
             kind_dir: str = KIND) -> RerankerArtifact:
        """Load and verify a version.

        Parameters
        ----------
        path_or_var : str or Path
            A version directory, the ``reranker`` directory, or the artifact root.
        version : str
            A version name or ``latest``.
        kind_dir : str
            Sub-directory of the artifact root (``reranker``; ``reranker_central`` for
            the non-private reference).
        """
        path = _version_directory(path_or_var, version, kind_dir)
        manifest = read_manifest(path, kind=KIND)
        for name in ("model.onnx", "global_weights.npy", "reranker.json"):
            manifest.file(name)
        try:
            info = json.loads(manifest.file("reranker.json").read_text())
            layout = ParameterLayout(int(info["n_factors"]), int(info["n_keyword_features"]),
                                     int(info.get("n_history_features", 0)))
            weights = np.load(manifest.file("global_weights.npy"), allow_pickle=False)
            privacy = (json.loads(manifest.file("privacy.json").read_text())
                       if "privacy.json" in manifest.files else {})
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{path}: cannot read reranker artifact ({exc!r})") from exc
        if weights.shape != (layout.n_parameters,):
            raise ArtifactError(f"{path}: weights have shape {weights.shape}, expected "
                                f"({layout.n_parameters},)")
        return cls(directory=path, manifest=manifest,
                   model_bytes=manifest.file("model.onnx").read_bytes(),
                   sha256=manifest.files["model.onnx"]["sha256"],
                   weights=weights.astype(np.float32), layout=layout, info=info,
                   privacy=privacy)


def _version_directory(path_or_var: str | Path, version: str, kind_dir: str) -> Path:
    """A version directory from itself, its kind directory or the artifact root."""
    path = Path(path_or_var)
    if not (path / "manifest.json").is_file():
        if (path / kind_dir).is_dir():
            path = path / kind_dir
        path = resolve_artifact(path, version)
    return path
