"""Shamir secret sharing over the prime field GF(2^521 - 1) (Shamir 1979).

SecAgg+ shares two 32-byte secrets per client (the self-mask seed and the X25519
mask-key private key). ``cryptography`` has no secret sharing, and the maintained
alternative (pycryptodome's ``Shamir``) shares 16-byte secrets in GF(2^128) and would
add a second cryptography library, so this is the small prime-field version: a secret
of up to 65 bytes is one field element, shares are (x, f(x)) with x = 1..n and f a
random polynomial of degree t - 1 with f(0) = secret; any t shares give f(0) by
Lagrange interpolation at 0, fewer reveal nothing (every secret is equally likely).
Coefficients come from ``secrets.token_bytes`` (the OS CSPRNG), never from numpy.
The arithmetic is checked against a published worked example in the tests.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = ["PRIME", "SHARE_BYTES", "reconstruct", "split"]

PRIME = (1 << 521) - 1
"""The Mersenne prime 2^521 - 1: the field of every share."""
SHARE_BYTES = 66
"""Bytes of one share value (521 bits)."""


def _random_element(prime: int) -> int:
    nbytes = (prime.bit_length() + 7) // 8 + 8  # 64 spare bits: negligible modulo bias
    return int.from_bytes(secrets.token_bytes(nbytes), "big") % prime


def split(secret: bytes | int, xs: Sequence[int], threshold: int, *, prime: int = PRIME,
          coefficients: Sequence[int] | None = None) -> list[int]:
    """Shares of ``secret`` at the points ``xs``: f(x) for a random f of degree t - 1.

    Parameters
    ----------
    secret : bytes or int
        The secret (bytes are read big-endian; must be < ``prime``).
    xs : sequence of int
        Distinct non-zero evaluation points (one per shareholder), each < ``prime``.
    threshold : int
        t: any t shares reconstruct, fewer reveal nothing. 1 <= t <= len(xs).
    prime : int
        The field (tests use small primes for known vectors).
    coefficients : sequence of int, optional
        f's coefficients of degree 1..t-1 (tests only; default: uniformly random).

    Returns
    -------
    list of int
        f(x) for each x in ``xs``.
    """
    s = int.from_bytes(secret, "big") if isinstance(secret, bytes) else int(secret)
    if not 0 <= s < prime:
        raise ValueError(f"secret of {s.bit_length()} bits does not fit the field "
                         f"({prime.bit_length()} bits)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold={threshold} should be in [1, {len(xs)}] (the shares)")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise ValueError("evaluation points should be distinct and in [1, prime)")
    coeffs = (list(coefficients) if coefficients is not None
              else [_random_element(prime) for _ in range(threshold - 1)])
    if len(coeffs) != threshold - 1:
        raise ValueError(f"{len(coeffs)} coefficients given, threshold - 1 = {threshold - 1}")
    poly = [s, *coeffs]
    out = []
    for x in xs:
        acc = 0
        for c in reversed(poly):  # Horner
            acc = (acc * x + c) % prime
        out.append(acc)
    return out


def reconstruct(points: Sequence[tuple[int, int]], *, prime: int = PRIME) -> int:
    """f(0) from t or more shares (x, f(x)) by Lagrange interpolation at 0.

    Raises
    ------
    ValueError
        If points repeat an x or are empty.
    """
    if not points:
        raise ValueError("no shares to reconstruct from")
    xs = [x % prime for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("shares repeat an evaluation point")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % prime
                den = den * (xi - xj) % prime
        secret = (secret + yi * num * pow(den, -1, prime)) % prime
    return secret
