"""What a device uploads: ``{round, model_version, delta, n_examples, nonce}`` and nothing else.

There is deliberately no user or device id field: the server cannot tell who sent an
update. :func:`parse_upload` is the validator the HTTP layer uses on untrusted JSON; it
rejects unknown fields (naming identity-like ones explicitly) instead of dropping them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from federated._errors import UploadError

__all__ = ["UPLOAD_FIELDS", "Upload", "UploadBatch", "parse_upload"]

UPLOAD_FIELDS = ("round", "model_version", "delta", "n_examples", "nonce")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
# Field names that would identify a sender; rejected with a privacy-specific message.
_IDENTITY_HINTS = ("id", "user", "device", "account", "email", "phone", "ip", "name", "token")


@dataclass(frozen=True)
class Upload:
    """One device's noisy, clipped update for one round.

    Attributes
    ----------
    round : int
        The round the device trained for.
    model_version : int
        The global model version it started from.
    delta : ndarray, shape (P,), float32
        Clipped, noised parameter delta.
    n_examples : int
        Example count, bounded to ``[0, max_examples]`` on the device.
    nonce : str
        32 lowercase hex characters (128 random bits), to drop replays; not an id.
    """

    round: int
    model_version: int
    delta: np.ndarray
    n_examples: int
    nonce: str

    def to_payload(self) -> dict[str, Any]:
        """A JSON-serialisable dict with exactly :data:`UPLOAD_FIELDS`."""
        return {"round": self.round, "model_version": self.model_version,
                "delta": [float(x) for x in self.delta], "n_examples": self.n_examples,
                "nonce": self.nonce}


def _identity_like(key: str) -> bool:
    parts = re.split(r"[^a-z]+", key.lower())
    return any(p in _IDENTITY_HINTS or p.endswith("id") for p in parts if p)


def parse_upload(payload: Mapping[str, Any], *, n_parameters: int, max_examples: int) -> Upload:
    """Validate an untrusted upload payload (e.g. parsed JSON) into an :class:`Upload`.

    Parameters
    ----------
    payload : mapping
        Must hold exactly the keys of :data:`UPLOAD_FIELDS`.
    n_parameters : int
        P, the required length of ``delta``.
    max_examples : int
        The bound on ``n_examples``.

    Raises
    ------
    UploadError
        On unknown or identity-like fields, missing fields, wrong types, a delta of the
        wrong length or with non-finite values, an out-of-range count or a bad nonce.
    """
    if not isinstance(payload, Mapping):
        raise UploadError(f"upload must be a JSON object, got {type(payload).__name__}")
    extra = sorted(set(payload) - set(UPLOAD_FIELDS))
    identity = [k for k in extra if _identity_like(str(k))]
    if identity:
        raise UploadError(
            f"upload carries identifying field(s) {identity}; uploads must not identify "
            f"their sender (allowed fields: {', '.join(UPLOAD_FIELDS)})"
        )
    if extra:
        raise UploadError(f"upload has unknown field(s) {extra}; allowed fields: "
                             f"{', '.join(UPLOAD_FIELDS)}")
    missing = [k for k in UPLOAD_FIELDS if k not in payload]
    if missing:
        raise UploadError(f"upload is missing field(s) {missing}")
    ints = {}
    for key in ("round", "model_version", "n_examples"):
        value = payload[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UploadError(f"{key}={value!r} should be a non-negative integer")
        ints[key] = value
    if ints["n_examples"] > max_examples:
        raise UploadError(f"n_examples={ints['n_examples']} should be <= {max_examples}")
    nonce = payload["nonce"]
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise UploadError("nonce should be 32 lowercase hex characters")
    raw = payload["delta"]
    if not isinstance(raw, list | tuple | np.ndarray) or len(raw) != n_parameters:
        got = len(raw) if isinstance(raw, list | tuple | np.ndarray) else type(raw).__name__
        raise UploadError(f"delta should be a list of {n_parameters} numbers, got {got}")
    try:
        delta = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UploadError(f"delta should hold numbers only ({exc})") from exc
    if delta.ndim != 1 or not np.isfinite(delta).all() or not np.all(np.abs(delta) < 1e30):
        raise UploadError("delta should be a flat list of finite numbers")
    return Upload(round=ints["round"], model_version=ints["model_version"],
                  delta=delta.astype(np.float32), n_examples=ints["n_examples"], nonce=nonce)


@dataclass(frozen=True)
class UploadBatch:
    """Many uploads in columns (the simulation's vectorised form of :class:`Upload`).

    Attributes
    ----------
    round : ndarray, shape (B,), int64
    model_version : ndarray, shape (B,), int64
    deltas : ndarray, shape (B, P), float32
    n_examples : ndarray, shape (B,), int64
    nonces : ndarray, shape (B, 2), uint64
        128 random bits per upload.
    """

    round: np.ndarray
    model_version: np.ndarray
    deltas: np.ndarray
    n_examples: np.ndarray
    nonces: np.ndarray

    def __len__(self) -> int:
        return int(self.round.shape[0])

    @classmethod
    def empty(cls, n_parameters: int) -> UploadBatch:
        """A batch with no uploads."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros((0, n_parameters), np.float32), np.zeros(0, np.int64),
                   np.zeros((0, 2), np.uint64))

    def select(self, mask: np.ndarray) -> UploadBatch:
        """The uploads where boolean ``mask`` (B,) is true (or at integer positions)."""
        return UploadBatch(self.round[mask], self.model_version[mask], self.deltas[mask],
                           self.n_examples[mask], self.nonces[mask])

    @classmethod
    def concat(cls, batches: list[UploadBatch], n_parameters: int) -> UploadBatch:
        """One batch of all ``batches`` in order."""
        if not batches:
            return cls.empty(n_parameters)
        return cls(*(np.concatenate([getattr(b, f.name) for b in batches])
                     for f in dataclasses.fields(cls)))

    def uploads(self) -> list[Upload]:
        """Row-wise :class:`Upload` records (what the HTTP transport would send)."""
        return [Upload(round=int(self.round[i]), model_version=int(self.model_version[i]),
                       delta=self.deltas[i], n_examples=int(self.n_examples[i]),
                       nonce=f"{int(self.nonces[i, 0]):016x}{int(self.nonces[i, 1]):016x}")
                for i in range(len(self))]

    @classmethod
    def from_uploads(cls, uploads: list[Upload], n_parameters: int) -> UploadBatch:
        """Column form of validated :class:`Upload` records."""
        if not uploads:
            return cls.empty(n_parameters)
        nonces = np.array([[int(u.nonce[:16], 16), int(u.nonce[16:], 16)] for u in uploads],
                          dtype=np.uint64)
        return cls(np.array([u.round for u in uploads], np.int64),
                   np.array([u.model_version for u in uploads], np.int64),
                   np.stack([u.delta for u in uploads]).astype(np.float32),
                   np.array([u.n_examples for u in uploads], np.int64), nonces)


