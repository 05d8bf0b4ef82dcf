"""Admission without identity: single-use anonymous tokens from a verifiable OPRF.

A device that enrolled may fetch a few tokens a day; it spends one to check in to a
round. The server learns that *some* enrolled device checked in, never which one.

Construction (Privacy Pass issuance with a privately verifiable token, RFC 9578 §5,
over RFC 9497's VOPRF in the ristretto255-SHA512 suite):

1. **issue** — the device draws a 32-byte nonce and forms the token input
   ``"fl-admission-v1" ‖ day (4 bytes) ‖ nonce``; it *blinds* the input
   (``Blind``) and sends the blinded element under its enrolment credential. The server
   evaluates it with the day's secret key (``BlindEvaluate``) and returns the evaluated
   element and a DLEQ proof that the day's published key was used.
2. **finalize** — the device verifies the proof against the day's *public* key (so the
   server cannot tag one device with a key of its own) and unblinds: the authenticator
   is ``Finalize(input)``, a 64-byte PRF output.
3. **redeem** — to check in, the device sends (input, authenticator) over a connection
   that carries no enrolment credential. The server recomputes ``Evaluate(input)`` with
   the day's key, compares in constant time, and records the input's hash as spent.

The server saw only a uniformly random group element at issuance, so the input it sees
at redemption is unlinkable to the enrolment that obtained it (RFC 9497 §6.2:
obliviousness); without the key, no one can forge an authenticator (pseudorandomness).

Why a VOPRF and not RFC 9474 blind RSA: the issuer and the verifier are the same server,
so public verifiability buys nothing, and ``cryptography`` has no blind-RSA operation —
RSABSSA would mean hand-rolling RSA blinding and EMSA-PSS with Python integers. The
``voprf`` package (Rust, RFC 9497) provides the whole protocol; the tests check it against
RFC 9497's published vectors (A.1.2: key derivation, BlindEvaluate, Evaluate).

Threat model (what tokens stop and what they do not)
----------------------------------------------------
Stops:
    * one client filling a round: each enrolment gets at most ``tokens_per_day`` tokens
      a day, each admits one participant once, so one enrolment holds at most that many
      slots of all the day's rounds together;
    * replay: a spent token is refused (the spent set keys on the input's hash);
    * forgery and carrying tokens across days: the authenticator is a PRF under the
      day's key, and the day is inside the input;
    * linking a check-in to an enrolment by the token: blinding hides the input at
      issuance; the proof pins every token to the one published key of the day.
Does not stop:
    * Sybils at enrolment: without device attestation (Play Integrity, App Attest) one
      party may enrol many devices and get many tokens. Attestation at enrolment would
      bound that; it is not built.
    * timing: a device that redeems right after fetching could be linked by time; the
      device client fetches a whole day's tokens at once, well before it spends them.
    * network identity: the server must not log the IP of a redemption next to the one of
      an issuance (the stores keep no IP; a reverse proxy's logs are out of scope).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federated._errors import FederatedError

__all__ = [
    "AUTHENTICATOR_BYTES",
    "SUITE",
    "TOKEN_INPUT_BYTES",
    "PendingTokens",
    "Token",
    "TokenError",
    "TokenIssuer",
    "finalize_tokens",
    "request_tokens",
    "token_day",
]

SUITE = "ristretto255-SHA512 VOPRF (RFC 9497)"
_DOMAIN = b"fl-admission-v1"
_NONCE_BYTES = 32
TOKEN_INPUT_BYTES = len(_DOMAIN) + 4 + _NONCE_BYTES
AUTHENTICATOR_BYTES = 64
_ELEMENT_BYTES = 32
_EVALUATION_BYTES = 96  # DLEQ proof (64) ‖ evaluated element (32)
DAY_S = 86400


def _ristretto() -> Any:
    """The ``voprf`` ristretto255 module, imported on first use (so importing the platform
    works in an environment installed before ``voprf`` became a dependency)."""
    from voprf import ristretto

    return ristretto


class TokenError(FederatedError, ValueError):
    """A token, a blinded element or an issuance response is malformed or does not verify."""


def token_day(now_s: float) -> int:
    """The token day (UTC days since the epoch) of a Unix time."""
    return int(now_s // DAY_S)


@dataclass(frozen=True)
class Token:
    """A finalized admission token: the input and its PRF authenticator.

    Attributes
    ----------
    input : bytes
        ``TOKEN_INPUT_BYTES`` bytes: domain ‖ day (big-endian uint32) ‖ 32-byte nonce.
    authenticator : bytes
        ``AUTHENTICATOR_BYTES`` bytes, the VOPRF output of ``input`` under the day's key.
    """

    input: bytes
    authenticator: bytes

    @property
    def day(self) -> int:
        """The day the token was issued for."""
        return int.from_bytes(self.input[len(_DOMAIN):len(_DOMAIN) + 4], "big")

    def spent_key(self) -> bytes:
        """SHA-256 of the input: what the spent set keeps (never the authenticator)."""
        return hashlib.sha256(self.input).digest()

    def check_form(self) -> None:
        """Raise :class:`TokenError` unless the token has the right shape and domain."""
        if len(self.input) != TOKEN_INPUT_BYTES or not self.input.startswith(_DOMAIN):
            raise TokenError(f"token input of {len(self.input)} bytes is not an admission "
                             f"token input ({TOKEN_INPUT_BYTES} bytes starting with "
                             f"{_DOMAIN.decode()!r})")
        if len(self.authenticator) != AUTHENTICATOR_BYTES:
            raise TokenError(f"token authenticator of {len(self.authenticator)} bytes, "
                             f"expected {AUTHENTICATOR_BYTES}")


class TokenIssuer:
    """The server's side: per-day VOPRF keys derived from one master secret.

    Parameters
    ----------
    master_secret : bytes
        At least 32 bytes from a CSPRNG, kept by the server only. Day ``d``'s key is
        ``DeriveKeyPair(HKDF-SHA256(master, info="day d"), "fl admission day d")``.
    """

    def __init__(self, master_secret: bytes) -> None:
        if len(master_secret) < 32:
            raise TokenError(f"master secret of {len(master_secret)} bytes should be >= 32")
        self._master = master_secret
        self._evaluators: dict[int, Any] = {}

    @staticmethod
    def generate_secret() -> bytes:
        """A fresh 32-byte master secret from the OS CSPRNG."""
        return os.urandom(32)

    def _evaluator(self, day: int) -> Any:
        ev = self._evaluators.get(day)
        if ev is None:
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fl admission",
                        info=f"day {day}".encode()).derive(self._master)
            ev = _ristretto().Evaluator.from_seed(seed, f"fl admission day {day}".encode())
            if len(self._evaluators) > 8:
                self._evaluators.clear()
            self._evaluators[day] = ev
        return ev

    def public_key(self, day: int) -> bytes:
        """The day's public key (32 bytes), which devices check every issuance against."""
        return bytes(self._evaluator(day).public_key.serialize())

    def issue(self, day: int, blinded: list[bytes]) -> list[bytes]:
        """BlindEvaluate each blinded element with the day's key.

        Parameters
        ----------
        day : int
            The token day (the devices put it inside their inputs).
        blinded : list of bytes
            Serialised blinded elements (32 bytes each).

        Returns
        -------
        list of bytes
            One 96-byte evaluation (DLEQ proof ‖ evaluated element) per element.

        Raises
        ------
        TokenError
            If an element is not a valid encoded group element.
        """
        ev = self._evaluator(day)
        out = []
        for i, element in enumerate(blinded):
            if len(element) != _ELEMENT_BYTES:
                raise TokenError(f"blinded element {i} has {len(element)} bytes, expected "
                                 f"{_ELEMENT_BYTES}")
            try:
                parsed = _ristretto().BlindedInput.deserialize(element)
            except ValueError as exc:
                raise TokenError(f"blinded element {i} is not a ristretto255 element") from exc
            out.append(bytes(ev.evaluate(parsed).serialize()))
        return out

    def verify(self, token: Token, *, today: int, grace_days: int = 1) -> None:
        """Check a redeemed token (not the spent set: the caller records it atomically).

        Raises
        ------
        TokenError
            Malformed, issued for a day outside ``[today - grace_days, today]``, or the
            authenticator does not match.
        """
        token.check_form()
        day = token.day
        if not today - grace_days <= day <= today:
            raise TokenError(f"token of day {day} is not valid on day {today} (tokens last "
                             f"{grace_days + 1} days)")
        expected = self._evaluator(day).evaluate_known_input(token.input)
        if not hmac.compare_digest(bytes(expected), token.authenticator):
            raise TokenError("token authenticator does not verify")


@dataclass
class PendingTokens:
    """A device's blinded requests awaiting the server's evaluations (kept on the device)."""

    day: int
    inputs: list[bytes]
    clients: list[Any]
    blinded: list[bytes]


def request_tokens(day: int, n: int) -> PendingTokens:
    """Draw ``n`` fresh token inputs for ``day`` and blind them (device side).

    Returns the pending state; send ``pending.blinded`` to the issuer.
    """
    if n < 1:
        raise TokenError(f"n={n} tokens requested, should be >= 1")
    inputs, clients, blinded = [], [], []
    for _ in range(n):
        token_input = _DOMAIN + day.to_bytes(4, "big") + os.urandom(_NONCE_BYTES)
        client, element = _ristretto().Client.blind(token_input)
        inputs.append(token_input)
        clients.append(client)
        blinded.append(bytes(element.serialize()))
    return PendingTokens(day, inputs, clients, blinded)


def finalize_tokens(pending: PendingTokens, evaluations: list[bytes],
                    public_key: bytes) -> list[Token]:
    """Verify the issuer's proofs against the day's public key and unblind (device side).

    Raises
    ------
    TokenError
        Wrong count, malformed evaluation, or a proof that does not verify with
        ``public_key`` (the issuer used another key: it could be tagging this device).
    """
    if len(evaluations) != len(pending.clients):
        raise TokenError(f"{len(evaluations)} evaluations for {len(pending.clients)} "
                         "blinded requests")
    try:
        key = _ristretto().PublicKey.deserialize(public_key)
    except ValueError as exc:
        raise TokenError("the issuer's public key is not a ristretto255 element") from exc
    tokens = []
    for i, (client, blob) in enumerate(zip(pending.clients, evaluations, strict=True)):
        if len(blob) != _EVALUATION_BYTES:
            raise TokenError(f"evaluation {i} has {len(blob)} bytes, expected "
                             f"{_EVALUATION_BYTES}")
        try:
            output = client.finalize(_ristretto().VerifiableOutput.deserialize(blob), key)
        except ValueError as exc:
            raise TokenError(f"evaluation {i} does not verify against the day's public key "
                             f"({exc})") from exc
        tokens.append(Token(pending.inputs[i], bytes(output)))
    return tokens
