"""The application-agnostic federated learning platform.

Simulated devices (eligibility, retention, latency, dropout), rounds with Poisson
sampling and deadlines, on-device clipping and noise — the distributed discrete
Gaussian summed by SecAgg+ secure aggregation by default — aggregation strategies
(FedAvg, FedAdam, trimmed mean; norm bound and DP as wrappers), privacy accounting with
``dp_accounting``, and a resumable trainer. It trains any :class:`FederatedTask`; it
never knows which application a task belongs to.
"""

from federated._accounting import (
    GUARANTEE_KINDS,
    DevicePrivacyAccountant,
    PrivacyLedger,
    RoundPrivacyEvent,
    calibrate_noise_multiplier,
    fmt21_amplification_delta,
    fmt21_shuffle_epsilon,
    guarantee_label,
    guarantees_headline_first,
    local_epsilon,
    max_affordable_rounds,
    poisson_amplified,
    privacy_headline,
    shuffled_gaussian_round,
)
from federated._checkpoint import load_latest_checkpoint, save_checkpoint
from federated._client import STREAM_NAMES, DeviceRoundResult, DeviceRuntime, RandomStreams
from federated._config import (
    DeviceConfig,
    FederatedConfig,
    PrivacyConfig,
    RoundConfig,
    SecureAggregationConfig,
    StrategyConfig,
)
from federated._ddg import DiscreteGaussianEncoding, secure_noise_generator
from federated._device import DevicePopulation
from federated._dp import DifferentialPrivacy
from federated._errors import (
    CheckpointError,
    FederatedConfigError,
    FederatedError,
    PrivacyBudgetError,
    TaskNotFoundError,
    UploadError,
)
from federated._local_dp import add_gaussian_noise, clip_deltas, l2_norms
from federated._norm_bound import NormBound, noisy_norm_bound
from federated._publish import (
    ExportFiles,
    VersionRecords,
    publish_model,
    publish_version,
    write_privacy_json,
)
from federated._recipe import RoundRecipe, build_strategy
from federated._secagg import Message as SecAggMessage
from federated._secagg import (
    SecAggAbandoned,
    SecAggClient,
    SecAggParams,
    SecAggProtocolError,
    SecAggServer,
    choose_degree_and_threshold,
    run_secagg_round,
)
from federated._server import RoundOutcome, Server
from federated._strategy import (
    Aggregate,
    RegisteredStrategy,
    RoundPlan,
    Strategy,
    StrategyOptions,
    StrategyWrapper,
    available_strategies,
    register_strategy,
    registered_strategy,
)
from federated._sweep import privacy_utility_sweep
from federated._synthetic import SyntheticRegressionTask
from federated._task import (
    TASK_ENTRY_POINT_GROUP,
    FederatedTask,
    LocalResult,
    StatefulTask,
    TaskContext,
    TaskFactory,
    available_tasks,
    load_task,
    register_task,
)
from federated._tokens import (
    Token,
    TokenError,
    TokenIssuer,
    finalize_tokens,
    request_tokens,
    token_day,
)
from federated._trainer import FederatedTrainer, RoundRecord, modular_sum, run_training
from federated._upload import UPLOAD_FIELDS, Upload, UploadBatch, parse_upload
from federated.strategies import FedAdam, FedAvg, TrimmedMean, trimmed_mean

__all__ = [
    "GUARANTEE_KINDS",
    "STREAM_NAMES",
    "TASK_ENTRY_POINT_GROUP",
    "UPLOAD_FIELDS",
    "Aggregate",
    "CheckpointError",
    "DeviceConfig",
    "DevicePopulation",
    "DevicePrivacyAccountant",
    "DeviceRoundResult",
    "DeviceRuntime",
    "DifferentialPrivacy",
    "DiscreteGaussianEncoding",
    "ExportFiles",
    "FedAdam",
    "FedAvg",
    "FederatedConfig",
    "FederatedConfigError",
    "FederatedError",
    "FederatedTask",
    "FederatedTrainer",
    "LocalResult",
    "NormBound",
    "PrivacyBudgetError",
    "PrivacyConfig",
    "PrivacyLedger",
    "RandomStreams",
    "RegisteredStrategy",
    "RoundConfig",
    "RoundOutcome",
    "RoundPlan",
    "RoundPrivacyEvent",
    "RoundRecipe",
    "RoundRecord",
    "SecAggAbandoned",
    "SecAggClient",
    "SecAggMessage",
    "SecAggParams",
    "SecAggProtocolError",
    "SecAggServer",
    "SecureAggregationConfig",
    "Server",
    "StatefulTask",
    "Strategy",
    "StrategyConfig",
    "StrategyOptions",
    "StrategyWrapper",
    "SyntheticRegressionTask",
    "TaskContext",
    "TaskFactory",
    "TaskNotFoundError",
    "Token",
    "TokenError",
    "TokenIssuer",
    "TrimmedMean",
    "Upload",
    "UploadBatch",
    "UploadError",
    "VersionRecords",
    "add_gaussian_noise",
    "available_strategies",
    "available_tasks",
    "build_strategy",
    "calibrate_noise_multiplier",
    "choose_degree_and_threshold",
    "clip_deltas",
    "finalize_tokens",
    "fmt21_amplification_delta",
    "fmt21_shuffle_epsilon",
    "guarantee_label",
    "guarantees_headline_first",
    "l2_norms",
    "load_latest_checkpoint",
    "load_task",
    "local_epsilon",
    "max_affordable_rounds",
    "modular_sum",
    "noisy_norm_bound",
    "parse_upload",
    "poisson_amplified",
    "privacy_headline",
    "privacy_utility_sweep",
    "publish_model",
    "publish_version",
    "register_strategy",
    "register_task",
    "registered_strategy",
    "request_tokens",
    "run_secagg_round",
    "run_training",
    "save_checkpoint",
    "secure_noise_generator",
    "shuffled_gaussian_round",
    "token_day",
    "trimmed_mean",
    "write_privacy_json",
]
