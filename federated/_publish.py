"""Publishing a trained model: a versioned artifact with the task's files and privacy.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data import fingerprint, new_version, publish_artifact
from federated._task import FederatedTask
from federated._trainer import FederatedTrainer

__all__ = ["publish_model", "write_privacy_json"]


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


def publish_model(trainer: FederatedTrainer, task: FederatedTask, kind_dir: Path, *,
                  seed: int, inputs: dict[str, Any] | None = None) -> Path:
    """Publish ``kind_dir/<version>/``: task files, global weights, privacy.json, metrics.

    Written atomically with the manifest last (``data.publish_artifact``).

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
    destination = kind_dir / new_version()
    parameters = {"task": task.name, "n_parameters": task.n_parameters, "seed": seed,
                  "config": trainer.config.model_dump(mode="json")}
    with publish_artifact(destination, kind=task.name, parameters=parameters,
                          input_fingerprint=fingerprint(inputs or {})) as writer:
        files = task.export(trainer.parameters_, writer.path)
        np.save(writer.path / "global_weights.npy", trainer.parameters_)
        write_privacy_json(writer.path / "privacy.json", trainer.privacy_)
        writer.write_json("rounds.json", [h.to_dict() for h in trainer.history_])
        metrics = {**trainer.metrics_, "rounds_run": len(trainer.history_),
                   "rounds_aggregated": sum(h.status == "aggregated" for h in trainer.history_),
                   "model_version": trainer.model_version_, "status": trainer.status_}
        writer.write_json("metrics.json", _finite(metrics))
        writer.metrics = _finite({**metrics, "epsilon": trainer.privacy_.get("epsilon")})
        writer.extra = {"model_files": files}
    return destination
