"""The secure rounds' durable state: two SQLite files that keep only what the protocol allows.

``rounds.sqlite3`` holds the SecAgg+ rounds: per round its public parameters, the
server's protocol state (public keys, encrypted shares, masked inputs, unmasking shares:
what :class:`federated.SecAggServer` holds, never a plaintext update), the messages
waiting for each in-round client id, the hashes of the participants' round tickets, the
spent token hashes, and the public lineage of global parameters. No row names an
enrolment, an install id or an address, and no row carries a time finer than the round's
own (opened, stage deadline, closed). The ``models`` table is the lineage of global
parameters: each version's status (``live``, ``candidate`` awaiting the promotion
policy, ``held`` by it), the reranker version it was published as, and the decision;
``live_model`` names the version devices train. Per-client rows are ``WITHOUT ROWID`` tables keyed
by random values, so insertion order (which could line up a check-in with a token) is
not kept; they are deleted when the round closes.

``issuer.sqlite3`` holds the token issuer's side: the master secret and, per enrolment,
the SHA-256 of its credential and how many tokens it took on its last day. It never sees
a token input, so nothing links the two files.

Both use WAL with ``synchronous=FULL``: whatever a request acknowledged survives a
``kill -9``. Writers take SQLite's write lock with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from serving._sqlite import open_store, transaction

__all__ = ["ISSUER_FILE", "ROUNDS_FILE", "connect", "transaction"]

ROUNDS_FILE = "rounds.sqlite3"
ISSUER_FILE = "issuer.sqlite3"

_ROUNDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS secure_rounds (
    round INTEGER PRIMARY KEY,
    round_id BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'aggregated', 'abandoned')),
    stage TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    rotation_seed INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    opened_at REAL NOT NULL,
    stage_deadline REAL NOT NULL,
    n_clients INTEGER,
    params TEXT,
    server_state BLOB,
    closed_at REAL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS participants (
    round INTEGER NOT NULL,
    ticket_hash BLOB NOT NULL,
    client_id INTEGER,
    left_round INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round, ticket_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS participants_client ON participants(round, client_id);
CREATE TABLE IF NOT EXISTS outbox (
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (round, stage, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (round, stage, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spent_tokens (
    token_hash BLOB PRIMARY KEY,
    day INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    model_version INTEGER PRIMARY KEY,
    parameters BLOB NOT NULL,
    strategy_state BLOB
);
CREATE TABLE IF NOT EXISTS live_model (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    model_version INTEGER NOT NULL
);
"""

# Columns added after the first stores were written (added in place when missing).
_ADDED_COLUMNS = {
    "secure_rounds": [("lineage", "TEXT"), ("stage_progress", "INTEGER"),
                      ("stage_extensions", "INTEGER")],
    "models": [("status", "TEXT NOT NULL DEFAULT 'live'"), ("artifact", "TEXT"),
               ("base_version", "INTEGER"), ("from_round", "INTEGER"), ("decision", "TEXT"),
               ("claim_pid", "INTEGER"), ("claim_at", "REAL")],
}

_ISSUER_SCHEMA = """
CREATE TABLE IF NOT EXISTS issuer_key (
    name TEXT PRIMARY KEY,
    secret BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolments (
    credential_hash BLOB PRIMARY KEY,
    issued_day INTEGER NOT NULL,
    issued INTEGER NOT NULL
) WITHOUT ROWID;
"""


def connect(path: Path, *, issuer: bool = False, busy_timeout_ms: int = 60_000
            ) -> sqlite3.Connection:
    """Open (creating with its schema) one of the two stores; autocommit mode.

    Parameters
    ----------
    path : Path
        The SQLite file.
    issuer : bool
        The issuer's schema instead of the rounds'.
    busy_timeout_ms : int
        How long a writer waits for the write lock.
    """
    conn = open_store(path, _ISSUER_SCHEMA if issuer else _ROUNDS_SCHEMA,
                      busy_timeout_ms=busy_timeout_ms)
    if not issuer:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    with transaction(conn):
                        # another process may have added it meanwhile
                        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                        if name not in have:
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
    return conn
