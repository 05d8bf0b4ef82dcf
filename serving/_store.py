"""The durable update store: federated rounds and their accepted uploads in SQLite (WAL).

``synchronous=FULL`` makes every commit fsync the write-ahead log before it returns, so
an update acknowledged with 202 survives a ``kill -9`` of the server (and a power cut on
honest disks). Uploads carry no identity and the store keeps none: a row is the round,
the model version, the noisy delta (float32 bytes), the bounded example count, the nonce,
a digest for idempotent retries, and the arrival time (to apply the round's deadline).

One :class:`UpdateStore` is one connection; the app opens one per request and closes it
on teardown, the CLI one per command. Several gunicorn workers share the file safely:
writers take SQLite's write lock (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data import StickerSuggestError
from federated import Upload
from serving._sqlite import SqliteStore, open_store

__all__ = ["RoundSpec", "StoreRejectedError", "UpdateStore", "update_digest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    model_version INTEGER NOT NULL,
    reranker_version TEXT NOT NULL,
    n_parameters INTEGER NOT NULL,
    clip_norm REAL NOT NULL,
    noise_multiplier REAL NOT NULL,
    norm_bound REAL NOT NULL,
    max_examples INTEGER NOT NULL,
    min_reports INTEGER NOT NULL,
    sampling_rate REAL NOT NULL,
    opened_at REAL NOT NULL,
    deadline_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'aggregated', 'abandoned')),
    closed_at REAL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL REFERENCES rounds(round),
    model_version INTEGER NOT NULL,
    n_examples INTEGER NOT NULL,
    nonce TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    delta BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_round ON updates(round);
"""


class StoreRejectedError(StickerSuggestError):
    """An upload the store refuses: ``reason`` (metrics label), ``status`` and a detail."""

    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RoundSpec:
    """A round as announced to devices (everything public) and its state.

    Times are Unix seconds. ``norm_bound`` is the L2 norm above which an upload cannot be
    an honest clipped-and-noised delta (see ``federated.noisy_norm_bound``).
    """

    round: int
    model_version: int
    reranker_version: str
    n_parameters: int
    clip_norm: float
    noise_multiplier: float
    norm_bound: float
    max_examples: int
    min_reports: int
    sampling_rate: float
    opened_at: float
    deadline_at: float
    status: str = "open"
    closed_at: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def update_digest(upload: Upload) -> str:
    """sha256 of an upload's content (everything but the nonce), for idempotent retries."""
    digest = hashlib.sha256()
    digest.update(f"{upload.round}/{upload.model_version}/{upload.n_examples}/".encode())
    digest.update(np.ascontiguousarray(upload.delta, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _row_to_round(row: sqlite3.Row) -> RoundSpec:
    values = dict(row)
    values["outcome"] = json.loads(values["outcome"]) if values["outcome"] else {}
    return RoundSpec(**values)


class UpdateStore(SqliteStore):
    """One connection to the SQLite update store (created with its schema if absent).

    Parameters
    ----------
    path : Path
        The database file; its directory is created.
    busy_timeout_ms : int
        How long a writer waits for another process's write lock.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self._conn = open_store(self.path, _SCHEMA, busy_timeout_ms=busy_timeout_ms,
                                rows=True, foreign_keys=True)


    # ------------------------------------------------------------------ rounds

    def current_round(self) -> RoundSpec | None:
        """The open round (at most one), or None."""
        row = self._conn.execute(
            "SELECT * FROM rounds WHERE status = 'open' ORDER BY round DESC LIMIT 1").fetchone()
        return _row_to_round(row) if row else None

    def get_round(self, round_: int) -> RoundSpec | None:
        """Round ``round_``, or None."""
        row = self._conn.execute("SELECT * FROM rounds WHERE round = ?", (round_,)).fetchone()
        return _row_to_round(row) if row else None

    def rounds(self) -> list[RoundSpec]:
        """Every round, oldest first."""
        return [_row_to_round(r) for r in
                self._conn.execute("SELECT * FROM rounds ORDER BY round").fetchall()]

    def next_round_number(self) -> int:
        """One more than the highest round ever opened (0 for an empty store)."""
        row = self._conn.execute("SELECT MAX(round) FROM rounds").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def open_round(self, spec: RoundSpec) -> RoundSpec:
        """Record ``spec`` as the open round.

        Raises
        ------
        StoreRejectedError
            If another round is open or the number was used before.
        """
        values = {**spec.to_dict(), "status": "open", "closed_at": None, "outcome": None}
        columns = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            current = self.current_round()
            if current is not None:
                raise StoreRejectedError("round_open", 409,
                                     f"round {current.round} is still open; close it first")
            if self.get_round(spec.round) is not None:
                raise StoreRejectedError("round_exists", 409,
                                     f"round {spec.round} was already opened once")
            self._conn.execute(f"INSERT INTO rounds ({columns}) VALUES ({marks})", values)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return RoundSpec(**{**values, "outcome": {}})

    def close_round(self, round_: int, status: str, closed_at: float,
                    outcome: dict[str, Any]) -> None:
        """Mark an open round ``aggregated`` or ``abandoned`` with its outcome."""
        cur = self._conn.execute(
            "UPDATE rounds SET status = ?, closed_at = ?, outcome = ? "
            "WHERE round = ? AND status = 'open'",
            (status, closed_at, json.dumps(outcome, default=str), round_))
        if cur.rowcount != 1:
            raise StoreRejectedError("round_not_open", 409, f"round {round_} is not open")

    # ------------------------------------------------------------------ updates

    def add_update(self, upload: Upload, received_at: float) -> str:
        """Store a validated upload for the open round, durably; returns the outcome.

        ``accepted`` (new, committed and fsynced) or ``duplicate`` (the same content was
        stored before under this nonce: a client retry, nothing new is stored).

        Raises
        ------
        StoreRejectedError
            ``no_open_round``, ``stale_round`` (another round), ``deadline_passed``,
            ``version_mismatch``, ``nonce_replayed`` (nonce used with other content) —
            and nothing is stored.
        """
        digest = update_digest(upload)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._check_and_insert(upload, digest, received_at)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return outcome

    def _check_and_insert(self, upload: Upload, digest: str, received_at: float) -> str:
        seen = self._conn.execute("SELECT digest FROM updates WHERE nonce = ?",
                                  (upload.nonce,)).fetchone()
        if seen is not None:
            if seen[0] == digest:
                return "duplicate"
            raise StoreRejectedError("nonce_replayed", 409,
                                 "this nonce was already used by another update; draw a "
                                 "fresh 128-bit nonce for every upload")
        current = self.current_round()
        if current is None:
            raise StoreRejectedError("no_open_round", 409,
                                 "no federated round is open; ask GET "
                                 "/v1/federated/rounds/current later")
        if upload.round != current.round:
            raise StoreRejectedError("stale_round", 409,
                                 f"round={upload.round} is not open; the open round is "
                                 f"{current.round}")
        if received_at > current.deadline_at:
            raise StoreRejectedError("deadline_passed", 409,
                                 f"round {current.round} stopped accepting updates at its "
                                 "deadline")
        if upload.model_version != current.model_version:
            raise StoreRejectedError("version_mismatch", 409,
                                 f"model_version={upload.model_version} should be "
                                 f"{current.model_version}, the version round "
                                 f"{current.round} trains")
        self._conn.execute(
            "INSERT INTO updates (round, model_version, n_examples, nonce, digest, delta, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (upload.round, upload.model_version, upload.n_examples, upload.nonce, digest,
             np.ascontiguousarray(upload.delta, dtype=np.float32).tobytes(), received_at))
        return "accepted"

    def count_updates(self, round_: int | None = None) -> int:
        """Stored updates of one round (or of all rounds)."""
        if round_ is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM updates").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM updates WHERE round = ?",
                                      (round_,)).fetchone()[0])

    def nonces(self, round_: int | None = None) -> set[str]:
        """Nonces stored (for one round or all)."""
        if round_ is None:
            rows = self._conn.execute("SELECT nonce FROM updates").fetchall()
        else:
            rows = self._conn.execute("SELECT nonce FROM updates WHERE round = ?",
                                      (round_,)).fetchall()
        return {r[0] for r in rows}

    def updates(self, round_: int) -> tuple[list[Upload], np.ndarray]:
        """A round's stored uploads in arrival order and their arrival times (s, (n,))."""
        rows = self._conn.execute(
            "SELECT round, model_version, n_examples, nonce, delta, received_at FROM updates "
            "WHERE round = ? ORDER BY seq", (round_,)).fetchall()
        uploads = [Upload(round=int(r["round"]), model_version=int(r["model_version"]),
                          delta=np.frombuffer(r["delta"], dtype=np.float32).copy(),
                          n_examples=int(r["n_examples"]), nonce=r["nonce"]) for r in rows]
        return uploads, np.array([r["received_at"] for r in rows], dtype=np.float64)
