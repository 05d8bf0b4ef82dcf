"""Admission tokens (#18 item 3): the VOPRF against RFC 9497's vectors, and the token rules."""

from __future__ import annotations

import pytest
from voprf import ristretto

from federated import TokenError
from federated.secagg import Token, TokenIssuer, finalize_tokens, request_tokens

# RFC 9497, Appendix A.1.2 (ristretto255-SHA512, VOPRF mode), test vectors 1 and 2.
SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
PK_SM = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
VECTORS = [
    {"input": "00",
     "blinded": "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
     "evaluated": "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
     "output": "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
               "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"},
    {"input": "5a" * 17,
     "blinded": "cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
     "evaluated": "60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
     "output": "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
               "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"},
]


def test_derive_key_pair_matches_rfc9497_vector() -> None:
    ev = ristretto.Evaluator.from_seed(SEED, KEY_INFO)
    assert bytes(ev.public_key.serialize()).hex() == PK_SM


@pytest.mark.parametrize("vector", VECTORS, ids=["vector1", "vector2"])
def test_blind_evaluate_and_evaluate_match_rfc9497_vectors(vector: dict[str, str]) -> None:
    ev = ristretto.Evaluator.from_seed(SEED, KEY_INFO)
    blinded = ristretto.BlindedInput.deserialize(bytes.fromhex(vector["blinded"]))
    evaluation = bytes(ev.evaluate(blinded).serialize())
    # the serialised evaluation is the DLEQ proof (64 bytes, randomised) then the element
    assert evaluation[64:].hex() == vector["evaluated"]
    assert bytes(ev.evaluate_known_input(bytes.fromhex(vector["input"]))).hex() == vector[
        "output"]
    # the blind / evaluate / finalize round trip (fresh blind) gives the RFC's output
    client, element = ristretto.Client.blind(bytes.fromhex(vector["input"]))
    out = client.finalize(ev.evaluate(element), ev.public_key)
    assert bytes(out).hex() == vector["output"]


def _tokens(issuer: TokenIssuer, day: int, n: int) -> list[Token]:
    pending = request_tokens(day, n)
    return finalize_tokens(pending, issuer.issue(day, pending.blinded), issuer.public_key(day))


def test_issued_tokens_verify_and_are_distinct() -> None:
    issuer = TokenIssuer(TokenIssuer.generate_secret())
    tokens = _tokens(issuer, 20_000, 3)
    assert len({t.input for t in tokens}) == 3
    for t in tokens:
        assert t.day == 20_000
        issuer.verify(t, today=20_000)
        issuer.verify(t, today=20_001)  # one day of grace


def test_forged_expired_and_foreign_tokens_are_refused() -> None:
    issuer = TokenIssuer(TokenIssuer.generate_secret())
    other = TokenIssuer(TokenIssuer.generate_secret())
    good = _tokens(issuer, 100, 1)[0]
    forged = Token(good.input, bytes(64))
    with pytest.raises(TokenError, match="does not verify"):
        issuer.verify(forged, today=100)
    with pytest.raises(TokenError, match="not valid on day"):
        issuer.verify(good, today=102)
    with pytest.raises(TokenError, match="does not verify"):
        other.verify(good, today=100)
    # a token's day is inside its input: changing it breaks the authenticator
    moved = Token(good.input[:15] + (101).to_bytes(4, "big") + good.input[19:],
                  good.authenticator)
    with pytest.raises(TokenError, match="does not verify"):
        issuer.verify(moved, today=101)
    with pytest.raises(TokenError, match="not an admission token"):
        issuer.verify(Token(b"x" * 56, good.authenticator), today=100)


def test_device_refuses_an_evaluation_under_another_key() -> None:
    """An issuer that evaluates one device with a key of its own (to tag it) is caught."""
    issuer = TokenIssuer(TokenIssuer.generate_secret())
    tagger = TokenIssuer(TokenIssuer.generate_secret())
    pending = request_tokens(7, 2)
    with pytest.raises(TokenError, match="does not verify"):
        finalize_tokens(pending, tagger.issue(7, pending.blinded), issuer.public_key(7))


def test_issuer_sees_nothing_of_the_token_input() -> None:
    """What the issuer receives (blinded elements) does not contain the input or its hash,
    and two issuances of the same input look unrelated."""
    pending = request_tokens(5, 1)
    inp = pending.inputs[0]
    _client, again = ristretto.Client.blind(inp)
    assert bytes(again.serialize()) != pending.blinded[0]
    assert inp[19:] not in pending.blinded[0]


def test_bad_blinded_element_is_a_clear_error() -> None:
    issuer = TokenIssuer(TokenIssuer.generate_secret())
    with pytest.raises(TokenError, match="expected 32"):
        issuer.issue(1, [b"short"])
    with pytest.raises(TokenError, match="not a ristretto255 element"):
        issuer.issue(1, [b"\xff" * 32])
