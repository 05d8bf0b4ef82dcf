"""Secure rounds over real HTTP (#18 items 1-3): devices, tokens, SecAgg+ stages, the store."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
from werkzeug.serving import make_server

from federated.device import (
    DeviceClient,
    DeviceStore,
    HttpResponse,
    HttpTransport,
    TransportError,
)
from federated.privacy import DiscreteGaussianEncoding
from federated.secagg import Message as SecAggMessage
from federated.secagg import SecAggParams, modular_sum, run_secagg_round, token_day
from serving import create_app

P = 24


@dataclass
class Server:
    url: str
    var: Path
    app: object


def _start(tmp: Path, monkeypatch: pytest.MonkeyPatch, **secure: object) -> Iterator[Server]:
    # Deadlines generous enough for a loaded CI machine (a stage closes as soon as every
    # client still in it has answered or left, so they only cost time when one is silent);
    # 5 s / 2 s made clients miss stages under load; 6 s and 10 s (+ extensions) missed
    # one at load average 25. Deadlines only cost time when a client is silent.
    cfg = {"enabled": True, "model": "zeros", "n_parameters": P, "checkin_s": 8.0,
           "stage_s": 30.0, "min_clients": 5, "max_clients": 50, "tick_interval_s": 0.1,
           "max_stage_extensions": 3,
           "noise_multiplier": 0.5, "n_max": 100, **secure}
    path = tmp / "secure.json"
    path.write_text(json.dumps(cfg))
    monkeypatch.setenv("STICKERS_SECURE_CONFIG", str(path))
    var = tmp / "var"
    var.mkdir()
    app = create_app({"var": var, "reload_interval_s": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_port}", var, app)
    finally:
        server.shutdown()
        app.extensions["sticker_secure_rounds"].close()


@pytest.fixture
def secure_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    yield from _start(tmp_path, monkeypatch)


def _trains_to(delta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A device trainer whose update is ``delta`` whatever the parameters."""
    return lambda params: delta


def _device(url: str, tmp: Path, i: int, delta: np.ndarray) -> DeviceClient:
    client = DeviceClient(HttpTransport(url, timeout_s=10), DeviceStore(tmp / f"dev{i}.db"),
                          _trains_to(delta), poll_interval_s=0.05)
    client.enrol()
    client.refill_tokens(2)
    return client


def _wait_checkin(url: str) -> int:
    t = HttpTransport(url)
    for _ in range(200):
        info = t.request("GET", "/v1/secure/round").body
        if info["stage"] == "checkin" and info["stage_ends_in_s"] > 3.5:
            return int(info["round"])
        threading.Event().wait(0.1)
    raise AssertionError("no round in check-in")


def _wait_closed(url: str, round_: int) -> dict:
    t = HttpTransport(url)
    for _ in range(300):
        info = t.request("GET", f"/v1/secure/rounds/{round_}").body
        if info["status"] != "open":
            return info
        threading.Event().wait(0.1)
    raise AssertionError(f"round {round_} did not close")


def _all_rows(var: Path) -> list[tuple[str, tuple]]:
    out = []
    for name in ("rounds.sqlite3", "issuer.sqlite3"):
        conn = sqlite3.connect(var / "secure" / name)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type='table'")]
        for table in tables:
            out += [(table, row) for row in conn.execute(f"SELECT * FROM {table}")]
        conn.close()
    return out


def test_secure_round_over_http_with_dropouts(secure_server: Server, tmp_path: Path) -> None:
    """12 real clients over HTTP; 2 leave after key sharing, 1 after the masked upload.
    The server's sum equals the in-process sum of the acknowledged reports (and SecAgg+
    run in-process on them), the model moves by FedAvg of the decoded sum, and while the
    round runs no stored row holds a plaintext update, a token or a device credential."""
    url = secure_server.url
    rng = np.random.default_rng(0)
    deltas = rng.normal(0, 0.2, (12, P)).astype(np.float32)
    devices = [_device(url, tmp_path, i, deltas[i]) for i in range(12)]
    round_ = _wait_checkin(url)
    drops = {0: "share", 1: "share", 2: "mask"}
    seen_rows: list[tuple[str, tuple]] = []
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(d.participate, drop_after=drops.get(i), deadline_s=60)
                   for i, d in enumerate(devices)]
        # read every stored row while the protocol runs
        while not all(f.done() for f in futures):
            seen_rows += _all_rows(secure_server.var)
            threading.Event().wait(0.02)
        results = [f.result() for f in futures]
    info = _wait_closed(url, round_)
    assert info["status"] == "aggregated", info
    statuses = sorted(r.status for r in results)
    assert statuses.count("completed") == 9 and statuses.count("dropped") == 3
    sent = [r for r in results if r.masked_sent]
    assert len(sent) == 10  # 9 completed + the one that left after its masked input
    reports = np.stack([r.report for r in sent if r.report is not None])
    total = np.frombuffer(base64.b64decode(info["outcome"]["sum"]), "<u4")
    np.testing.assert_array_equal(total, modular_sum(reports, 32))
    assert info["outcome"]["n_survivors"] == 10
    # the same reports through SecAgg+ in-process give the same sum
    params = SecAggParams.for_cohort(10, bits=32, dimension=reports.shape[1],
                                     dropout_rate=0.3, corruption_rate=0.05)
    np.testing.assert_array_equal(run_secagg_round(reports, params), total)
    # the model moved by FedAvg of the decoded sum
    t = HttpTransport(url)
    for _ in range(100):  # the background thread applies the promotion policy
        model = t.request("GET", "/v1/secure/model").body
        if model["model_version"] == 1:
            break
        threading.Event().wait(0.1)
    assert model["model_version"] == 1
    new = np.frombuffer(base64.b64decode(model["parameters"]), "<f4")
    cur = t.request("GET", "/v1/secure/round").body
    enc = DiscreteGaussianEncoding(**{f.name: cur["encoding"][f.name]
                                      for f in fields(DiscreteGaussianEncoding)})
    expected = (enc.decode(total, info["rotation_seed"]) / 10).astype(np.float32)
    np.testing.assert_array_equal(new, expected)
    assert np.abs(new).sum() > 0
    # what the store held during the round: nothing that identifies or reveals
    blobs = [v for _, row in seen_rows for v in row if isinstance(v, bytes | str)]
    credentials = [d.store.get("credential") for d in devices]
    for d in deltas:
        raw = d.astype("<f4").tobytes()
        assert not any(raw[:16] in b for b in blobs if isinstance(b, bytes))
    for c in credentials:
        assert c is not None
        assert not any(c in b for b in blobs if isinstance(b, bytes))
    tables = {table for table, _ in seen_rows}
    assert {"participants", "outbox", "inbox", "spent_tokens", "enrolments"} <= tables
    assert not any("127.0.0.1" in b for b in blobs if isinstance(b, str))
    # per-client rows are gone once the round closed
    after = {table for table, _ in _all_rows(secure_server.var)}
    assert "inbox" not in after and "participants" not in after


def test_admission_abuse_is_refused(secure_server: Server, tmp_path: Path) -> None:
    """No token: 401; forged or replayed token: 403/409; a client's crafted replies for
    other ids or repeats are refused; the daily allowance caps issuance."""
    url = secure_server.url
    round_ = _wait_checkin(url)
    t = HttpTransport(url, attempts=1)
    with pytest.raises(TransportError) as no_token:
        t.request("POST", f"/v1/secure/rounds/{round_}/checkins", {})
    assert no_token.value.status == 401 and no_token.value.reason == "missing_token"
    device = _device(url, tmp_path, 0, np.zeros(P, np.float32))
    with pytest.raises(TransportError) as spent:
        device.refill_tokens(3)  # allowance is 2 a day
    assert spent.value.status == 429
    token = device.store.take_token(token_day(time.time()))
    assert token is not None
    body = {"token": {"input": base64.b64encode(token.input).decode(),
                      "authenticator": base64.b64encode(token.authenticator).decode()}}
    forged = {"token": {"input": body["token"]["input"],
                        "authenticator": base64.b64encode(bytes(64)).decode()}}
    with pytest.raises(TransportError) as bad:
        t.request("POST", f"/v1/secure/rounds/{round_}/checkins", forged)
    assert bad.value.status == 403
    ticket = t.request("POST", f"/v1/secure/rounds/{round_}/checkins", body).body["ticket"]
    refused = 0
    for _ in range(100):  # the same client crafting 100 more check-ins with its token
        try:
            t.request("POST", f"/v1/secure/rounds/{round_}/checkins", body)
        except TransportError as exc:
            assert exc.status == 409 and exc.reason == "token_replayed"
            refused += 1
    assert refused == 100
    conn = sqlite3.connect(secure_server.var / "secure" / "rounds.sqlite3")
    n = conn.execute("SELECT COUNT(*) FROM participants WHERE round=?", (round_,)).fetchone()
    assert n[0] == 1
    # crafted protocol messages before the cohort exists are refused
    msg = SecAggMessage.from_bytes(
        b'{"kind":"key_advertisement","body":{"round_id":{"$b":"AAAAAAAAAAAAAAAAAAAAAA=="},'
        b'"sender":3,"c_public":{"$b":""},"s_public":{"$b":""},"sig_public":{"$b":""}}}')
    with pytest.raises(TransportError) as early:
        t.request("POST", f"/v1/secure/rounds/{round_}/messages",
                  {"message": base64.b64encode(msg.to_bytes()).decode()},
                  headers={"Authorization": f"Bearer {ticket}"})
    assert early.value.status == 409
    with pytest.raises(TransportError) as stranger:
        t.request("GET", f"/v1/secure/rounds/{round_}/message",
                  headers={"Authorization": f"Bearer {base64.b64encode(bytes(32)).decode()}"})
    assert stranger.value.status == 403


def test_a_device_with_nothing_to_train_sits_out_and_keeps_its_token(
        secure_server: Server, tmp_path: Path) -> None:
    """The app's trainer answers None (no training example): no check-in, no token spent."""
    url = secure_server.url
    device = DeviceClient(HttpTransport(url, timeout_s=10), DeviceStore(tmp_path / "idle.db"),
                          lambda params: None, poll_interval_s=0.05)
    device.enrol()
    device.refill_tokens(2)
    round_ = _wait_checkin(url)
    result = device.participate(deadline_s=10)
    assert result.status == "ineligible" and result.round == round_
    assert result.detail == "nothing to train on"
    assert device.store.count_tokens(token_day(time.time())) == 2
    conn = sqlite3.connect(secure_server.var / "secure" / "rounds.sqlite3")
    n = conn.execute("SELECT COUNT(*) FROM participants WHERE round=?", (round_,)).fetchone()
    assert n[0] == 0


class _LostMaskAnswers(HttpTransport):
    """Delivers every masked-input reply, then loses the server's answer (the device
    sees a failure and sends it again)."""

    def request(self, method: str, path: str, body: object = None, *,
                headers: dict[str, str] | None = None) -> HttpResponse:
        answer = super().request(method, path, body, headers=headers)
        if method == "POST" and path.endswith("/messages") and isinstance(body, dict):
            kind = SecAggMessage.from_bytes(base64.b64decode(body["message"])).kind
            if kind == "masked_input" and not getattr(self, "lost", False):
                self.lost = True
                raise TransportError(None, "unreachable", "answer lost")
        return answer


@pytest.fixture
def patient_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    # a long check-in window: every device must make it in on a loaded machine
    yield from _start(tmp_path, monkeypatch, checkin_s=20.0, max_clients=6)


def test_a_reply_resent_after_its_stage_closed_still_counts(patient_server: Server,
                                                             tmp_path: Path) -> None:
    """Every device's answer to its masked input is lost and it sends it again: the
    earlier ones find it stored (replayed), the last one finds the stage closed by its
    own reply (wrong_stage). All complete, all inputs are summed, the sum is exact."""
    url = patient_server.url
    rng = np.random.default_rng(1)
    deltas = rng.normal(0, 0.2, (6, P)).astype(np.float32)
    devices = []
    for i in range(6):
        d = DeviceClient(_LostMaskAnswers(url, timeout_s=10),
                         DeviceStore(tmp_path / f"lost{i}.db"), _trains_to(deltas[i]),
                         poll_interval_s=0.05, max_poll_interval_s=0.2)
        d.enrol()
        d.refill_tokens(2)
        devices.append(d)
    round_ = _wait_checkin(url)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda d: d.participate(deadline_s=60), devices))
    assert [r.status for r in results] == ["completed"] * 6, [r.detail for r in results]
    assert all(r.masked_sent for r in results)
    assert sum(d.transient_failures for d in devices) == 6
    info = _wait_closed(url, round_)
    assert info["status"] == "aggregated" and info["outcome"]["n_survivors"] == 6
    total = np.frombuffer(base64.b64decode(info["outcome"]["sum"]), "<u4")
    reports = np.stack([r.report for r in results if r.report is not None])
    np.testing.assert_array_equal(total, modular_sum(reports, 32))
