"""How every SQLite store of the server is opened, and its write transaction.

The update store, the privacy ledger and the secure rounds' two files each keep one
connection in autocommit mode over a WAL file with ``synchronous=FULL`` (whatever a
request acknowledged survives a ``kill -9``); several gunicorn workers share a file, and
a writer takes SQLite's write lock with ``BEGIN IMMEDIATE`` and waits up to the busy
timeout for it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

__all__ = ["SqliteStore", "open_store", "transaction"]


def open_store(path: Path, schema: str, *, busy_timeout_ms: int, rows: bool = False,
               foreign_keys: bool = False) -> sqlite3.Connection:
    """Open (creating the file, its directory and ``schema``) one store; autocommit mode.

    Parameters
    ----------
    path : Path
        The SQLite file.
    schema : str
        ``CREATE ... IF NOT EXISTS`` statements.
    busy_timeout_ms : int
        How long a writer waits for another connection's write lock.
    rows : bool
        Rows come back as :class:`sqlite3.Row` (by name) instead of tuples.
    foreign_keys : bool
        Enforce the schema's foreign keys.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    if rows:
        conn.row_factory = sqlite3.Row
    _enter_wal(conn, busy_timeout_ms)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(schema)
    return conn


def _enter_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """``PRAGMA journal_mode=WAL``, retried until the busy timeout while it is locked.

    Switching a fresh file into WAL takes an exclusive lock and SQLite does not call the
    busy handler for it: when two gunicorn workers boot at once, one of them got
    "database is locked" (9 of 100 simultaneous pairs), its ``create_app`` raised, and
    gunicorn halted the whole server after the other worker had answered /readyz.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteStore:
    """A store that holds one connection (``_conn``): close it, or use it in ``with``."""

    _conn: sqlite3.Connection

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
