"""Secure rounds: SecAgg+ message by message and single-use anonymous admission tokens.

The trainer runs the protocol for every simulated round
(``FederatedConfig.secure_aggregation``); this submodule is for code that drives it
step by step — the server's secure rounds over HTTP, the device client, tests, the
benchmark against Flower: the client and server state machines, their messages, the
parameter choice, Shamir sharing, the modular sum, and the RFC 9497 VOPRF tokens that
admit a device to a round without identifying it.
"""

from federated._secagg import (
    ConsistencySignature,
    EncryptedShares,
    ForwardedShares,
    KeyAdvertisement,
    MaskedInput,
    Message,
    NeighbourKeys,
    RoundSetup,
    SecAggAbandoned,
    SecAggClient,
    SecAggParams,
    SecAggProtocolError,
    SecAggServer,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    choose_degree_and_threshold,
    run_secagg_round,
    survivor_bitmap,
    survivor_ids,
)
from federated._shamir import reconstruct, split
from federated._tokens import (
    PendingTokens,
    Token,
    TokenError,
    TokenIssuer,
    finalize_tokens,
    request_tokens,
    token_day,
)
from federated._trainer import modular_sum

__all__ = [
    "ConsistencySignature",
    "EncryptedShares",
    "ForwardedShares",
    "KeyAdvertisement",
    "MaskedInput",
    "Message",
    "NeighbourKeys",
    "PendingTokens",
    "RoundSetup",
    "SecAggAbandoned",
    "SecAggClient",
    "SecAggParams",
    "SecAggProtocolError",
    "SecAggServer",
    "SurvivorList",
    "Token",
    "TokenError",
    "TokenIssuer",
    "UnmaskRequest",
    "UnmaskShares",
    "choose_degree_and_threshold",
    "finalize_tokens",
    "modular_sum",
    "reconstruct",
    "request_tokens",
    "run_secagg_round",
    "split",
    "survivor_bitmap",
    "survivor_ids",
    "token_day",
]
