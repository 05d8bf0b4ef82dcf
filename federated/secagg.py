"""Secure rounds: SecAgg+ message by message and single-use anonymous admission tokens.

The trainer runs the protocol for every simulated round
(``FederatedConfig.secure_aggregation``); this submodule is for code that drives it
step by step — the server's secure rounds over HTTP, the device client, tests, the
benchmark against Flower: the client and server state machines, their messages, the
parameter choice, Shamir sharing, the modular sum, and the RFC 9497 VOPRF tokens that
admit a device to a round without identifying it.
"""

from federated import _secagg, _tokens
from federated._secagg import *  # noqa: F403
from federated._shamir import reconstruct, split
from federated._tokens import *  # noqa: F403
from federated._trainer import modular_sum

# Derived from the private modules' lists (the typing spec's form; mypy reads it).
__all__ = ["modular_sum", "reconstruct", "split"]
__all__ += _secagg.__all__
__all__ += _tokens.__all__
