"""The server's rounds: their building blocks, for tests and tools that drive rounds.

:func:`serving.open_next_round` and :func:`serving.aggregate_round` run a plain round and
the app's secure routes run SecAgg+ rounds; this submodule is for tests and tools that
drive them step by step: the federated config of a round, its opening record in the
server's persistent privacy ledger and the privacy after it, the ledger itself and its
budget policy, the secure round engine, its config and its ledger source (:data:`SECURE`),
the reranker publisher that turns an aggregate into a version, and the update store's
round spec and refusals.
"""

from serving._ledger import (
    BudgetExhaustedError,
    BudgetPolicy,
    LedgerEntry,
    ServerLedger,
    lineage_of,
    simulated_events,
)
from serving._publish import reranker_publisher
from serving._rounds import (
    AggregationResult,
    federated_config_for,
    privacy_after,
    record_round_opening,
    server_ledger,
)
from serving._secure_rounds import SECURE, SecureRounds, SecureRoundsConfig
from serving._store import RoundSpec, StoreRejectedError, update_digest

__all__ = [
    "SECURE",
    "AggregationResult",
    "BudgetExhaustedError",
    "BudgetPolicy",
    "LedgerEntry",
    "RoundSpec",
    "SecureRounds",
    "SecureRoundsConfig",
    "ServerLedger",
    "StoreRejectedError",
    "federated_config_for",
    "lineage_of",
    "privacy_after",
    "record_round_opening",
    "reranker_publisher",
    "server_ledger",
    "simulated_events",
    "update_digest",
]
