"""Publishing the model a server-side round aggregated: a new reranker version.

The new version has the same files as one the simulation publishes (``model.onnx`` and
``reranker.json`` from the reranker's exporter, ``global_weights.npy``, ``privacy.json``,
``rounds.json``, ``metrics.json``), written with ``data.publish_artifact`` (manifest last,
atomic rename) so the registry verifies and swaps it like any other version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from data import fingerprint, new_version, publish_artifact, read_manifest, set_latest
from federated import FederatedConfig, write_privacy_json
from serving._promotions import latest_lock, promoted_versions
from serving._promotions import record as record_promotion
from serving._registry import reranker_module
from serving._rounds import Publisher, live_reranker, privacy_after

__all__ = ["reranker_publisher"]

log = structlog.get_logger(__name__)


def reranker_publisher(*, promote: bool = True) -> Publisher:
    """A :data:`Publisher` writing ``var/reranker/<new version>``.

    With ``promote``, ``LATEST`` moves to the new version only if it still names the
    round's base version (compare-and-swap under the promotion lock), and the promotion
    is recorded in the history as ``publish``; if an operator moved ``LATEST`` meanwhile,
    the version is published unpromoted and their choice stands.
    """

    def publish(parameters: np.ndarray, base: Path, kind_dir: Path,
                record: dict[str, Any]) -> Path:
        reranker = reranker_module()
        manifest = read_manifest(base, verify=True, kind="reranker")
        spec = json.loads(manifest.file("reranker.json").read_text())
        layout = reranker.ParameterLayout(int(spec["n_factors"]),
                                          int(spec["n_keyword_features"]))
        base_privacy = json.loads(manifest.file("privacy.json").read_text())
        base_rounds = json.loads(manifest.file("rounds.json").read_text()) if (
            "rounds.json" in manifest.files) else []
        rounds = [*base_rounds, {"round": record["round"], "status": "aggregated",
                                 "accepted": record["accepted"],
                                 "model_version": record["model_version"],
                                 "source": "server", "metrics": record["metrics"]}]
        config = FederatedConfig.model_validate(record["config"])
        destination = kind_dir / new_version()
        version = destination.name
        params = {**manifest.parameters, "config": record["config"],
                  "server_round": {k: v for k, v in record.items() if k != "config"}}
        with publish_artifact(destination, kind="reranker", parameters=params,
                              input_fingerprint=fingerprint(manifest.input_fingerprint,
                                                            record["round"]),
                              update_latest=False) as writer:
            model = reranker.export_onnx(np.asarray(parameters, np.float32), layout,
                                         version=version)
            (writer.path / "model.onnx").write_bytes(model.SerializeToString())
            for name in manifest.files:
                if name not in ("model.onnx", "global_weights.npy", "privacy.json",
                                "rounds.json", "metrics.json"):
                    target = writer.path / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(manifest.file(name), target)
            np.save(writer.path / "global_weights.npy", np.asarray(parameters, np.float32))
            # from the privacy ledger (each round as it ran); re-accounting every round
            # with this round's config only for a caller without a ledger
            privacy = record.get("privacy") or privacy_after(base_privacy, config, len(rounds))
            write_privacy_json(writer.path / "privacy.json", privacy)
            writer.write_json("rounds.json", rounds)
            metrics = {"model_version": record["model_version"], "rounds_run": len(rounds),
                       "base_version": base.name, "server_round": record["round"],
                       "accepted": record["accepted"]}
            writer.write_json("metrics.json", metrics)
            writer.metrics = {**metrics, "epsilon": privacy.get("epsilon")}
            writer.extra = {"model_files": manifest.extra.get("model_files",
                                                              ["model.onnx"])}
        if promote:
            with latest_lock(kind_dir):
                live = live_reranker(kind_dir.parent)
                if live == base.name:
                    if base.name not in promoted_versions(kind_dir):
                        record_promotion(kind_dir, "found", base.name)
                    set_latest(kind_dir, version)
                    record_promotion(kind_dir, "publish", version, base.name)
                else:
                    log.warning("LATEST moved during the round; the aggregated version is "
                                "published but not promoted", version=version,
                                base=base.name, live=live)
        return destination

    return publish
