"""The application-agnostic federated learning platform.

Simulated devices (eligibility, retention, latency, dropout), rounds with Poisson
sampling and deadlines, on-device clipping and noise — the distributed discrete
Gaussian summed by SecAgg+ secure aggregation by default — aggregation strategies
(FedAvg, FedAdam, trimmed mean; norm bound and DP as wrappers), privacy accounting with
``dp_accounting``, and a resumable trainer. It trains any :class:`FederatedTask`; it
never knows which application a task belongs to.

This face holds what a user of the platform calls: the config, the task interface, the
trainer, the round recipe and the server side of a round, the privacy ledger and
accountant, publishing, uploads and the errors. The building blocks underneath — for the
server's secure rounds, tests, benchmarks and new pieces — are in five documented
submodules: :mod:`federated.strategies` (one file per aggregation algorithm, the strategy
base and registry, the norm-bound and DP wrappers), :mod:`federated.privacy` (the privacy
maths), :mod:`federated.secagg` (SecAgg+ message by message and the admission tokens),
:mod:`federated.simulation` (the simulated devices) and :mod:`federated.device` (the real
device client and its transport).
"""

from federated._accounting import (
    GUARANTEE_KINDS,
    DevicePrivacyAccountant,
    PrivacyLedger,
    RoundPrivacyEvent,
    calibrate_noise_multiplier,
    guarantees_headline_first,
    privacy_headline,
)
from federated._checkpoint import load_latest_checkpoint
from federated._config import (
    DeviceConfig,
    FederatedConfig,
    PrivacyConfig,
    RoundConfig,
    SecureAggregationConfig,
    StrategyConfig,
)
from federated._errors import (
    CheckpointError,
    FederatedConfigError,
    FederatedError,
    PrivacyBudgetError,
    TaskNotFoundError,
    UploadError,
)
from federated._publish import (
    ExportFiles,
    VersionRecords,
    publish_model,
    publish_version,
    write_privacy_json,
)
from federated._recipe import RoundRecipe, build_strategy
from federated._secagg import SecAggAbandoned, SecAggProtocolError
from federated._server import RoundOutcome, Server
from federated._strategy import RoundPlan
from federated._sweep import privacy_utility_sweep
from federated._synthetic import SyntheticRegressionTask
from federated._task import (
    TASK_ENTRY_POINT_GROUP,
    TASK_PACKAGE,
    FederatedTask,
    LocalResult,
    StatefulTask,
    TaskContext,
    TaskFactory,
    available_tasks,
    discover_tasks,
    load_task,
    project_tasks,
    register_task,
)
from federated._tokens import TokenError
from federated._trainer import FederatedTrainer, RoundRecord, run_training
from federated._upload import UPLOAD_FIELDS, Upload, UploadBatch, parse_upload

__all__ = [
    "GUARANTEE_KINDS",
    "TASK_ENTRY_POINT_GROUP",
    "TASK_PACKAGE",
    "UPLOAD_FIELDS",
    "CheckpointError",
    "DeviceConfig",
    "DevicePrivacyAccountant",
    "ExportFiles",
    "FederatedConfig",
    "FederatedConfigError",
    "FederatedError",
    "FederatedTask",
    "FederatedTrainer",
    "LocalResult",
    "PrivacyBudgetError",
    "PrivacyConfig",
    "PrivacyLedger",
    "RoundConfig",
    "RoundOutcome",
    "RoundPlan",
    "RoundPrivacyEvent",
    "RoundRecipe",
    "RoundRecord",
    "SecAggAbandoned",
    "SecAggProtocolError",
    "SecureAggregationConfig",
    "Server",
    "StatefulTask",
    "StrategyConfig",
    "SyntheticRegressionTask",
    "TaskContext",
    "TaskFactory",
    "TaskNotFoundError",
    "TokenError",
    "Upload",
    "UploadBatch",
    "UploadError",
    "VersionRecords",
    "available_tasks",
    "build_strategy",
    "calibrate_noise_multiplier",
    "discover_tasks",
    "guarantees_headline_first",
    "load_latest_checkpoint",
    "load_task",
    "parse_upload",
    "privacy_headline",
    "privacy_utility_sweep",
    "project_tasks",
    "publish_model",
    "publish_version",
    "register_task",
    "run_training",
    "write_privacy_json",
]
