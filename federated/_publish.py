"""Publishing a trained model: a versioned artifact with the task's files and privacy.json.

:func:`publish_version` is the one writer of a model version's container — the task's own
files (written by a callback: the platform knows no task's format), ``global_weights.npy``,
``privacy.json``, ``rounds.json`` and ``metrics.json``, manifest last, atomic rename. The
simulator (:func:`publish_model`) and every application's own artifact writer call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data import fingerprint, new_version, publish_artifact
from federated._task import FederatedTask
from federated._trainer import FederatedTrainer

__all__ = ["ExportFiles", "VersionRecords", "publish_model", "publish_version",
           "write_privacy_json"]

ExportFiles = Callable[[Path], list[str]]
"""Writes a task's model files into a directory and returns their names."""


def write_privacy_json(path: Path, report: dict[str, Any]) -> Path:
    """Write a privacy report as ``privacy.json`` (infinite ε written as null)."""
    path.write_text(json.dumps(_finite(report), indent=2, sort_keys=True) + "\n")
    return path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


@dataclass(frozen=True)
class VersionRecords:
    """What a model version records besides its files and weights.

    Attributes
    ----------
    parameters : mapping
        The manifest's ``parameters`` (config, seed, ...).
    input_fingerprint : str
        The manifest's input fingerprint.
    privacy : mapping, optional
        Written as ``privacy.json`` (infinite ε as null).
    rounds : list of dict, optional
        Written as ``rounds.json``.
    metrics : mapping, optional
        Written as ``metrics.json`` (non-finite numbers as null).
    manifest_metrics : mapping, optional
        The manifest's metrics (default: ``metrics`` with the privacy's ε).
    """

    parameters: Mapping[str, Any]
    input_fingerprint: str = ""
    privacy: Mapping[str, Any] | None = None
    rounds: list[dict[str, Any]] | None = None
    metrics: Mapping[str, Any] | None = None
    manifest_metrics: Mapping[str, Any] | None = None


def publish_version(kind_dir: Path, parameters: np.ndarray, export: ExportFiles,
                    records: VersionRecords, *, kind: str, version: str | None = None,
                    update_latest: bool = True) -> Path:
    """Publish ``kind_dir/<version>/`` with a model's files, weights and records.

    Parameters
    ----------
    kind_dir : Path
        ``var/<kind>`` (the version directory is created under it).
    parameters : ndarray of float, shape (P,)
        Global parameters, saved as ``global_weights.npy`` (their dtype kept).
    export : callable
        ``export(directory) -> file names``: writes the task's own files (``model.onnx``).
    records : VersionRecords
        Manifest parameters and fingerprint, ``privacy.json``, ``rounds.json``,
        ``metrics.json``.
    kind : str
        The manifest's kind.
    version : str, optional
        The version name (default: a new timestamp).
    update_latest : bool
        Point ``LATEST`` at the new version.

    Returns
    -------
    Path
        The published version directory.
    """
    destination = kind_dir / (version or new_version())
    with publish_artifact(destination, kind=kind, parameters=dict(records.parameters),
                          input_fingerprint=records.input_fingerprint,
                          update_latest=update_latest) as writer:
        files = export(writer.path)
        np.save(writer.path / "global_weights.npy", np.asarray(parameters))
        if records.privacy is not None:
            write_privacy_json(writer.path / "privacy.json", dict(records.privacy))
        if records.rounds is not None:
            writer.write_json("rounds.json", records.rounds)
        if records.metrics is not None:
            writer.write_json("metrics.json", _finite(dict(records.metrics)))
        manifest_metrics = records.manifest_metrics
        if manifest_metrics is None:
            manifest_metrics = {**(records.metrics or {}),
                                "epsilon": (records.privacy or {}).get("epsilon")}
        writer.metrics = _finite(dict(manifest_metrics))
        writer.extra = {"model_files": files}
    return destination


def publish_model(trainer: FederatedTrainer, task: FederatedTask, kind_dir: Path, *,
                  seed: int, inputs: dict[str, Any] | None = None) -> Path:
    """Publish ``kind_dir/<version>/``: task files, global weights, privacy.json, metrics.

    Written atomically with the manifest last (:func:`publish_version`).

    Parameters
    ----------
    trainer : FederatedTrainer
        A fitted trainer.
    task : FederatedTask
        Its task (exports the model files, e.g. ``model.onnx``).
    kind_dir : Path
        ``var/<task.name>``.
    seed : int
        The run's seed (recorded).
    inputs : dict, optional
        Input fingerprints (stage-1 version, dataset) to record.
    """
    parameters = {"task": task.name, "n_parameters": task.n_parameters, "seed": seed,
                  "config": trainer.config.model_dump(mode="json")}
    metrics = {**trainer.metrics_, "rounds_run": len(trainer.history_),
               "rounds_aggregated": sum(h.status == "aggregated" for h in trainer.history_),
               "model_version": trainer.model_version_, "status": trainer.status_}
    theta = trainer.parameters_
    records = VersionRecords(parameters, fingerprint(inputs or {}), trainer.privacy_,
                             [h.to_dict() for h in trainer.history_], metrics)
    return publish_version(kind_dir, theta, lambda directory: task.export(theta, directory),
                           records, kind=task.name)
