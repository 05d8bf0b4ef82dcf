"""The secure-round engine on a fake clock: deadlines close rounds, restarts lose nothing."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
import pytest

from federated.secagg import Message as SecAggMessage
from federated.secagg import (
    SecAggClient,
    Token,
    TokenIssuer,
    finalize_tokens,
    modular_sum,
    request_tokens,
    token_day,
)
from serving import ApiError
from serving.rounds import SecureRounds, SecureRoundsConfig

P = 16
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _engine(directory: Path, clock: Clock, **overrides: object) -> SecureRounds:
    fields: dict[str, object] = {
        "enabled": True, "model": "zeros", "n_parameters": P, "checkin_s": 10, "stage_s": 5,
        "min_clients": 4, "max_clients": 20, "n_max": 50, "max_stage_extensions": 0,
        **overrides}
    cfg = SecureRoundsConfig.model_validate(fields)
    return SecureRounds(cfg, directory, lambda: np.zeros(P, np.float32), clock=clock)


def _token(engine: SecureRounds) -> Token:
    credential = engine.enrol()
    day = token_day(engine.clock())
    pending = request_tokens(day, 1)
    answer = engine.issue(credential, pending.blinded)
    return finalize_tokens(pending, [base64.b64decode(e) for e in answer["evaluations"]],
                           engine.issuer().public_key(day))[0]


def _step(engine: SecureRounds, round_: int, clients: dict[bytes, SecAggClient],
          skip: AbstractSet[bytes] = frozenset()) -> str:
    """Every client not in ``skip`` answers its waiting message; returns the stage."""
    stage = ""
    for ticket, client in clients.items():
        if ticket in skip:
            continue
        stage, body = engine.poll(round_, ticket)
        if body is not None:
            engine.reply(round_, ticket, client.handle(SecAggMessage.from_bytes(body))
                         .to_bytes())
    return stage


def test_round_whose_checkin_deadline_passes_closes_and_the_next_opens(tmp_path: Path) -> None:
    clock = Clock()
    engine = _engine(tmp_path, clock)
    engine.tick()
    assert engine.current()["round"] == 0
    engine.checkin(0, _token(engine))  # one device: below min_clients
    clock.now += 11
    engine.tick()
    info = engine.round_info(0)
    assert info["status"] == "abandoned"
    assert "fewer than min_clients=4" in info["outcome"]["message"]
    assert engine.current()["round"] == 1 and engine.current()["stage"] == "checkin"


def test_stage_deadline_drops_silent_clients_and_restart_continues(tmp_path: Path) -> None:
    """6 clients; 1 goes silent after advertising keys, the server restarts twice
    mid-round (a new engine on the same files), the share stage closes at its deadline,
    and the sum is exactly the 5 remaining inputs'."""
    clock = Clock()
    engine = _engine(tmp_path, clock)
    engine.tick()
    rng = np.random.default_rng(3)
    inputs = {}
    tokens = [_token(engine) for _ in range(6)]
    tickets = [engine.checkin(0, t) for t in tokens]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {}
    for ticket in tickets:
        vec = rng.integers(0, 2**32, dim, dtype=np.uint32)
        inputs[ticket] = vec
        clients[ticket] = SecAggClient(vec)
    assert _step(engine, 0, clients) == "advertise"
    engine = _engine(tmp_path, clock)  # restart: only the files survive
    silent = {tickets[0]}
    assert _step(engine, 0, clients, skip=silent) == "share"
    assert engine.round_info(0)["stage"] == "share"  # waits for the silent one
    clock.now += 6
    engine = _engine(tmp_path, clock)  # restart again, after the deadline
    engine.tick()
    assert engine.round_info(0)["stage"] == "mask"
    with pytest.raises(ApiError) as gone:
        engine.poll(0, tickets[0])
    assert gone.value.status == 410
    for stage in ("mask", "consistency", "unmask"):
        assert _step(engine, 0, clients, skip=silent) == stage
    info = engine.round_info(0)
    assert info["status"] == "aggregated", info
    total = np.frombuffer(base64.b64decode(info["outcome"]["sum"]), "<u4")
    expected = modular_sum(np.stack([inputs[t] for t in tickets[1:]]), 32)
    np.testing.assert_array_equal(total, expected)
    assert engine.model()[0] == 0  # a candidate until the promotion policy decides
    engine.tick()
    assert engine.model()[0] == 1
    assert engine.candidates()[0]["decision"]["policy"] == "unconditional"
    # nothing per client is left
    conn = sqlite3.connect(tmp_path / "rounds.sqlite3")
    for table in ("participants", "inbox", "outbox"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_too_few_masked_inputs_abandon_before_unmasking(tmp_path: Path) -> None:
    clock = Clock()
    engine = _engine(tmp_path, clock)
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(5)]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.zeros(dim, np.uint32)) for t in tickets}
    _step(engine, 0, clients)
    _step(engine, 0, clients)
    _step(engine, 0, clients, skip=set(tickets[:2]))  # 3 masked inputs < min_clients=4
    clock.now += 6
    engine.tick()
    info = engine.round_info(0)
    assert info["status"] == "abandoned"
    # 3 survivors - floor(0.05 * 5) possible colluders < 4 - floor(0.05 * 4) honest noises
    assert "3 masked inputs arrived from a cohort of 5" in info["outcome"]["message"]
    assert "fewer than the 4 (min_clients=4" in info["outcome"]["message"]
    assert engine.model()[0] == 0


def test_daily_allowance_and_spent_tokens(tmp_path: Path) -> None:
    clock = Clock()
    engine = _engine(tmp_path, clock, tokens_per_day=1)
    engine.tick()
    credential = engine.enrol()
    pending = request_tokens(token_day(clock.now), 1)
    engine.issue(credential, pending.blinded)
    with pytest.raises(ApiError) as spent:
        engine.issue(credential, request_tokens(token_day(clock.now), 1).blinded)
    assert spent.value.status == 429
    clock.now += 86_400  # the next day the allowance is back
    engine.issue(credential, request_tokens(token_day(clock.now), 1).blinded)
    with pytest.raises(ApiError) as unknown:
        engine.issue(b"x" * 32, pending.blinded)
    assert unknown.value.status == 403
    issuer = TokenIssuer(TokenIssuer.generate_secret())
    foreign_pending = request_tokens(token_day(clock.now), 1)
    foreign = finalize_tokens(foreign_pending, issuer.issue(token_day(clock.now),
                                                            foreign_pending.blinded),
                              issuer.public_key(token_day(clock.now)))[0]
    with pytest.raises(ApiError) as invalid:
        engine.checkin(engine.current()["round"], foreign)
    assert invalid.value.status == 403


def test_checkin_closes_early_when_the_cohort_is_full(tmp_path: Path) -> None:
    clock = Clock()
    engine = _engine(tmp_path, clock, max_clients=4)
    engine.tick()
    for _ in range(4):
        engine.checkin(0, _token(engine))
    assert engine.round_info(0)["stage"] == "advertise"  # no need to wait for the window
    with pytest.raises(ApiError) as closed:
        engine.checkin(0, _token(engine))
    assert closed.value.status == 409 and closed.value.reason == "checkin_closed"


def test_one_admitted_client_cannot_fill_a_stage(tmp_path: Path) -> None:
    """A participant that posts its reply 100 times, or posts as other client ids, has
    exactly one reply stored; the rest are refused."""
    clock = Clock()
    engine = _engine(tmp_path, clock)
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(5)]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.zeros(dim, np.uint32)) for t in tickets}
    attacker = tickets[0]
    _stage, body = engine.poll(0, attacker)
    assert body is not None
    reply = clients[attacker].handle(SecAggMessage.from_bytes(body))
    engine.reply(0, attacker, reply.to_bytes())
    refused = 0
    for _ in range(100):
        with pytest.raises(ApiError) as again:
            engine.reply(0, attacker, reply.to_bytes())
        refused += again.value.reason == "replayed_message"
    assert refused == 100
    for other in range(5):  # the same keys claimed for other ids
        forged = type(reply)(**{**reply.__dict__, "sender": other})
        if other == reply.sender:
            continue
        with pytest.raises(ApiError) as spoofed:
            engine.reply(0, attacker, forged.to_bytes())
        assert spoofed.value.status == 403
    conn = sqlite3.connect(tmp_path / "rounds.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 1


def test_a_stage_still_receiving_replies_is_extended_a_silent_one_is_not(
        tmp_path: Path) -> None:
    """Adaptive deadlines: at the share stage's deadline 4 of 6 replies are in (more than
    at its start): extended by stage_s/2; 1 more arrives, so the next deadline extends
    again; then nothing more arrives, so the third closes the stage, dropping the silent
    client. A second stage with no reply at all closes at its first deadline."""
    clock = Clock()
    engine = _engine(tmp_path, clock, max_stage_extensions=3)
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(6)]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.zeros(dim, np.uint32)) for t in tickets}
    assert _step(engine, 0, clients) == "advertise"
    late, silent = tickets[4], tickets[5]
    assert _step(engine, 0, clients, skip={late, silent}) == "share"
    clock.now += 5
    engine.tick()
    assert engine.round_info(0)["stage"] == "share"  # 4 replies since the start: extended
    _step(engine, 0, {late: clients[late]})
    clock.now += 2.5
    engine.tick()
    assert engine.round_info(0)["stage"] == "share"  # one more came in: extended again
    clock.now += 2.5
    engine.tick()
    assert engine.round_info(0)["stage"] == "mask"  # nothing new: closed
    with pytest.raises(ApiError) as gone:
        engine.poll(0, silent)
    assert gone.value.status == 410
    clock.now += 5  # nobody answers the mask stage: closed (abandoned) at once
    engine.tick()
    assert engine.round_info(0)["status"] == "abandoned"


def test_a_poll_racing_the_stage_advance_does_not_drop_a_client(tmp_path: Path) -> None:
    """A client that answered the consistency stage polls while the last answer advances
    the stage (its rows deleted) between the poll's reads: it is told to wait, never
    that it missed a deadline (410)."""
    clock = Clock()
    cfg = SecureRoundsConfig.model_validate({
        "enabled": True, "model": "zeros", "n_parameters": P, "checkin_s": 10,
        "stage_s": 5, "min_clients": 4, "max_clients": 4, "n_max": 50})
    hooks: list[Callable[[], object]] = []

    class Racing(SecureRounds):
        def _client_id(self, conn: sqlite3.Connection, round_: int, ticket: bytes
                       ) -> tuple[int | None, str, str]:
            out = super()._client_id(conn, round_, ticket)
            while hooks:
                hooks.pop()()
            return out

    engine = _engine(tmp_path, clock, max_clients=4)
    racing = Racing(cfg, tmp_path, lambda: np.zeros(P, np.float32), clock=clock)
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(4)]
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.zeros(dim, np.uint32)) for t in tickets}
    for _ in range(3):  # advertise, share, mask
        _step(engine, 0, clients)
    last = tickets[3]
    assert _step(engine, 0, clients, skip={last}) == "consistency"
    _stage, body = engine.poll(0, last)
    assert body is not None
    reply = clients[last].handle(SecAggMessage.from_bytes(body)).to_bytes()
    hooks.append(lambda: engine.reply(0, last, reply))  # lands mid-poll
    assert racing.poll(0, tickets[0]) == ("consistency", None)
    assert engine.round_info(0)["stage"] == "unmask"
    stage, body = racing.poll(0, tickets[0])
    assert stage == "unmask" and body is not None
