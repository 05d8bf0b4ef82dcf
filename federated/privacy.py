"""The privacy maths as pure functions: the building blocks of the accountants.

On-device clipping and Gaussian noise, the distributed discrete Gaussian (its encoding,
sampler and Rényi-DP bound) and the amplification formulas. The platform applies them
for every run; :class:`federated.PrivacyLedger`, :class:`federated.DevicePrivacyAccountant`
and :func:`federated.calibrate_noise_multiplier` are what a run's user calls. The server's
secure rounds, tests and benchmarks use these pieces on their own.
"""

from federated._accounting import (
    assumptions_met,
    colluding_clients,
    collusion_statement,
    fmt21_amplification_delta,
    fmt21_shuffle_epsilon,
    guarantee_label,
    honest_reports,
    local_epsilon,
    max_affordable_rounds,
    poisson_amplified,
    shuffled_gaussian_round,
    unmask_shortfall,
)
from federated._ddg import (
    DDG_RDP_ORDERS,
    DiscreteGaussianEncoding,
    ddg_round_rdp,
    ddg_tau,
    hadamard_transform,
    rounded_l2_sensitivity,
    sample_discrete_gaussian,
    secure_noise_generator,
)
from federated._local_dp import add_gaussian_noise, clip_deltas, l2_norms

__all__ = [
    "DDG_RDP_ORDERS",
    "DiscreteGaussianEncoding",
    "add_gaussian_noise",
    "assumptions_met",
    "clip_deltas",
    "colluding_clients",
    "collusion_statement",
    "ddg_round_rdp",
    "ddg_tau",
    "fmt21_amplification_delta",
    "fmt21_shuffle_epsilon",
    "guarantee_label",
    "hadamard_transform",
    "honest_reports",
    "l2_norms",
    "local_epsilon",
    "max_affordable_rounds",
    "poisson_amplified",
    "rounded_l2_sensitivity",
    "sample_discrete_gaussian",
    "secure_noise_generator",
    "shuffled_gaussian_round",
    "unmask_shortfall",
]
