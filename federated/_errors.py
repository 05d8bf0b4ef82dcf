"""Exception classes of the federated platform (all in one module)."""

from __future__ import annotations

from data import ConfigError, StickerSuggestError

__all__ = [
    "CheckpointError",
    "FederatedConfigError",
    "FederatedError",
    "PrivacyBudgetError",
    "TaskNotFoundError",
    "UploadError",
]


class FederatedError(StickerSuggestError):
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
