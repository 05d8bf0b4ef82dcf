"""One round recipe: every value a federated round derives from its config, resolved once.

The simulator (:class:`federated.FederatedTrainer`), the HTTP rounds of the server and
the CLI all assemble a round the same way, through:

* :func:`build_strategy` — the registered strategy with its typed options, wrapped in
  :class:`NormBound` (``norm_bound = "auto"`` resolved for P parameters) and
  :class:`DifferentialPrivacy` as the config asks;
* :meth:`federated.Server.from_config` — the server of that strategy and schedule;
* :meth:`federated.PrivacyLedger.planned_from` — the planned privacy ledger, whose
  events carry the mechanism the rounds actually run (the distributed discrete Gaussian
  under secure aggregation, else the continuous Gaussian).

:class:`RoundRecipe` is where those values are computed; each caller states only what
it knows (P, and whether its rounds run secure aggregation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from federated._config import FederatedConfig
from federated._ddg import DiscreteGaussianEncoding
from federated._dp import DifferentialPrivacy
from federated._errors import FederatedConfigError
from federated._norm_bound import NormBound, noisy_norm_bound
from federated._strategy import Strategy, registered_strategy

__all__ = ["RoundRecipe", "build_strategy"]


@dataclass(frozen=True)
class RoundRecipe:
    """A federated config resolved for a model of P parameters.

    Build it with :meth:`from_config`; the attributes are the derived values.

    Attributes
    ----------
    config : FederatedConfig
        The config it was resolved from.
    n_parameters : int
        P, the length of the global parameter vector.
    secure : bool
        Rounds run secure aggregation with the discrete encoding (the server only sees
        the modular sum of the reports).
    norm_bound : float or None
        The server's upload norm bound (``auto`` resolved), None when none is set.
    encoding : DiscreteGaussianEncoding or None
        The devices' discrete encoding when ``secure``.
    """

    config: FederatedConfig
    n_parameters: int
    secure: bool
    norm_bound: float | None
    encoding: DiscreteGaussianEncoding | None

    @classmethod
    def from_config(cls, config: FederatedConfig, n_parameters: int, *,
                    secure: bool | None = None) -> RoundRecipe:
        """Resolve ``config`` for P = ``n_parameters``.

        Parameters
        ----------
        config : FederatedConfig
        n_parameters : int
            P >= 1.
        secure : bool, optional
            Whether the caller's rounds run secure aggregation. Default: the config's
            (``privacy.enabled`` and ``secure_aggregation.enabled``). The HTTP rounds pass
            False until devices run the protocol over HTTP.

        Raises
        ------
        FederatedConfigError
            ``norm_bound = "auto"`` without privacy, or secure aggregation with a strategy
            that is not sum-based or with a norm bound (it needs individual reports).
        """
        if n_parameters < 1:
            raise FederatedConfigError(f"n_parameters={n_parameters} should be >= 1")
        p, s = config.privacy, config.strategy
        if secure is None:
            secure = p.enabled and config.secure_aggregation.enabled
        if secure and not p.enabled:
            raise FederatedConfigError("secure aggregation with the discrete encoding needs "
                                       "privacy.enabled (devices clip and add the noise)")
        norm_bound: float | None = None
        if s.norm_bound == "auto":
            if not p.enabled:
                raise FederatedConfigError("norm_bound='auto' needs privacy.enabled (it is "
                                           "derived from the clip norm and noise)")
            norm_bound = noisy_norm_bound(p.clip_norm, p.noise_multiplier, n_parameters)
        elif s.norm_bound is not None:
            norm_bound = float(s.norm_bound)
        encoding = None
        if secure:
            if not s.sum_based or s.norm_bound is not None:
                raise FederatedConfigError(
                    f"secure aggregation needs a sum-based strategy without a norm bound (got "
                    f"strategy.name={s.name!r}, norm_bound={s.norm_bound!r}); set "
                    "secure_aggregation.enabled=false to see individual uploads")
            sa = config.secure_aggregation
            encoding = DiscreteGaussianEncoding.plan(
                dimension=n_parameters, clip_norm=p.clip_norm,
                noise_multiplier=p.noise_multiplier, bits=sa.bits, n_max=sa.n_max,
                wrap_probability=sa.wrap_probability)
        return cls(config, n_parameters, secure, norm_bound, encoding)

    def strategy(self) -> Strategy:
        """A fresh strategy: the registered one, wrapped in NormBound and DP as configured."""
        s, p = self.config.strategy, self.config.privacy
        inner = registered_strategy(s.name).strategy.from_options(s.options())
        if self.norm_bound is not None:
            inner = NormBound(inner, max_norm=self.norm_bound)
        if p.enabled:
            return DifferentialPrivacy(inner, p.clip_norm, p.noise_multiplier,
                                       self.config.rounds.min_reports)
        return inner

    def mechanism(self) -> dict[str, Any]:
        """The mechanism fields of this recipe's privacy events (empty: continuous Gaussian).

        Under secure aggregation: ``mechanism="ddg"``, the sensitivity after rounding in
        units of C, KLS21's τ per coordinate and the rotated dimension D.
        """
        if self.encoding is None:
            return {}
        _, tau_dim, _ = self.encoding.epsilon_terms(self.config.rounds.min_reports)
        return {"mechanism": "ddg",
                "sensitivity": self.encoding.sensitivity / self.encoding.clip_norm,
                "tau": tau_dim / self.encoding.padded_dimension,
                "dimension": self.encoding.padded_dimension}

    @property
    def upload_norm_bound(self) -> float:
        """The L2 norm above which no honest upload can be: the configured norm bound,
        else the noisy-upload bound under privacy, else ∞ (nothing bounds an upload)."""
        if self.norm_bound is not None:
            return self.norm_bound
        p = self.config.privacy
        if p.enabled:
            return noisy_norm_bound(p.clip_norm, p.noise_multiplier, self.n_parameters)
        return math.inf


def build_strategy(config: FederatedConfig, n_parameters: int, *,
                   secure: bool | None = None) -> Strategy:
    """The configured strategy for P = ``n_parameters``, every derived value resolved.

    Shorthand for ``RoundRecipe.from_config(config, n_parameters, secure=secure).strategy()``.
    """
    return RoundRecipe.from_config(config, n_parameters, secure=secure).strategy()
