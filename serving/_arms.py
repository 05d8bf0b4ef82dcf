"""A/B arm assignment: hash an install id with the experiment's salt into an arm.

The assignment is a pure function of (salt, install id), so an install sees the same
arm from every worker and after restarts without the server storing anything; the
install id is used for this hash only and is neither logged nor stored.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from itertools import accumulate

from serving._config import ArmConfig, ExperimentConfig

__all__ = ["INSTALL_ID_HEADER", "INSTALL_ID_PATTERN", "assign_arm", "bucket"]

INSTALL_ID_HEADER = "X-Install-Id"
INSTALL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def bucket(salt: str, install_id: str) -> float:
    """A uniform number in [0, 1) from sha256(salt, install_id) (first 64 bits)."""
    digest = hashlib.sha256(f"{salt}\x00{install_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_arm(experiment: ExperimentConfig, install_id: str | None) -> ArmConfig:
    """The arm of ``install_id``; the first arm (control) when there is no install id."""
    if install_id is None:
        return experiment.arms[0]
    total = sum(a.weight for a in experiment.arms)
    bounds = list(accumulate(a.weight / total for a in experiment.arms))
    index = bisect_right(bounds, bucket(experiment.salt, install_id))
    return experiment.arms[min(index, len(experiment.arms) - 1)]
