"""Serving: the Flask app, its update store, model registry and A/B assignment.

``create_app(config=None)`` is the application factory (``stickers serve`` runs it under
gunicorn). No ML happens here: ranking is ``reranker.Suggester``, cold start is the
stage-1 artifact, upload validation and aggregation are the ``federated`` platform's.
"""

from serving._app import create_app
from serving._arms import INSTALL_ID_HEADER, assign_arm, bucket
from serving._config import ArmConfig, ExperimentConfig, ServingConfig
from serving._errors import PROBLEM_JSON, ApiError
from serving._metrics import ServingMetrics
from serving._openapi import openapi_document
from serving._registry import ModelRegistry, ModelSet, list_models, promote, rollback
from serving._rounds import AggregationResult, aggregate_round, open_next_round
from serving._state import ServingState
from serving._store import RoundSpec, StoreRejectedError, UpdateStore, update_digest

__all__ = [
    "INSTALL_ID_HEADER",
    "PROBLEM_JSON",
    "AggregationResult",
    "ApiError",
    "ArmConfig",
    "ExperimentConfig",
    "ModelRegistry",
    "ModelSet",
    "RoundSpec",
    "ServingConfig",
    "ServingMetrics",
    "ServingState",
    "StoreRejectedError",
    "UpdateStore",
    "aggregate_round",
    "assign_arm",
    "bucket",
    "create_app",
    "list_models",
    "open_next_round",
    "openapi_document",
    "promote",
    "rollback",
    "update_digest",
]
