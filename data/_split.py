"""The one split of the whole pipeline: validation and test start times, validation devices.

Every stage reads the same split from the dataset's manifest (``parameters["split"]``)
through :func:`time_split`:

- everything that is *reported* is fit, trained and personalised only on data with
  ``ts < test_start`` and evaluated on ``ts >= test_start``;
- everything that is *tuned* (stage-1 settings, σ, learning rates …) is fit on
  ``ts < validation_start`` and scored on ``[validation_start, test_start)``, and only
  on *validation devices* (:meth:`TimeSplit.is_validation_device`), which a report never
  evaluates.

The world generator writes the split into its manifest. A dataset without one (an old
world, a loaded external log) gets a default from its interaction timestamps:
``test_start`` = the 0.8 quantile, ``validation_start`` = the 0.65 quantile (numpy's
linear interpolation), validation share :data:`DEFAULT_VALIDATION_SHARE` and salt
:data:`DEFAULT_SALT`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from data._errors import DataFileError

if TYPE_CHECKING:
    from data._dataset import Dataset

__all__ = [
    "DEFAULT_SALT",
    "DEFAULT_TEST_QUANTILE",
    "DEFAULT_VALIDATION_QUANTILE",
    "DEFAULT_VALIDATION_SHARE",
    "TimeSplit",
    "is_validation_device",
    "split_from_timestamps",
    "time_split",
]

DEFAULT_TEST_QUANTILE = 0.8
"""Quantile of the interaction timestamps where the default test period starts."""
DEFAULT_VALIDATION_QUANTILE = 0.65
"""Quantile of the interaction timestamps where the default validation period starts."""
DEFAULT_VALIDATION_SHARE = 0.1
"""Share of devices reserved for tuning when the manifest records no split."""
DEFAULT_SALT = "sticker-suggest/validation-devices"
"""Salt of the validation-device hash when the manifest records no split."""


def is_validation_device(user_ids: np.ndarray, share: float, salt: str) -> np.ndarray:
    """Which users are validation devices: ``sha256(salt, user id)`` below ``share``.

    The bucket of a user is the first 64 bits of ``sha256(f"{salt}\\x00{user_id}")``
    read as a big-endian integer and divided by 2**64, so it is uniform in [0, 1),
    stable across runs and machines, and independent of the A/B arms (another salt).

    Parameters
    ----------
    user_ids : ndarray of int, shape (N,)
    share : float
        Expected share of validation devices, in [0, 1].
    salt : str

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    ids = np.asarray(user_ids)
    if ids.size == 0 or share <= 0.0:
        return np.zeros(ids.shape, dtype=bool)
    prefix = salt.encode() + b"\x00"
    buckets = np.fromiter(
        (int.from_bytes(hashlib.sha256(prefix + str(u).encode()).digest()[:8], "big")
         for u in ids.ravel().tolist()),
        dtype=np.uint64, count=ids.size,
    ).reshape(ids.shape)
    if share >= 1.0:
        return np.ones(ids.shape, dtype=bool)
    # compared as integers: no float rounding of the 64-bit buckets
    return buckets < np.uint64(int(share * 2.0**64))


@dataclass(frozen=True)
class TimeSplit:
    """The pipeline's split in time and in devices.

    Attributes
    ----------
    validation_start : float
        Seconds since the Unix epoch; tuning fits on ``ts < validation_start`` and
        scores on ``[validation_start, test_start)``.
    test_start : float
        Seconds since the Unix epoch (``> validation_start``); reported models see only
        ``ts < test_start``, reports evaluate ``ts >= test_start``.
    validation_share : float
        Share of devices reserved for tuning (never in a report's evaluation sample).
    salt : str
        Salt of the validation-device hash.
    source : str
        ``"manifest"`` when the dataset recorded the split, ``"quantiles"`` when it was
        computed from interaction timestamps.
    """

    validation_start: float
    test_start: float
    validation_share: float
    salt: str
    source: str = "manifest"

    def __post_init__(self) -> None:
        for name in ("validation_start", "test_start"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)} should be a finite time")
        if not self.validation_start < self.test_start:
            raise ValueError(
                f"validation_start={self.validation_start} should be < "
                f"test_start={self.test_start}"
            )
        if not 0.0 <= self.validation_share < 1.0:
            raise ValueError(
                f"validation_share={self.validation_share} should be in [0, 1)")

    def is_validation_device(self, user_ids: np.ndarray) -> np.ndarray:
        """(N,) bool: which of ``user_ids`` (N,) are validation devices (tuning only)."""
        return is_validation_device(user_ids, self.validation_share, self.salt)

    def to_parameters(self) -> dict[str, Any]:
        """The manifest form (``parameters["split"]``): times in epoch seconds."""
        return {"validation_start": self.validation_start, "test_start": self.test_start,
                "validation_share": self.validation_share, "salt": self.salt}

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], source: str = "manifest") -> TimeSplit:
        """Read the manifest form; raises ``ValueError`` naming a missing or bad field."""
        missing = [k for k in ("validation_start", "test_start", "validation_share", "salt")
                   if k not in params]
        if missing:
            raise ValueError(f"split is missing field(s) {', '.join(missing)}")
        return cls(float(params["validation_start"]), float(params["test_start"]),
                   float(params["validation_share"]), str(params["salt"]), source)


def split_from_timestamps(ts: np.ndarray, *,
                          validation_share: float = DEFAULT_VALIDATION_SHARE,
                          salt: str = DEFAULT_SALT) -> TimeSplit:
    """The default split of a log: 0.65 and 0.8 quantiles of its timestamps.

    Parameters
    ----------
    ts : ndarray of float, shape (N,)
        Event times in seconds since the Unix epoch (N ≥ 1).

    Returns
    -------
    TimeSplit
        ``source="quantiles"``. If the quantiles coincide (few distinct times),
        ``test_start`` is the first time after ``validation_start``, or one second after
        it when there is none (then nothing is held out).
    """
    ts = np.asarray(ts, dtype=np.float64)
    if ts.size == 0:
        raise ValueError("cannot compute a time split from no timestamps")
    val, test = (float(x) for x in np.quantile(ts, [DEFAULT_VALIDATION_QUANTILE,
                                                    DEFAULT_TEST_QUANTILE]))
    if not val < test:
        later = ts[ts > val]
        test = float(later.min()) if later.size else val + 1.0
    return TimeSplit(val, test, validation_share, salt, "quantiles")


def time_split(dataset: Dataset) -> TimeSplit:
    """The split of ``dataset``: its manifest's ``parameters["split"]``, else the default.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    TimeSplit

    Raises
    ------
    DataFileError
        If the manifest's split is malformed, or there is none and the dataset has no
        interaction timestamps to compute the default from.
    """
    params = dataset.manifest.parameters.get("split")
    if params is not None:
        try:
            return TimeSplit.from_parameters(params)
        except (TypeError, ValueError) as exc:
            raise DataFileError(
                f"{dataset.root}: manifest parameters['split'] is invalid ({exc})") from exc
    if not dataset.has("interactions"):
        raise DataFileError(
            f"{dataset.root}: no split in the manifest and no interactions table to compute "
            "the default split from")
    ts = (dataset.scan("interactions").select(pl.col("ts").cast(pl.Int64)).collect()
          ["ts"].to_numpy() / 1000.0)
    if ts.size == 0:
        raise DataFileError(
            f"{dataset.root}: no split in the manifest and no interactions to compute it from")
    return split_from_timestamps(ts)
