"""Per-round checkpoints: one ``.npz`` per completed round, written atomically.

A checkpoint holds everything needed to continue exactly: global parameters and
version, strategy state, device records, task device state, the privacy ledger and the
random generator's state *after* the round. A resumed run therefore replays the
interrupted round with the same sample and the same noise, so the server learns
nothing it could not have learnt from the first attempt: privacy is not spent twice.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from federated._errors import CheckpointError

__all__ = ["load_latest_checkpoint", "save_checkpoint"]

_PREFIX = "round-"
KEEP = 2


def save_checkpoint(directory: Path, completed_round: int, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> Path:
    """Write ``round-<r>.npz`` (arrays + JSON meta) atomically; keep the last two.

    Parameters
    ----------
    directory : Path
        Checkpoint directory (created).
    completed_round : int
        The round just completed (its aggregate is in ``arrays``).
    arrays : dict of str to ndarray
        Named arrays; keys may contain ``/``.
    meta : dict
        JSON-serialisable state.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{completed_round:06d}.npz"
    tmp = directory / f".tmp-{uuid.uuid4().hex[:8]}.npz"
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
    with open(tmp, "wb") as fh:
        np.savez(fh, **payload)  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    for old in sorted(directory.glob(f"{_PREFIX}*.npz"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def load_latest_checkpoint(directory: Path) -> tuple[dict[str, Any],
                                                      dict[str, np.ndarray]] | None:
    """(meta, arrays) of the newest checkpoint in ``directory``, or None if there is none.

    Raises
    ------
    CheckpointError
        If the newest checkpoint cannot be read.
    """
    if not directory.is_dir():
        return None
    files = sorted(directory.glob(f"{_PREFIX}*.npz"))
    if not files:
        return None
    try:
        with np.load(files[-1], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            meta = json.loads(bytes(data["__meta__"]).decode())
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{files[-1]}: unreadable checkpoint ({exc})") from exc
    return meta, arrays
