"""SecAgg+: secure aggregation with a sparse neighbour graph, as transport-agnostic state machines.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS) with the log-degree neighbour graph of Bell et al. 2020 ("Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS). The server learns
the sum modulo 2^b of the inputs of the clients that survive to the masked-input stage,
and nothing else about any single input, provided at least t neighbours of each
client stay honest; a round with fewer than t survivors anywhere is abandoned before
anything is unmasked.

Per round, each client ``u`` with neighbours N(u) (a random Harary graph of even degree
k over a secret permutation):

0. **setup** — the server sends the round id, the client's id, N(u), t, b, the
   dimension D.
1. **advertise keys** — u sends two X25519 public keys (c: encryption, s: masks) and an
   Ed25519 key for the consistency check.
2. **share keys** — u draws a 32-byte self-mask seed b_u, Shamir-shares b_u and the
   32-byte private s key among its neighbours that advertised (threshold t), and sends
   each share encrypted with AES-256-GCM under HKDF-SHA256(X25519(c_u, c_v)).
3. **masked input** — u sends y_u = x_u + PRG(b_u) + Σ_v ±PRG(s_uv) mod 2^b over the
   neighbours v whose shares it received, s_uv = HKDF(X25519(s_u, s_v)); PRG is
   AES-256-CTR keyed by the 256-bit seed (full-length seeds, never reduced).
4. **consistency check** — the server announces the survivors U3 as a bitmap of n bits
   (⌈n/8⌉ bytes, the same bytes object for every client: 1.25 kB at n = 10,000, where
   a list of ids was ~36 kB); u reads its own and its neighbours' bits and signs
   (round id, SHA-256(bitmap)) with Ed25519.
5. **unmasking** — given ≥ t neighbours' valid signatures of the same U3, u reveals, for
   each neighbour v, the share of b_v if v survived and the share of s_v if v dropped —
   never both for one v. The server reconstructs, removes the masks and outputs the sum.

Why the whole U3 and not only u's neighbourhood: the signatures bind one global set, so
two neighbours of v cannot be told different things about v unless both lists gather t
signatures; a per-neighbourhood list would leave nothing common to sign, and the server
could then collect b_v shares from some of v's neighbours and s_v shares from others
(2t - k colluding neighbours would suffice; 2 at n = 10,000). A bitmap keeps that binding
at n/8 bytes, which stays below the masked input (4D bytes) for any n < 32D.

Cost: the server's :meth:`SecAggServer.receive` is O(1) per message (O(k) for shares:
membership tests against the stage inboxes and precomputed neighbour sets) and its
unmasking groups the shares by owner in one pass (O(n·k)); each client's work is O(k)
plus the n/8-byte bitmap.

Every message carries the round id and is typed; a state machine refuses a message of
the wrong type, round, stage or sender, and any message it already handled (replay),
with a :class:`SecAggProtocolError` that says which. Both sides serialise their
state (:meth:`SecAggClient.to_bytes`, :meth:`SecAggServer.to_bytes`) so a round can be
checkpointed mid-protocol. Secrets come from the OS CSPRNG through ``cryptography``;
the graph permutation from ``secrets``.

Threat model: an honest-but-curious server, colluding with up to a fraction γ of the
clients (``corruption_rate``), clients that drop out at any stage up to a fraction δ
(``dropout_rate``). Not covered: a malicious server that lies about the cohort or
announces different survivor sets through keys it forges (there is no PKI: the
consistency check binds survivors to the keys advertised in the round), and Sybil
clients (one party running many clients) — admission tokens are the device-client
issue's concern.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from scipy import stats

from federated import _shamir, _wire
from federated._errors import FederatedError

__all__ = [
    "ConsistencySignature",
    "EncryptedShares",
    "ForwardedShares",
    "KeyAdvertisement",
    "MaskedInput",
    "Message",
    "NeighbourKeys",
    "RoundSetup",
    "SecAggAbandoned",
    "SecAggClient",
    "SecAggParams",
    "SecAggProtocolError",
    "SecAggServer",
    "SurvivorList",
    "UnmaskRequest",
    "UnmaskShares",
    "choose_degree_and_threshold",
    "run_secagg_round",
    "survivor_bitmap",
    "survivor_ids",
]

THREAT_MODEL = (
    "honest-but-curious server; up to corruption_rate of the clients colluding with it; "
    "dropouts at every stage. Not covered: a malicious server that lies about the cohort "
    "or forges keys (no PKI: the consistency check binds survivors only to the keys "
    "advertised in the round) and Sybil clients (admission with anonymous single-use "
    "tokens belongs to the device-client issue)")

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


class SecAggProtocolError(FederatedError, ValueError):
    """A protocol message is of the wrong type, round, stage or sender, or is a replay."""


class SecAggAbandoned(FederatedError):  # noqa: N818 - it is an outcome, not a bug
    """The round cannot complete (fewer than t survivors somewhere); nothing was unmasked."""


# ------------------------------------------------------------------- parameters


def choose_degree_and_threshold(n: int, *, dropout_rate: float, corruption_rate: float,
                                security_bits: int = 40, correctness_bits: int = 20
                                ) -> tuple[int, int]:
    """Neighbour-graph degree k and Shamir threshold t for n clients.

    Each client's k neighbours are a random subset of the others (random Harary graph,
    Bell et al. 2020, §3). With dropout rate δ and corruption rate γ, a neighbourhood
    holds S ~ Binomial(k, 1 - δ) survivors and A ~ Binomial(k, γ) corrupt clients. We
    need, by a union bound over the n clients:

    * **security**: the server plus corrupt neighbours never hold t shares of one
      client's secret on their own: n · P[A >= t] <= 2^-σ (σ = ``security_bits``);
    * **correctness**: every client keeps at least t surviving neighbours to unmask it:
      n · P[S < t] <= 2^-η (η = ``correctness_bits``);
    * t > k / 2 so that no two disjoint halves of a neighbourhood can both reconstruct
      (the server cannot get both the self-mask and the key of one client).

    k is the smallest even degree for which some t satisfies all three; t is the
    smallest such t (most tolerance of dropouts). If no k < n works, or n is small,
    the graph is complete (k = n - 1, the original SecAgg) with t = ⌊(n - 1)/2⌋ + 1.
    k grows as O(log n): δ = 0.1, γ = 0.05 give (k, t) = (34, 18) at n = 100,
    (38, 20) at n = 1,000 and (42, 22) at n = 10,000 (the tests check the bounds).

    Returns
    -------
    (k, t) : tuple of int
    """
    if n < 3:
        raise ValueError(f"n={n} clients should be >= 3 for secure aggregation")
    if not (0 <= dropout_rate < 1 and 0 <= corruption_rate < 0.5):
        raise ValueError(f"dropout_rate={dropout_rate} should be in [0, 1) and "
                         f"corruption_rate={corruption_rate} in [0, 0.5)")
    sec = 2.0 ** -security_bits / n
    cor = 2.0 ** -correctness_bits / n
    for k in range(4, n - 1, 2):
        ts = np.arange(k // 2 + 1, k + 1)
        insecure = stats.binom.sf(ts - 1, k, corruption_rate)  # P[A >= t]
        failing = stats.binom.cdf(ts - 1, k, 1.0 - dropout_rate)  # P[S < t]
        ok = np.flatnonzero((insecure <= sec) & (failing <= cor))
        if ok.size:
            return k, int(ts[ok[0]])
    k = n - 1
    return k, k // 2 + 1


def harary_neighbours(n: int, k: int, permutation: np.ndarray) -> list[list[int]]:
    """Neighbours of each client in the Harary graph H(k, n) relabelled by ``permutation``.

    Position i on the ring is connected to positions i ± 1 .. i ± k/2; client
    ``permutation[i]`` sits at position i. Returns sorted neighbour lists (no self).
    """
    if k >= n - 1:
        return [[v for v in range(n) if v != u] for u in range(n)]
    half = k // 2
    position = np.empty(n, np.int64)
    position[permutation] = np.arange(n)
    out = []
    for u in range(n):
        i = position[u]
        ring = [(i + off) % n for off in range(-half, half + 1) if off != 0]
        out.append(sorted(int(permutation[j]) for j in ring))
    return out


@dataclass(frozen=True)
class SecAggParams:
    """Public parameters of one SecAgg+ round.

    Attributes
    ----------
    n_clients : int
        Clients invited (ids 0..n-1).
    degree : int
        k, neighbours per client (n - 1: complete graph).
    threshold : int
        t, shares needed to reconstruct a client's secrets.
    bits : int
        b <= 32: inputs and sums live in Z_{2^b}.
    dimension : int
        D, length of every input vector.
    """

    n_clients: int
    degree: int
    threshold: int
    bits: int
    dimension: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 32:
            raise ValueError(f"bits={self.bits} should be in [1, 32]")
        if not 1 <= self.threshold <= self.degree < self.n_clients:
            raise ValueError(f"need 1 <= threshold={self.threshold} <= degree={self.degree} "
                             f"< n_clients={self.n_clients}")
        if self.dimension < 1:
            raise ValueError(f"dimension={self.dimension} should be >= 1")

    @classmethod
    def for_cohort(cls, n: int, *, bits: int, dimension: int, dropout_rate: float,
                   corruption_rate: float) -> SecAggParams:
        """Parameters with k and t from :func:`choose_degree_and_threshold`."""
        k, t = choose_degree_and_threshold(n, dropout_rate=dropout_rate,
                                           corruption_rate=corruption_rate)
        return cls(n, k, t, bits, dimension)

    @property
    def modulus_mask(self) -> int:
        """2^b - 1."""
        return (1 << self.bits) - 1


# --------------------------------------------------------------------- primitives


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def expand_mask(seed: bytes, dimension: int, bits: int) -> np.ndarray:
    """PRG(seed): D uniform integers mod 2^b from AES-256-CTR keyed by a 32-byte seed.

    Returns (D,) uint32. The key is used for this one stream only (zero counter block).
    """
    if len(seed) != 32:
        raise ValueError(f"mask seed of {len(seed)} bytes should be 32 (256 bits)")
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(enc.update(bytes(4 * dimension)), dtype="<u4").astype(np.uint32)
    if bits < 32:
        words &= np.uint32((1 << bits) - 1)
    return words


def _pair_info(kind: bytes, u: int, v: int) -> bytes:
    lo, hi = min(u, v), max(u, v)
    return kind + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")


def _mask_seed(private: X25519PrivateKey, public: bytes, round_id: bytes, u: int,
               v: int) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    return _hkdf(shared, round_id, _pair_info(b"secagg+ mask", u, v))


def _enc_key(private: X25519PrivateKey, public: bytes, round_id: bytes, u: int,
             v: int) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    return _hkdf(shared, round_id, _pair_info(b"secagg+ shares", u, v))


def _share_aad(round_id: bytes, sender: int, recipient: int) -> bytes:
    return round_id + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")


def _consistency_payload(round_id: bytes, bitmap: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(bitmap)
    return b"secagg+ survivors" + round_id + digest.finalize()


def survivor_bitmap(survivors: Iterable[int], n: int) -> bytes:
    """The set ``survivors`` ⊆ range(n) as ⌈n/8⌉ bytes, bit u of byte u // 8 (LSB first)."""
    bits = np.zeros(n, dtype=bool)
    bits[np.fromiter(survivors, dtype=np.int64)] = True
    return np.packbits(bits, bitorder="little").tobytes()


def survivor_ids(bitmap: bytes) -> tuple[int, ...]:
    """Inverse of :func:`survivor_bitmap`: the ids whose bit is set, ascending."""
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return tuple(int(u) for u in np.flatnonzero(bits))


def _has_survived(bitmap: bytes, u: int) -> bool:
    if u >> 3 >= len(bitmap):
        raise SecAggProtocolError(f"the survivor bitmap of {len(bitmap)} bytes does not "
                                  f"cover client {u}")
    return bool(bitmap[u >> 3] >> (u & 7) & 1)


# ----------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Message:
    """Base of every protocol message: the round id and the sender (-1: the server)."""

    round_id: bytes
    sender: int

    kind: ClassVar[str] = "message"
    _registry: ClassVar[dict[str, type[Message]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Message._registry[cls.kind] = cls

    def to_bytes(self) -> bytes:
        """The serialised form (see :mod:`federated._wire`)."""
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        return _wire.dumps({"kind": self.kind, "body": body})

    @staticmethod
    def from_bytes(data: bytes) -> Message:
        """Parse a serialised message of any kind.

        Raises
        ------
        SecAggProtocolError
            If the bytes are not a known message.
        """
        try:
            raw = _wire.loads(data)
            cls = Message._registry[raw["kind"]]
            return cls(**raw["body"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SecAggProtocolError(f"unreadable protocol message: {exc}") from exc


@dataclass(frozen=True)
class RoundSetup(Message):
    """Server → client, stage 0: who you are, your neighbours, t, b, D."""

    client_id: int = 0
    neighbours: tuple[int, ...] = ()
    threshold: int = 1
    bits: int = 32
    dimension: int = 1
    kind: ClassVar[str] = "round_setup"


@dataclass(frozen=True)
class KeyAdvertisement(Message):
    """Client → server, stage 1: X25519 keys (encryption c, masks s) and an Ed25519 key."""

    c_public: bytes = b""
    s_public: bytes = b""
    sig_public: bytes = b""
    kind: ClassVar[str] = "key_advertisement"


@dataclass(frozen=True)
class NeighbourKeys(Message):
    """Server → client: the advertised keys of its neighbours, {id: (c, s, sig)}."""

    keys: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    kind: ClassVar[str] = "neighbour_keys"


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Client → server, stage 2: {recipient: AES-GCM(nonce ‖ ciphertext)} of its shares."""

    ciphertexts: dict[int, bytes] = field(default_factory=dict)
    kind: ClassVar[str] = "encrypted_shares"


@dataclass(frozen=True)
class ForwardedShares(Message):
    """Server → client: the shares addressed to it, {sender: ciphertext}."""

    ciphertexts: dict[int, bytes] = field(default_factory=dict)
    kind: ClassVar[str] = "forwarded_shares"


@dataclass(frozen=True)
class MaskedInput(Message):
    """Client → server, stage 3: y_u (D,) uint32 in Z_{2^b}."""

    vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    kind: ClassVar[str] = "masked_input"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MaskedInput) and self.round_id == other.round_id
                and self.sender == other.sender and np.array_equal(self.vector, other.vector))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class SurvivorList(Message):
    """Server → client, stage 4: U3, the clients whose masked input arrived, as a bitmap.

    ``survivor_bitmap`` is :func:`survivor_bitmap` of U3 over the n clients (⌈n/8⌉ bytes).
    """

    survivor_bitmap: bytes = b""
    kind: ClassVar[str] = "survivor_list"


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Client → server: Ed25519 signature of (round id, U3)."""

    signature: bytes = b""
    kind: ClassVar[str] = "consistency_signature"


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Server → client, stage 5: U3 (the same bitmap) and the neighbours' signatures of it."""

    survivor_bitmap: bytes = b""
    signatures: dict[int, bytes] = field(default_factory=dict)
    kind: ClassVar[str] = "unmask_request"


@dataclass(frozen=True)
class UnmaskShares(Message):
    """Client → server: shares of b_v for surviving and of s_v for dropped neighbours."""

    self_mask_shares: dict[int, bytes] = field(default_factory=dict)
    key_shares: dict[int, bytes] = field(default_factory=dict)
    kind: ClassVar[str] = "unmask_shares"


def _coerce(msg: Message) -> Message:
    """Messages rebuilt from JSON carry lists where tuples are declared; normalise."""
    updates: dict[str, Any] = {}
    for name in ("neighbours",):
        if hasattr(msg, name) and not isinstance(getattr(msg, name), tuple):
            updates[name] = tuple(int(x) for x in getattr(msg, name))
    if isinstance(msg, NeighbourKeys):
        updates["keys"] = {int(k): tuple(v) for k, v in msg.keys.items()}
    if not updates:
        return msg
    return type(msg)(**{**{f.name: getattr(msg, f.name) for f in fields(msg)}, **updates})


# ------------------------------------------------------------------------- client

_CLIENT_STAGES = ("setup", "advertised", "shared", "masked", "signed", "done")


class SecAggClient:
    """One client's side of a SecAgg+ round; feed it server messages with :meth:`handle`.

    Parameters
    ----------
    vector : ndarray, shape (D,), uint32
        The client's input in Z_{2^b}.
    """

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = np.asarray(vector, dtype=np.uint32)
        self.stage = "new"
        self.setup: RoundSetup | None = None
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        self._sig = Ed25519PrivateKey.generate()
        self._b = os.urandom(32)
        self.keys: dict[int, tuple[bytes, bytes, bytes]] = {}
        self.received: dict[int, bytes] = {}
        self.survivors: tuple[int, ...] = ()  # the neighbours in U3
        self._bitmap = b""  # U3 as signed

    # ----------------------------------------------------------------- helpers

    @property
    def id(self) -> int:
        """This client's id in the round."""
        assert self.setup is not None
        return self.setup.client_id

    def _expect(self, msg: Message, kind: type[Message], stage: str) -> None:
        if not isinstance(msg, kind):
            raise SecAggProtocolError(
                f"client {self.id if self.setup else '?'} at stage {self.stage!r} expected "
                f"{kind.kind}, got {msg.kind}")
        if self.stage != stage:
            what = "a replayed" if _CLIENT_STAGES.index(self.stage) > _CLIENT_STAGES.index(
                stage) else "an out-of-order"
            raise SecAggProtocolError(f"client {self.id}: {what} {msg.kind} message (stage is "
                                      f"{self.stage!r}, it belongs to {stage!r})")
        if self.setup is not None and msg.round_id != self.setup.round_id:
            raise SecAggProtocolError(f"client {self.id}: {msg.kind} of another round "
                                      f"({msg.round_id.hex()[:8]}…)")
        if msg.sender != -1:
            raise SecAggProtocolError(f"client {self.id}: {msg.kind} should come from the "
                                      f"server, came from {msg.sender}")

    def _reply_base(self) -> dict[str, Any]:
        assert self.setup is not None
        return {"round_id": self.setup.round_id, "sender": self.setup.client_id}

    # ---------------------------------------------------------------- protocol

    def handle(self, msg: Message) -> Message:
        """Process one server message and return this client's reply.

        Raises
        ------
        SecAggProtocolError
            Wrong type, round, stage or sender, a replay, or a check that fails.
        SecAggAbandoned
            Fewer than t neighbours left: the client stops and reveals nothing more.
        """
        msg = _coerce(msg)
        if self.stage == "new":
            if not isinstance(msg, RoundSetup):
                raise SecAggProtocolError(f"a new client expected round_setup, got {msg.kind}")
            if msg.sender != -1:
                raise SecAggProtocolError("round_setup should come from the server")
            if self.vector.shape != (msg.dimension,):
                raise SecAggProtocolError(f"input of shape {self.vector.shape} does not match "
                                          f"dimension={msg.dimension}")
            self.setup = msg
            self.stage = "setup"
            return KeyAdvertisement(
                **self._reply_base(),
                c_public=self._c.public_key().public_bytes(_RAW, _RAW_PUB),
                s_public=self._s.public_key().public_bytes(_RAW, _RAW_PUB),
                sig_public=self._sig.public_key().public_bytes(_RAW, _RAW_PUB))
        if isinstance(msg, NeighbourKeys):
            return self._share_keys(msg)
        if isinstance(msg, ForwardedShares):
            return self._masked_input(msg)
        if isinstance(msg, SurvivorList):
            return self._sign(msg)
        if isinstance(msg, UnmaskRequest):
            return self._unmask(msg)
        raise SecAggProtocolError(f"client {self.id}: unexpected {msg.kind} message")

    def _share_keys(self, msg: NeighbourKeys) -> EncryptedShares:
        self._expect(msg, NeighbourKeys, "setup")
        setup = self.setup
        assert setup is not None
        strangers = set(msg.keys) - set(setup.neighbours)
        if strangers:
            raise SecAggProtocolError(f"client {self.id}: keys of non-neighbours "
                                      f"{sorted(strangers)[:5]}")
        if len(msg.keys) < setup.threshold:
            self.stage = "done"
            raise SecAggAbandoned(f"client {self.id}: {len(msg.keys)} neighbours advertised "
                                  f"keys, fewer than t={setup.threshold}")
        for v, (c_pub, s_pub, sig_pub) in msg.keys.items():
            if len({c_pub, s_pub}) < 2 or any(len(x) != 32 for x in (c_pub, s_pub, sig_pub)):
                raise SecAggProtocolError(f"client {self.id}: malformed keys of client {v}")
        self.keys = dict(msg.keys)
        holders = sorted(self.keys)
        xs = [v + 1 for v in holders]
        b_shares = _shamir.split(self._b, xs, setup.threshold)
        s_shares = _shamir.split(self._s.private_bytes(_RAW, _RAW_PRIV, _NO_ENC), xs,
                                 setup.threshold)
        out: dict[int, bytes] = {}
        for v, bs, ss in zip(holders, b_shares, s_shares, strict=True):
            key = _enc_key(self._c, self.keys[v][0], setup.round_id, self.id, v)
            plain = (self.id.to_bytes(4, "big") + v.to_bytes(4, "big")
                     + bs.to_bytes(_shamir.SHARE_BYTES, "big")
                     + ss.to_bytes(_shamir.SHARE_BYTES, "big"))
            nonce = os.urandom(12)
            out[v] = nonce + AESGCM(key).encrypt(nonce, plain,
                                                 _share_aad(setup.round_id, self.id, v))
        self.stage = "advertised"
        return EncryptedShares(**self._reply_base(), ciphertexts=out)

    def _masked_input(self, msg: ForwardedShares) -> MaskedInput:
        self._expect(msg, ForwardedShares, "advertised")
        setup = self.setup
        assert setup is not None
        strangers = set(msg.ciphertexts) - set(self.keys)
        if strangers:
            raise SecAggProtocolError(f"client {self.id}: shares from clients without keys "
                                      f"{sorted(strangers)[:5]}")
        if len(msg.ciphertexts) < setup.threshold:
            self.stage = "done"
            raise SecAggAbandoned(f"client {self.id}: shares from {len(msg.ciphertexts)} "
                                  f"neighbours, fewer than t={setup.threshold}")
        self.received = dict(msg.ciphertexts)
        y = self.vector.copy()
        y += expand_mask(self._b, setup.dimension, 32)
        for v in sorted(self.received):
            seed = _mask_seed(self._s, self.keys[v][1], setup.round_id, self.id, v)
            mask = expand_mask(seed, setup.dimension, 32)
            if self.id < v:
                y += mask
            else:
                y -= mask
        if setup.bits < 32:
            y &= np.uint32((1 << setup.bits) - 1)
        self.stage = "shared"
        return MaskedInput(**self._reply_base(), vector=y)

    def _sign(self, msg: SurvivorList) -> ConsistencySignature:
        self._expect(msg, SurvivorList, "shared")
        setup = self.setup
        assert setup is not None
        bitmap = bytes(msg.survivor_bitmap)
        if not _has_survived(bitmap, self.id):
            raise SecAggProtocolError(f"client {self.id}: the survivor list leaves out this "
                                      "client, which sent its masked input")
        alive = [v for v in sorted(self.keys) if _has_survived(bitmap, v)]
        if len(alive) < setup.threshold:
            self.stage = "done"
            raise SecAggAbandoned(f"client {self.id}: {len(alive)} surviving neighbours, "
                                  f"fewer than t={setup.threshold}")
        self.survivors = tuple(alive)
        self._bitmap = bitmap
        self.stage = "masked"
        return ConsistencySignature(**self._reply_base(), signature=self._sig.sign(
            _consistency_payload(setup.round_id, bitmap)))

    def _unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        self._expect(msg, UnmaskRequest, "masked")
        setup = self.setup
        assert setup is not None
        if bytes(msg.survivor_bitmap) != self._bitmap:
            raise SecAggProtocolError(f"client {self.id}: the unmask request names other "
                                      "survivors than the list this client signed")
        payload = _consistency_payload(setup.round_id, self._bitmap)
        survivors = set(self.survivors)
        valid = 0
        for v, signature in msg.signatures.items():
            if v not in survivors:  # not a surviving neighbour: its signature is not counted
                continue
            try:
                Ed25519PublicKey.from_public_bytes(self.keys[v][2]).verify(signature, payload)
            except InvalidSignature as exc:
                raise SecAggProtocolError(f"client {self.id}: neighbour {v}'s signature of "
                                          "the survivor list does not verify") from exc
            valid += 1
        if valid < setup.threshold:
            self.stage = "done"
            raise SecAggAbandoned(f"client {self.id}: {valid} neighbours signed the survivor "
                                  f"list, fewer than t={setup.threshold}")
        b_out: dict[int, bytes] = {}
        s_out: dict[int, bytes] = {}
        for v, blob in sorted(self.received.items()):
            key = _enc_key(self._c, self.keys[v][0], setup.round_id, self.id, v)
            try:
                plain = AESGCM(key).decrypt(blob[:12], blob[12:],
                                            _share_aad(setup.round_id, v, self.id))
            except InvalidTag as exc:
                raise SecAggProtocolError(f"client {self.id}: the share from {v} does not "
                                          "decrypt (tampered or misrouted)") from exc
            if (int.from_bytes(plain[:4], "big"), int.from_bytes(plain[4:8], "big")) != (
                    v, self.id):
                raise SecAggProtocolError(f"client {self.id}: share from {v} names other "
                                          "parties")
            n = _shamir.SHARE_BYTES
            if v in survivors:
                b_out[v] = plain[8:8 + n]
            else:
                s_out[v] = plain[8 + n:8 + 2 * n]
        self.stage = "done"
        return UnmaskShares(**self._reply_base(), self_mask_shares=b_out, key_shares=s_out)

    # ---------------------------------------------------------------- checkpoint

    def to_bytes(self) -> bytes:
        """The client's whole state, secrets included (store it as the device would)."""
        return _wire.dumps({
            "vector": self.vector, "stage": self.stage,
            "setup": self.setup.to_bytes() if self.setup else None,
            "c": self._c.private_bytes(_RAW, _RAW_PRIV, _NO_ENC),
            "s": self._s.private_bytes(_RAW, _RAW_PRIV, _NO_ENC),
            "sig": self._sig.private_bytes(_RAW, _RAW_PRIV, _NO_ENC), "b": self._b,
            "keys": {k: list(v) for k, v in self.keys.items()}, "received": self.received,
            "survivors": list(self.survivors), "bitmap": self._bitmap})

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggClient:
        """Restore a client saved by :meth:`to_bytes`."""
        raw = _wire.loads(data)
        self = cls(raw["vector"])
        self.stage = raw["stage"]
        setup = Message.from_bytes(raw["setup"]) if raw["setup"] else None
        self.setup = _coerce(setup) if setup else None  # type: ignore[assignment]
        self._c = X25519PrivateKey.from_private_bytes(raw["c"])
        self._s = X25519PrivateKey.from_private_bytes(raw["s"])
        self._sig = Ed25519PrivateKey.from_private_bytes(raw["sig"])
        self._b = raw["b"]
        self.keys = {int(k): tuple(v) for k, v in raw["keys"].items()}
        self.received = {int(k): v for k, v in raw["received"].items()}
        self.survivors = tuple(raw["survivors"])
        self._bitmap = raw["bitmap"]
        return self


# ------------------------------------------------------------------------- server

_SERVER_STAGES = ("advertise", "share", "mask", "consistency", "unmask", "done")
_STAGE_MESSAGE: dict[str, type[Message]] = {
    "advertise": KeyAdvertisement, "share": EncryptedShares, "mask": MaskedInput,
    "consistency": ConsistencySignature, "unmask": UnmaskShares}
_PREVIOUS_STAGE: dict[str, str | None] = {
    stage: (_SERVER_STAGES[i - 1] if i else None) for i, stage in enumerate(_SERVER_STAGES)}


class SecAggServer:
    """The server's side of a SecAgg+ round.

    Drive it as: :meth:`setup_messages` → send; :meth:`receive` each reply; when the
    stage's deadline passes, :meth:`advance` returns the next messages to send (only to
    clients still in the round). After the unmasking stage, :meth:`advance` returns {}
    and :attr:`result` holds the sum (D,) uint32 of the surviving inputs mod 2^b.

    Parameters
    ----------
    params : SecAggParams
        n, k, t, b, D.
    round_id : bytes, optional
        16 random bytes (default: fresh from the OS CSPRNG).
    """

    def __init__(self, params: SecAggParams, round_id: bytes | None = None) -> None:
        self.params = params
        self.round_id = round_id or secrets.token_bytes(16)
        n = params.n_clients
        perm = np.array(_secure_permutation(n), dtype=np.int64)
        self.neighbours = harary_neighbours(n, params.degree, perm)
        self._neighbour_sets = [frozenset(nb) for nb in self.neighbours]
        self.stage = "advertise"
        self.inbox: dict[str, dict[int, Message]] = {s: {} for s in _STAGE_MESSAGE}
        self.result: np.ndarray | None = None
        self.survivors: tuple[int, ...] = ()
        self._bitmap = b""

    def setup_messages(self) -> dict[int, RoundSetup]:
        """Stage 0: one :class:`RoundSetup` per client id."""
        p = self.params
        return {u: RoundSetup(self.round_id, -1, client_id=u,
                              neighbours=tuple(self.neighbours[u]), threshold=p.threshold,
                              bits=p.bits, dimension=p.dimension)
                for u in range(p.n_clients)}

    def receive(self, msg: Message) -> None:
        """Accept one client reply of the current stage.

        Raises
        ------
        SecAggProtocolError
            Wrong round, stage or sender, a client that left the round, or a replay.
        """
        msg = _coerce(msg)
        expected = _STAGE_MESSAGE.get(self.stage)
        if msg.round_id != self.round_id:
            raise SecAggProtocolError(f"{msg.kind} of another round "
                                      f"({msg.round_id.hex()[:8]}…)")
        for stage, kind in _STAGE_MESSAGE.items():
            if (stage != self.stage and isinstance(msg, kind)
                    and msg.sender in self.inbox[stage]):
                raise SecAggProtocolError(f"replayed {msg.kind} from client {msg.sender} "
                                          f"(stage {stage!r} is over)")
        if expected is None or not isinstance(msg, expected):
            raise SecAggProtocolError(f"server at stage {self.stage!r} expected "
                                      f"{expected.kind if expected else 'nothing'}, got "
                                      f"{msg.kind} from client {msg.sender}")
        u = msg.sender
        if not 0 <= u < self.params.n_clients:
            raise SecAggProtocolError(f"{msg.kind} from unknown client {u}")
        # dict membership only: O(1) per message (O(k) for shares), never a rebuilt set
        previous = _PREVIOUS_STAGE[self.stage]
        if previous is not None and u not in self.inbox[previous]:
            raise SecAggProtocolError(f"{msg.kind} from client {u}, which left the round at "
                                      f"stage {previous!r}")
        if u in self.inbox[self.stage]:
            raise SecAggProtocolError(f"replayed {msg.kind} from client {u}")
        if isinstance(msg, EncryptedShares):
            keyed, mine = self.inbox["advertise"], self._neighbour_sets[u]
            if not all(v in mine and v in keyed for v in msg.ciphertexts):
                raise SecAggProtocolError(f"client {u} sent shares to non-neighbours")
        if isinstance(msg, MaskedInput) and (msg.vector.shape != (self.params.dimension,)
                                             or msg.vector.dtype != np.uint32):
            raise SecAggProtocolError(f"masked input of client {u} has shape "
                                      f"{msg.vector.shape} {msg.vector.dtype}, expected "
                                      f"({self.params.dimension},) uint32")
        self.inbox[self.stage][u] = msg

    def _abandon(self, why: str) -> SecAggAbandoned:
        self.stage = "done"
        return SecAggAbandoned(f"secure aggregation round abandoned: {why}; nothing was "
                               "unmasked")

    def advance(self) -> dict[int, Message]:
        """Close the current stage; the messages to send next, by client id.

        Raises
        ------
        SecAggAbandoned
            Fewer survivors than t (nothing is revealed).
        """
        t = self.params.threshold
        stage = self.stage
        alive = set(self.inbox[stage]) if stage in _STAGE_MESSAGE else set()
        if stage != "unmask" and len(alive) < t:
            raise self._abandon(f"{len(alive)} clients answered stage {stage!r}, fewer than "
                                f"t={t}")
        out: dict[int, Message] = {}
        if stage == "advertise":
            ads = self.inbox["advertise"]
            for u in alive:
                keys = {v: (ads[v].c_public, ads[v].s_public, ads[v].sig_public)  # type: ignore[attr-defined]
                        for v in self.neighbours[u] if v in alive}
                out[u] = NeighbourKeys(self.round_id, -1, keys=keys)
            self.stage = "share"
        elif stage == "share":
            shares = self.inbox["share"]
            for u in alive:
                out[u] = ForwardedShares(self.round_id, -1, ciphertexts={
                    v: shares[v].ciphertexts[u] for v in self.neighbours[u]  # type: ignore[attr-defined]
                    if v in shares and u in shares[v].ciphertexts})  # type: ignore[attr-defined]
            self.stage = "mask"
        elif stage == "mask":
            self.survivors = tuple(sorted(alive))
            self._bitmap = survivor_bitmap(self.survivors, self.params.n_clients)
            for u in alive:  # one shared bytes object: no per-client copy of U3
                out[u] = SurvivorList(self.round_id, -1, survivor_bitmap=self._bitmap)
            self.stage = "consistency"
        elif stage == "consistency":
            sigs = self.inbox["consistency"]
            for u in alive:
                out[u] = UnmaskRequest(self.round_id, -1, survivor_bitmap=self._bitmap,
                                       signatures={v: sigs[v].signature  # type: ignore[attr-defined]
                                                   for v in self.neighbours[u] if v in sigs})
            self.stage = "unmask"
        elif stage == "unmask":
            self.result = self._unmask()
            self.stage = "done"
        else:
            raise SecAggProtocolError(f"advance() at stage {stage!r}")
        return out

    def _unmask(self) -> np.ndarray:
        p, t = self.params, self.params.threshold
        shared = self.inbox["share"]
        survivors = set(self.survivors)
        dropped = set(shared) - survivors
        # shares grouped by owner in one pass over the replies (O(n·k), in arrival order)
        b_points: dict[int, list[tuple[int, int]]] = {}
        s_points: dict[int, list[tuple[int, int]]] = {}
        for v, reply in self.inbox["unmask"].items():
            assert isinstance(reply, UnmaskShares)
            for u, share in reply.self_mask_shares.items():
                b_points.setdefault(int(u), []).append((v + 1, int.from_bytes(share, "big")))
            for u, share in reply.key_shares.items():
                s_points.setdefault(int(u), []).append((v + 1, int.from_bytes(share, "big")))
        total = np.zeros(p.dimension, np.uint32)
        for u in self.survivors:
            total += self.inbox["mask"][u].vector  # type: ignore[attr-defined]
        ads = self.inbox["advertise"]
        for u in self.survivors:
            points = b_points.get(u, [])
            if len(points) < t:
                raise self._abandon(f"{len(points)} shares of client {u}'s self mask, fewer "
                                    f"than t={t}")
            seed = _shamir.reconstruct(points[:t]).to_bytes(32, "big")
            total -= expand_mask(seed, p.dimension, 32)
        for v in sorted(dropped):
            points = s_points.get(v, [])
            if len(points) < t:
                raise self._abandon(f"{len(points)} shares of dropped client {v}'s key, "
                                    f"fewer than t={t}")
            s_key = X25519PrivateKey.from_private_bytes(
                _shamir.reconstruct(points[:t]).to_bytes(32, "big"))
            for w in self.neighbours[v]:
                # w masked with v iff w survived and v's shares reached w
                if w in survivors and w in shared[v].ciphertexts:  # type: ignore[attr-defined]
                    seed = _mask_seed(s_key, ads[w].s_public, self.round_id, v, w)  # type: ignore[attr-defined]
                    mask = expand_mask(seed, p.dimension, 32)
                    if w < v:
                        total -= mask
                    else:
                        total += mask
        if p.bits < 32:
            total &= np.uint32(p.modulus_mask)
        return total

    # ---------------------------------------------------------------- checkpoint

    def to_bytes(self) -> bytes:
        """The server's state (no client secrets: it never holds any)."""
        return _wire.dumps({
            "params": [self.params.n_clients, self.params.degree, self.params.threshold,
                       self.params.bits, self.params.dimension],
            "round_id": self.round_id, "neighbours": self.neighbours, "stage": self.stage,
            "inbox": {s: {u: m.to_bytes() for u, m in box.items()}
                      for s, box in self.inbox.items()},
            "result": self.result, "survivors": list(self.survivors)})

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggServer:
        """Restore a server saved by :meth:`to_bytes`."""
        raw = _wire.loads(data)
        self = cls.__new__(cls)
        self.params = SecAggParams(*raw["params"])
        self.round_id = raw["round_id"]
        self.neighbours = [list(x) for x in raw["neighbours"]]
        self._neighbour_sets = [frozenset(nb) for nb in self.neighbours]
        self.stage = raw["stage"]
        self.inbox = {s: {int(u): _coerce(Message.from_bytes(m)) for u, m in box.items()}
                      for s, box in raw["inbox"].items()}
        self.result = raw["result"]
        self.survivors = tuple(raw["survivors"])
        self._bitmap = (survivor_bitmap(self.survivors, self.params.n_clients)
                        if self.stage in ("consistency", "unmask", "done") else b"")
        return self


def _secure_permutation(n: int) -> list[int]:
    """A uniformly random permutation of range(n) from the OS CSPRNG (the standard
    library's Fisher–Yates over ``os.urandom``)."""
    return random.SystemRandom().sample(range(n), n)


# ------------------------------------------------------------------ in-process run


def run_secagg_round(inputs: np.ndarray, params: SecAggParams, *,
                     drop: Mapping[str, Iterable[int]] | None = None,
                     transport: bool = False) -> np.ndarray:
    """Run a whole SecAgg+ round in-process (the simulator's and the tests' driver).

    Parameters
    ----------
    inputs : ndarray, shape (n, D), uint32
        One input per client, in Z_{2^b}.
    params : SecAggParams
        Must have ``n_clients == n`` and ``dimension == D``.
    drop : mapping, optional
        Client ids that drop out *instead of answering* each stage: keys
        ``advertise``, ``share``, ``mask``, ``consistency``, ``unmask``.
    transport : bool
        Send every message through its serialised form (as a network would).

    Returns
    -------
    ndarray, shape (D,), uint32
        Σ inputs of the clients that sent their masked input, mod 2^b.

    Raises
    ------
    SecAggAbandoned
        Too few survivors.
    """
    n, d = inputs.shape
    if (n, d) != (params.n_clients, params.dimension):
        raise ValueError(f"inputs of shape {inputs.shape} do not match n_clients="
                         f"{params.n_clients}, dimension={params.dimension}")
    drops = {stage: set(ids) for stage, ids in (drop or {}).items()}
    unknown = set(drops) - set(_STAGE_MESSAGE)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; use {list(_STAGE_MESSAGE)}")
    server = SecAggServer(params)
    clients = [SecAggClient(inputs[u]) for u in range(n)]

    def wire(m: Message) -> Message:
        return Message.from_bytes(m.to_bytes()) if transport else m

    outgoing: dict[int, Message] = dict(server.setup_messages())
    gone: set[int] = set()
    for stage in _STAGE_MESSAGE:
        gone |= drops.get(stage, set())
        for u, m in outgoing.items():
            if u in gone:
                continue
            try:
                reply = clients[u].handle(wire(m))
            except SecAggAbandoned:
                gone.add(u)
                continue
            server.receive(wire(reply))
        outgoing = server.advance()
    assert server.result is not None
    return server.result


def degree_note(params: SecAggParams) -> str:
    """One line for logs and privacy.json: k, t and what they tolerate."""
    return (f"SecAgg+ with n={params.n_clients}, degree k={params.degree}, threshold "
            f"t={params.threshold}, b={params.bits} bits; each client survives the loss of "
            f"{params.degree - params.threshold} of its {params.degree} neighbours")


def dropout_tolerance(k: int, t: int) -> float:
    """The fraction of a neighbourhood that may drop out before unmasking fails."""
    return (k - t) / k if k else 0.0

