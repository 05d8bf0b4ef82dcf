"""Issue #18 item 4: one persistent privacy ledger for the server's rounds.

Every HTTP round opened is recorded with the parameters it ran under, before it opens;
a round over the budget is not opened (``refuse``; ``stop`` closes the lineage); nothing
is re-accounted with later parameters; abandoned rounds count; days follow the clock;
the simulation's rounds of the lineage's root count with their own parameters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_serving_support import N_PARAMETERS, build_var, fake_app, upload

import data
from federated import (
    DevicePrivacyAccountant,
    FederatedConfig,
    PrivacyLedger,
    RoundPrivacyEvent,
    parse_upload,
)
from serving import UpdateStore, aggregate_round, open_next_round
from serving.rounds import (
    BudgetExhaustedError,
    ServerLedger,
    lineage_of,
    privacy_after,
    record_round_opening,
    server_ledger,
    simulated_events,
)

DAY = 86_400.0
T0 = 1_780_000_000.0  # a fixed clock: 2026-05-28 (UTC)


def config(sigma: float = 1.0, target: float | None = None, **rounds: Any) -> FederatedConfig:
    return FederatedConfig.model_validate({
        "rounds": {"min_reports": 2, "max_examples": 100, "deadline_s": 300.0,
                   "sampling_rate": 0.5, "max_uploads_per_day": 100, **rounds},
        "privacy": {"clip_norm": 1.0, "noise_multiplier": sigma, "target_epsilon": target,
                    "budget_kind": "device_local", "delta": 1e-6}})


def epsilon(sigmas: list[float], q: float = 0.5, n_min: int = 2,
            max_per_day: int | None = None, days: list[int] | None = None) -> float:
    days = days or [0] * len(sigmas)
    ledger = PrivacyLedger(events=tuple(RoundPrivacyEvent(s, q, n_min, d)
                                        for s, d in zip(sigmas, days, strict=True)),
                           max_uploads_per_day=max_per_day)
    return DevicePrivacyAccountant(delta=1e-6).epsilon(ledger, "device_local")


@pytest.fixture()
def var(tiny_world: Path, tmp_path: Path) -> Path:
    return build_var(tiny_world, tmp_path / "var")


def root(var: Path) -> str:
    return data.resolve_artifact(var / "reranker", "latest").name


def abandon(store: UpdateStore, var: Path, cfg: FederatedConfig, now: float) -> None:
    """Close the open round without uploads (too few reports: abandoned)."""
    spec = store.current_round()
    assert spec is not None
    result = aggregate_round(store, var, spec.round, config=cfg, publish=None,
                             now=now + 400)
    assert result.outcome.status == "abandoned"


def add_uploads(store: UpdateStore, n: int, now: float) -> None:
    spec = store.current_round()
    assert spec is not None
    for seed in range(n):
        payload = upload(spec.round, spec.model_version, seed=seed, scale=0.01)
        store.add_update(parse_upload(payload, n_parameters=N_PARAMETERS,
                                      max_examples=spec.max_examples), now + 1)


def test_a_round_over_budget_is_refused_and_nothing_opens(var: Path, tmp_path: Path) -> None:
    target = (epsilon([1.0] * 2) + epsilon([1.0] * 3)) / 2  # two rounds fit, three do not
    cfg = config(1.0, target)
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        for r in range(2):
            open_next_round(store, var, root(var), config=cfg, now=T0 + r * 600)
            abandon(store, var, cfg, T0 + r * 600)
        with pytest.raises(BudgetExhaustedError, match="over the budget") as refused:
            open_next_round(store, var, root(var), config=cfg, now=T0 + 1200)
        assert refused.value.epsilon == pytest.approx(epsilon([1.0] * 3))
        assert store.current_round() is None and len(store.rounds()) == 2
        with server_ledger(store) as ledger:
            assert ledger.ledger(lineage_of(var, root(var))).rounds == 2  # not recorded
        # 'refuse': a round with more noise still fits and opens
        open_next_round(store, var, root(var), config=config(50.0, target), now=T0 + 1800)
        assert store.current_round() is not None


def test_stop_policy_closes_the_lineage(var: Path, tmp_path: Path) -> None:
    cfg = config(1.0, epsilon([1.0]) * 1.01)
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        open_next_round(store, var, root(var), config=cfg, now=T0, budget_policy="stop")
        abandon(store, var, cfg, T0)
        with pytest.raises(BudgetExhaustedError) as refused:
            open_next_round(store, var, root(var), config=cfg, now=T0 + 600,
                            budget_policy="stop")
        assert refused.value.stopped
        with pytest.raises(BudgetExhaustedError, match="is stopped"):  # even with more noise
            open_next_round(store, var, root(var), config=config(50.0, 100.0), now=T0 + 1200,
                            budget_policy="stop")
        assert store.current_round() is None


def test_http_round_endpoint_says_the_budget_is_spent(var: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "federated.json"
    cfg_path.write_text(config(1.0, epsilon([1.0]) * 1.01).model_dump_json())
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3", federated_config=cfg_path)
    client = app.test_client()
    first = client.get("/v1/federated/rounds/current")
    assert first.status_code == 200
    ledger_path = app.extensions["sticker_serving"].config.resolved_ledger_path
    with ServerLedger(ledger_path) as ledger:  # where every engine of the server records
        assert ledger.ledger(lineage_of(var, root(var))).rounds == 1
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        abandon(store, var, config(1.0), time.time())
    refused = client.get("/v1/federated/rounds/current")
    assert refused.status_code == 404
    assert refused.get_json()["type"] == "/problems/privacy_budget_exhausted"


def test_nothing_is_re_accounted_with_later_parameters(var: Path, tmp_path: Path) -> None:
    """Round 0 runs at σ=0.5, round 1 at σ=5: the version after round 1 states the ε of
    both as they ran; the old ``privacy_after`` gave both rounds σ=5 (issue #18's 2.59 →
    0.133 rewrite)."""
    records: list[dict[str, Any]] = []

    def publish(parameters: np.ndarray, base: Path, kind_dir: Path,
                record: dict[str, Any]) -> Path:
        records.append(record)
        return base

    cfgs = [config(0.5), config(5.0)]
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        for r, cfg in enumerate(cfgs):
            now = T0 + r * 600
            open_next_round(store, var, root(var), config=cfg, now=now)
            add_uploads(store, 2, now)
            result = aggregate_round(store, var, r, config=cfg, publish=publish, now=now + 400)
            assert result.outcome.status == "aggregated"
        with server_ledger(store) as ledger:
            sigmas = [e.event.noise_multiplier for e in ledger.entries(lineage_of(
                var, root(var)))]
    assert sigmas == [0.5, 5.0]
    first, second = (r["privacy"]["guarantees"]["device_local"]["epsilon"] for r in records)
    assert first == pytest.approx(epsilon([0.5]), rel=1e-6)
    assert second == pytest.approx(epsilon([0.5, 5.0]), rel=1e-6)
    old = privacy_after({}, cfgs[1], 2)["guarantees"]["device_local"]["epsilon"]
    assert old == pytest.approx(epsilon([5.0, 5.0]), rel=1e-6)
    assert second > 10 * old  # what the re-accounting hid
    assert records[0]["privacy"]["ledger"]["events"] == 1  # the first version: round 0 only


def test_abandoned_rounds_count_and_days_follow_the_clock(var: Path, tmp_path: Path) -> None:
    cfg = config(1.0, max_uploads_per_day=1)
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        opened = [T0, T0 + 600, T0 + DAY]  # two rounds on one day, one on the next
        for now in opened:
            open_next_round(store, var, root(var), config=cfg, now=now)
            abandon(store, var, cfg, now)
        with server_ledger(store) as ledger:
            lineage = lineage_of(var, root(var))
            entries = ledger.entries(lineage)
            assert [e.status for e in entries] == ["abandoned"] * 3
            assert [e.event.day for e in entries] == [int(t // DAY) for t in opened]
            recorded = ledger.ledger(lineage, max_uploads_per_day=1)
    assert recorded.rounds == 3
    assert len(recorded.participation_events()) == 2  # one a day, by the server's clock
    eps = DevicePrivacyAccountant(delta=1e-6).epsilon(recorded, "device_local")
    assert eps == pytest.approx(epsilon([1.0] * 2, max_per_day=None), rel=1e-6)


def test_simulated_rounds_of_the_root_count_with_their_own_parameters(var: Path,
                                                                      tmp_path: Path) -> None:
    privacy = {"rounds": 3, "noise_multiplier": 2.0, "sampling_rate": 0.25, "min_reports": 5,
               "enabled": True, "epsilon": {}}
    trained = var / "reranker" / data.new_version(salt="trained")
    with data.publish_artifact(trained, kind="reranker", parameters={
            "task": "reranker", "n_parameters": N_PARAMETERS}) as writer:
        (writer.path / "model.onnx").write_bytes(b"fake onnx trained")
        np.save(writer.path / "global_weights.npy", np.zeros(N_PARAMETERS, np.float32))
        writer.write_json("privacy.json", privacy)
    with UpdateStore(tmp_path / "updates.sqlite3") as store:
        spec = open_next_round(store, var, trained.name, config=config(0.5), now=T0)
        record_round_opening(store, var, spec, config(0.5))  # a retry: counted once
        with server_ledger(store) as ledger:
            entries = ledger.entries(trained.name)
    assert [(e.source, e.event.noise_multiplier, e.event.sampling_rate,
             e.event.min_reports) for e in entries] == (
        [("simulation", 2.0, 0.25, 5)] * 3 + [("http", 0.5, 0.5, 2)])
    # the run recorded no config: the platform defaults, secure aggregation with the
    # distributed discrete Gaussian, whose rounding raises the sensitivity above C
    simulated = entries[0].event
    assert simulated.mechanism == "ddg" and simulated.sensitivity > 1.0
    assert simulated.dimension >= N_PARAMETERS and entries[-1].event.mechanism == "gaussian"
    plain = var / "reranker" / data.new_version(salt="plain")
    with data.publish_artifact(plain, kind="reranker", update_latest=False, parameters={
            "task": "reranker", "n_parameters": N_PARAMETERS, "config": config(2.0).model_copy(
                update={"secure_aggregation": config(2.0).secure_aggregation.model_copy(
                    update={"enabled": False})}).model_dump(mode="json")}) as writer:
        (writer.path / "model.onnx").write_bytes(b"fake onnx plain")
        np.save(writer.path / "global_weights.npy", np.zeros(N_PARAMETERS, np.float32))
        writer.write_json("privacy.json", privacy)
    assert {e.mechanism for e in simulated_events(var, plain.name)} == {"gaussian"}


def test_ledger_refuses_a_changed_replay(tmp_path: Path) -> None:
    cfg = config(1.0)
    with ServerLedger(tmp_path / "ledger.sqlite3") as ledger:
        event = RoundPrivacyEvent(1.0, 0.5, 2)
        ledger.open_round("L", "http", 0, event, opened_at=T0, config=cfg)
        ledger.open_round("L", "http", 0, event, opened_at=T0 + 5, config=cfg)  # once
        assert ledger.ledger("L").rounds == 1
        with pytest.raises(ValueError, match="recorded with"):
            ledger.open_round("L", "http", 0, RoundPrivacyEvent(9.0, 0.5, 2), opened_at=T0,
                              config=cfg)
    with ServerLedger(tmp_path / "ledger.sqlite3") as reopened:  # persistent
        assert reopened.ledger("L").rounds == 1
        assert np.isfinite(reopened.report("L", cfg)["epsilon"]["device_local"])


class _AppLog:
    """Stands in for ``serving._app``'s logger (structlog may cache its loggers once
    configured by an earlier test, so ``capture_logs`` cannot be relied on here)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.entries.append({"log_level": level, "event": event,
                                                        **kw})


def _start_logs(var: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[dict[str, Any]]]:
    """create_app with a plain-round budget the lineage has already spent; its logs."""
    import serving._app as app_module
    recorder = _AppLog()
    monkeypatch.setattr(app_module, "log", recorder)
    cfg_path = tmp_path / "federated.json"
    cfg_path.write_text(config(1.0, 1e-3).model_dump_json())
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3", federated_config=cfg_path)
    return app, recorder.entries


def test_server_start_tries_no_plain_round_when_secure_rounds_are_configured(
        var: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 8 noticed: every server start logged "could not open a federated round
    ... over the budget" although devices use the secure rounds and no plain round was
    ever recorded: create_app opened the plain round of the served version on start.
    With secure rounds configured it no longer tries (and says so); the plain endpoint
    still opens one on demand."""
    import json
    secure = tmp_path / "secure.json"
    secure.write_text(json.dumps({"enabled": True, "model": "zeros", "n_parameters": 16,
                                  "min_clients": 4, "checkin_s": 600,
                                  "tick_interval_s": 60}))
    monkeypatch.setenv("STICKERS_SECURE_CONFIG", str(secure))
    app, logs = _start_logs(var, tmp_path, monkeypatch)
    try:
        events = [e["event"] for e in logs]
        assert "could not open a federated round" not in events
        assert not any(e["log_level"] == "warning" and "federated round" in e["event"]
                       for e in logs)
        assert ("plain federated round not opened at start: secure rounds are configured"
                in events)
        with UpdateStore(tmp_path / "updates.sqlite3") as store:
            assert store.current_round() is None
        ledger_path = app.extensions["sticker_serving"].config.resolved_ledger_path
        with ServerLedger(ledger_path) as ledger:
            assert not [e for e in ledger.entries(lineage_of(var, root(var)))
                        if e.source == "http"]
    finally:
        app.extensions["sticker_secure_rounds"].close()


def test_server_start_logs_a_budget_refusal_of_the_plain_round_as_one(
        var: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without secure rounds the start still opens the plain round; when the lineage's
    budget refuses it, the log says that (a warning naming the budget), not an error."""
    monkeypatch.delenv("STICKERS_SECURE_CONFIG", raising=False)
    _app, logs = _start_logs(var, tmp_path, monkeypatch)
    assert "could not open a federated round" not in [e["event"] for e in logs]
    [refusal] = [e for e in logs if e["event"].startswith("no plain federated round opened")]
    assert refusal["log_level"] == "warning" and refusal["target"] == 1e-3
    assert refusal["epsilon"] > 1e-3 and "over the budget" in refusal["detail"]


def test_simulated_rounds_keep_the_collusion_bound_their_privacy_json_was_charged_with(
        var: Path) -> None:
    """A root whose privacy.json states ``corruption_rate`` (written since γ is charged)
    counts its simulated rounds at that γ; one written before reads γ = 0, the charge it
    was published with: the ledger does not re-account it."""
    base = {"rounds": 2, "noise_multiplier": 0.5, "sampling_rate": 0.1, "min_reports": 20,
            "enabled": True, "epsilon": {}}
    gammas = {}
    for salt, privacy in (("new", {**base, "corruption_rate": 0.05}), ("old", base)):
        root_dir = var / "reranker" / data.new_version(salt=salt)
        with data.publish_artifact(root_dir, kind="reranker", update_latest=False,
                                   parameters={"task": "reranker",
                                               "n_parameters": N_PARAMETERS}) as writer:
            (writer.path / "model.onnx").write_bytes(b"fake onnx " + salt.encode())
            np.save(writer.path / "global_weights.npy", np.zeros(N_PARAMETERS, np.float32))
            writer.write_json("privacy.json", privacy)
        events = simulated_events(var, root_dir.name)
        gammas[salt] = {(e.corruption_rate, e.honest_reports) for e in events}
    assert gammas == {"new": {(0.05, 19)}, "old": {(0.0, 20)}}


def test_a_row_recorded_before_gamma_is_the_same_round_and_keeps_its_charge(
        tmp_path: Path) -> None:
    """Mixed lineage: a secure round recorded before events stated γ (its JSON lacks the
    field) and one recorded now at γ 0.05. The old row reads γ = 0; a retry of its round
    after a crash, now built at γ 0.05, is recognised as the same round (not a changed
    replay) and records nothing; the report composes each at its own γ and says so."""
    import json
    import sqlite3
    from dataclasses import asdict
    cfg = config(1.0).model_copy(update={"privacy": config(1.0).privacy.model_copy(
        update={"budget_kind": "device_sum"})})
    now = RoundPrivacyEvent(1.0, 0.01, 100, 0, mechanism="ddg", sensitivity=1.0, tau=0.0,
                            dimension=64, secret_sampling=False, corruption_rate=0.05)
    path = tmp_path / "ledger.sqlite3"
    with ServerLedger(path):
        pass
    old = {k: v for k, v in asdict(now).items() if k != "corruption_rate"}
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO ledger (lineage, source, round, event, day, opened_at, "
                     "status) VALUES ('l', 'secure', 0, ?, 0, 0.0, 'aggregated')",
                     (json.dumps(old),))
    with ServerLedger(path) as ledger:
        again = ledger.open_round("l", "secure", 0, now, opened_at=10.0, config=cfg)
        assert again.event.corruption_rate == 0.0  # the recorded row, as charged then
        ledger.open_round("l", "secure", 1, now, opened_at=20.0, config=cfg)
        events = [e.event for e in ledger.entries("l")]
        report = ledger.report("l", cfg)
    assert [e.corruption_rate for e in events] == [0.0, 0.05]
    assert report["rounds_by_corruption_rate"] == {"0": 1, "0.05": 1}
    expected = DevicePrivacyAccountant(delta=1e-6).epsilon(
        PrivacyLedger(events=tuple(events), max_uploads_per_day=100), "device_sum")
    assert report["epsilon"]["device_sum"] == pytest.approx(expected, rel=1e-12)
    assert expected > DevicePrivacyAccountant(delta=1e-6).epsilon(
        PrivacyLedger(events=(events[0], events[0]), max_uploads_per_day=100), "device_sum")
