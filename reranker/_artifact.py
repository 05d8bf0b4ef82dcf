"""Reading a published reranker version (``var/reranker/<version>/``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data import ArtifactError, Manifest, read_manifest, resolve_artifact
from reranker._model import ParameterLayout

__all__ = ["RerankerArtifact"]

KIND = "reranker"


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
        path = Path(path_or_var)
        if not (path / "manifest.json").is_file():
            if (path / kind_dir).is_dir():
                path = path / kind_dir
            path = resolve_artifact(path, version)
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
