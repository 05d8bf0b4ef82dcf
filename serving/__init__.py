"""Serving: the Flask app, its update store, model registry and A/B assignment.

``create_app(config=None)`` is the application factory (``stickers serve`` runs it under
gunicorn). No ML happens here: ranking is ``reranker.Suggester``, cold start is the
stage-1 artifact, upload validation and aggregation are the ``federated`` platform's.

This face holds what a user of the server calls: the factory and its config, the A/B
assignment, the model registry and promotions, the update store and plain rounds, the
problem-details error. The building blocks, for tests and tools, are in three documented
submodules: :mod:`serving.http` (requests, encoding, documents, metrics, state),
:mod:`serving.rounds` (round engines, the privacy ledger, publishing) and
:mod:`serving.versions` (the version board, promotion history and policy).
"""

from serving._app import create_app
from serving._arms import INSTALL_ID_HEADER, assign_arm, bucket
from serving._config import ArmConfig, ExperimentConfig, ServingConfig
from serving._errors import PROBLEM_JSON, ApiError
from serving._registry import ModelRegistry, list_models, promote, rollback
from serving._rounds import aggregate_round, open_next_round
from serving._store import UpdateStore

__all__ = [
    "INSTALL_ID_HEADER",
    "PROBLEM_JSON",
    "ApiError",
    "ArmConfig",
    "ExperimentConfig",
    "ModelRegistry",
    "ServingConfig",
    "UpdateStore",
    "aggregate_round",
    "assign_arm",
    "bucket",
    "create_app",
    "list_models",
    "open_next_round",
    "promote",
    "rollback",
]
