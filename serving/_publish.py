"""Publishing the model a server-side round aggregated: a new reranker version.

The new version is written by the reranker's own artifact writer
(``reranker.RerankerArtifact.successor``): the base version's layout (including its
history features) and ``reranker.json``, a new ``model.onnx`` and ``global_weights.npy``,
``privacy.json``, ``rounds.json`` and ``metrics.json``, manifest last and an atomic
rename, so the registry verifies and swaps it like any other version. This module only
decides the records and whether ``LATEST`` moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import structlog

from data import fingerprint, set_latest
from federated import FederatedConfig, VersionRecords
from serving._promotions import latest_lock, promoted_versions
from serving._promotions import record as record_promotion
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
        # Imported here: the reranker pulls in onnxruntime, which `stickers rounds status`
        # does not need.
        from reranker import RerankerArtifact

        artifact = RerankerArtifact.load(base)
        rounds = [*artifact.rounds, {"round": record["round"], "status": "aggregated",
                                     "accepted": record["accepted"],
                                     "model_version": record["model_version"],
                                     "source": "server", "metrics": record["metrics"]}]
        config = FederatedConfig.model_validate(record["config"])
        # from the privacy ledger (each round as it ran); re-accounting every round
        # with this round's config only for a caller without a ledger
        privacy = record.get("privacy") or privacy_after(artifact.privacy, config, len(rounds))
        metrics = {"model_version": record["model_version"], "rounds_run": len(rounds),
                   "base_version": base.name, "server_round": record["round"],
                   "accepted": record["accepted"]}
        destination = artifact.successor(parameters, VersionRecords(
            parameters={**artifact.manifest.parameters, "config": record["config"],
                        "server_round": {k: v for k, v in record.items() if k != "config"}},
            input_fingerprint=fingerprint(artifact.manifest.input_fingerprint,
                                          record["round"]),
            privacy=privacy, rounds=rounds, metrics=metrics,
            manifest_metrics={**metrics, "epsilon": privacy.get("epsilon")}),
            kind_dir=kind_dir)
        version = destination.name
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
