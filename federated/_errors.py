"""Exception classes of the federated platform (all in one module).

The platform is application-agnostic, so its errors derive from its own root,
:class:`FederatedError`, not from any application package's. One exception keeps a
second parent for the callers that already catch it: :class:`FederatedConfigError`
is also the project's shared :class:`data.ConfigError` (the config loader every
component uses raises that family). Callers that map errors to exit codes or HTTP
statuses should catch :class:`FederatedError` first.
"""

from __future__ import annotations

from data import ConfigError

__all__ = [
    "CheckpointError",
    "FederatedConfigError",
    "FederatedError",
    "PrivacyBudgetError",
    "TaskNotFoundError",
    "UploadError",
]


class FederatedError(Exception):
    """Base class of every error the federated platform raises on purpose."""


class FederatedConfigError(FederatedError, ConfigError):
    """A federated configuration value is invalid (the message names it and the range)."""


class PrivacyBudgetError(FederatedError):
    """A run would spend more privacy than its target (ε, δ) allows; it did not start."""


class UploadError(FederatedError, ValueError):
    """An upload payload is malformed, carries forbidden fields, or is stale."""


class CheckpointError(FederatedError):
    """A checkpoint is unreadable or belongs to a different run configuration."""


class TaskNotFoundError(FederatedError, LookupError):
    """No federated task is registered under the requested name."""
