"""Secure rounds keep the server's privacy ledger and promote by policy (#18 items 4-5).

On a fake clock, in-process (the engine the ``/v1/secure`` endpoints call): every round
opened is recorded with the event of its round recipe (the distributed discrete
Gaussian); the budget refuses (or stops) a round before it opens; abandoned rounds
count; a restart never records a round twice; an aggregated round's parameters are a
*candidate* that goes live only by the promotion policy, recorded in promotions.jsonl.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_device_rounds import T0, Clock, _step, _token
from test_serving_support import build_real_var

import data
from federated import (
    DevicePrivacyAccountant,
    PrivacyLedger,
    RoundPrivacyEvent,
    RoundRecipe,
)
from federated.privacy import secure_noise_generator
from federated.secagg import SecAggClient
from serving import ApiError
from serving.rounds import (
    SECURE,
    BudgetPolicy,
    LedgerEntry,
    SecureRounds,
    SecureRoundsConfig,
    ServerLedger,
    lineage_of,
)
from serving.versions import history

P = 16
BASE = {"enabled": True, "model": "zeros", "n_parameters": P, "checkin_s": 10, "stage_s": 5,
        "min_clients": 4, "max_clients": 20, "n_max": 50, "sampling_rate": 0.05}


def _engine(directory: Path, clock: Clock, *, policy: BudgetPolicy = "refuse",
            var: Path | None = None, evaluate: Callable[[Path, str], float] | None = None,
            **overrides: object) -> SecureRounds:
    cfg = SecureRoundsConfig.model_validate({**BASE, **overrides})
    return SecureRounds(cfg, directory, lambda: np.zeros(P, np.float32), clock=clock,
                        var=var, budget_policy=policy, evaluate=evaluate)


def _epsilon(cfg: SecureRoundsConfig, rounds: int, n_parameters: int = P) -> float:
    fcfg = cfg.federated()
    ledger = PrivacyLedger.planned_from(fcfg, n_parameters, rounds=rounds, secure=True)
    return DevicePrivacyAccountant(delta=fcfg.privacy.delta).epsilon(
        ledger, fcfg.privacy.budget_kind)


def _entries(engine: SecureRounds) -> list[LedgerEntry]:
    with ServerLedger(engine.ledger_path) as ledger:
        lineage = engine._lineage(None)
        return [e for e in ledger.entries(lineage) if e.source == SECURE]


@pytest.mark.parametrize("policy", ["refuse", "stop"])
def test_budget_refuses_the_round_that_would_exceed_it(tmp_path: Path,
                                                      policy: BudgetPolicy) -> None:
    """Target between ε after one and two rounds: round 0 opens (recorded with the
    recipe's DDG event), is abandoned by its deadline and still counts, and round 1 is
    never opened: devices get 404 privacy_budget_exhausted, also after a restart."""
    cfg = SecureRoundsConfig.model_validate(BASE)
    one, two = _epsilon(cfg, 1), _epsilon(cfg, 2)
    assert one < two
    target = (one + two) / 2
    clock = Clock()
    engine = _engine(tmp_path, clock, policy=policy, target_epsilon=target)
    engine.tick()
    assert engine.current()["round"] == 0
    [entry] = _entries(engine)
    recipe = RoundRecipe.from_config(cfg.federated(), P, secure=True)
    expected = RoundPrivacyEvent.from_recipe(recipe, int(T0 // 86_400))
    assert entry.event == expected and entry.event.mechanism == "ddg"
    assert entry.status == "open"
    clock.now += 11  # nobody checked in: abandoned
    engine.tick()
    assert engine.round_info(0)["status"] == "abandoned"
    with pytest.raises(ApiError) as refused:
        engine.current()
    assert refused.value.status == 404 and refused.value.reason == "privacy_budget_exhausted"
    assert engine.round_info(0)["status"] == "abandoned"
    with pytest.raises(ApiError):
        engine.round_info(1)  # never opened
    [entry] = _entries(engine)
    assert entry.status == "abandoned"  # abandoned, and counted
    restarted = _engine(tmp_path, clock, policy=policy, target_epsilon=target)
    restarted.tick()
    with pytest.raises(ApiError) as again:
        restarted.current()
    assert again.value.reason == "privacy_budget_exhausted"
    assert len(_entries(restarted)) == 1
    with ServerLedger(engine.ledger_path) as ledger:
        stopped = ledger.stopped(engine._lineage(None))
    assert (stopped is not None) == (policy == "stop")
    if policy == "stop":  # even a round with far more noise opens no more
        quiet = _engine(tmp_path, clock, policy=policy, target_epsilon=target,
                        noise_multiplier=50.0)
        quiet.tick()
        assert quiet.refused is not None and quiet.refused.stopped


def test_each_opened_round_is_recorded_once_across_restarts(tmp_path: Path) -> None:
    """Restarts mid-round, and a crash between the ledger's commit and the round's (the
    ledger holds round 0 and the rounds store does not): one entry per opened round."""
    clock = Clock()
    first = _engine(tmp_path, clock)
    cfg = first.config
    recipe = RoundRecipe.from_config(cfg.federated(), P, secure=True)
    with ServerLedger(first.ledger_path) as ledger:  # the crash: recorded, never opened
        ledger.open_round(first._lineage(None), SECURE, 0,
                          RoundPrivacyEvent.from_recipe(recipe, 0), opened_at=clock.now,
                          config=recipe.config)
    first.tick()
    assert first.current()["round"] == 0
    assert [(e.round, e.status) for e in _entries(first)] == [(0, "open")]
    tickets = [first.checkin(0, _token(first)) for _ in range(4)]
    for _ in range(2):  # two restarts while the round runs
        engine = _engine(tmp_path, clock)
        engine.tick()
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.ones(dim, np.uint32)) for t in tickets}
    for _ in range(5):
        _step(engine, 0, clients)
        engine = _engine(tmp_path, clock)  # a restart after every stage
    assert engine.round_info(0)["status"] == "aggregated"
    engine.tick()  # decides the candidate, opens round 1
    assert engine.current()["round"] == 1
    assert [(e.round, e.status) for e in _entries(engine)] == [(0, "aggregated"), (1, "open")]
    clock.now += 11
    _engine(tmp_path, clock).tick()  # round 1 abandoned, round 2 opens
    assert [(e.round, e.status) for e in _entries(engine)] == [
        (0, "aggregated"), (1, "abandoned"), (2, "open")]


def test_zeros_candidates_wait_for_an_operator(tmp_path: Path) -> None:
    """Under the operator policy an aggregated round's parameters stay a held candidate:
    the next round trains the live version, and the decision is recorded."""
    clock = Clock()
    engine = _engine(tmp_path, clock, promotion="operator")
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(4)]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.full(dim, 7, np.uint32)) for t in tickets}
    for _ in range(5):
        _step(engine, 0, clients)
    engine.tick()
    assert engine.model()[0] == 0
    assert engine.current()["model_version"] == 0  # round 1 trains the live version
    [candidate] = engine.candidates()
    assert candidate["status"] == "held" and candidate["decision"]["policy"] == "operator"
    [entry] = [e for e in history(tmp_path) if e["action"] == "candidate"]
    assert entry["promoted"] is False and entry["version"] == "secure-model-1"


def test_validation_is_refused_for_the_zeros_model() -> None:
    with pytest.raises(ValueError, match="needs model='reranker'"):
        SecureRoundsConfig.model_validate({**BASE, "promotion": "validation"})
    with pytest.raises(ValueError, match="only for model='zeros'"):
        SecureRoundsConfig.model_validate({**BASE, "model": "reranker",
                                           "promotion": "unconditional"})


# ----------------------------------------------------------- the reranker model


@pytest.fixture(scope="module")
def real_var_template(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_real_var(tiny_world, tmp_path_factory.mktemp("secure-real"))


@pytest.fixture()
def real_var(real_var_template: Path, tmp_path: Path) -> Path:
    var = tmp_path / "var"
    shutil.copytree(real_var_template, var)
    return var


def _reranker_round(engine: SecureRounds, clock: Clock, round_: int,
                    deltas: np.ndarray) -> dict[str, Any]:
    """Devices with ``deltas`` (n, P) check in, encode (clip, DDG) and run SecAgg+."""
    tickets = [engine.checkin(round_, _token(engine)) for _ in range(len(deltas))]
    info = engine.current()
    clock.now += 11
    engine.tick()
    enc = engine.encoding(deltas.shape[1])
    reports = enc.encode(deltas, int(info["rotation_seed"]), secure_noise_generator(),
                         secure_noise_generator())
    clients = {t: SecAggClient(r) for t, r in zip(tickets, reports, strict=True)}
    for _ in range(5):
        _step(engine, round_, clients)
    return engine.round_info(round_)


@pytest.mark.parametrize("better", [True, False])
def test_secure_aggregate_goes_through_the_promotion_policy(real_var: Path,
                                                            better: bool) -> None:
    """Model 'reranker': the round trains the live reranker; its aggregate is published
    as a reranker version without moving LATEST; the validation policy compares it with
    the live one and promotes it only if it does not drop (LATEST moves, the next round
    trains it) — else it is held and the next round trains the old version. The decision
    is in promotions.jsonl; the candidate's privacy.json is the ledger's, the simulated
    rounds of its lineage plus this secure round."""
    clock = Clock()
    base = data.resolve_artifact(real_var / "reranker", "latest").name
    base_weights = np.load(real_var / "reranker" / base / "global_weights.npy")
    n_parameters = int(base_weights.shape[0])
    calls: list[str] = []

    def evaluate(var: Path, version: str) -> float:
        calls.append(version)
        if version == base:
            return 0.5
        return 0.6 if better else 0.4

    engine = _engine(real_var / "secure", clock, var=real_var, model="reranker",
                     evaluate=evaluate, noise_multiplier=0.3, target_epsilon=None)
    engine.tick()
    assert engine.current()["model_version"] == 0
    np.testing.assert_array_equal(engine.model()[1], base_weights)
    rng = np.random.default_rng(0)
    deltas = rng.normal(0, 0.02, (5, n_parameters)).astype(np.float32)
    info = _reranker_round(engine, clock, 0, deltas)
    assert info["status"] == "aggregated", info
    assert data.resolve_artifact(real_var / "reranker", "latest").name == base  # not yet
    [decided] = engine.decide_pending()
    candidate = decided["version"]
    assert decided["promoted"] is better and sorted(calls) == sorted([base, candidate])
    manifest = data.read_manifest(real_var / "reranker" / candidate, verify=True,
                                  kind="reranker")
    assert manifest.parameters["server_round"]["base_version"] == base
    weights = np.load(manifest.file("global_weights.npy"))
    assert not np.array_equal(weights, base_weights)
    stored = engine._conn().execute("SELECT parameters FROM models WHERE model_version=1"
                                    ).fetchone()[0]
    np.testing.assert_array_equal(weights, np.frombuffer(stored, np.float32))
    privacy = json.loads(manifest.file("privacy.json").read_text())
    lineage = lineage_of(real_var, candidate)
    assert lineage == base
    with ServerLedger(engine.ledger_path) as ledger:
        entries = ledger.entries(lineage)
    # the simulation's rounds of the root, secure round 0, and round 1 opened since
    assert [(e.source, e.round) for e in entries][-2:] == [(SECURE, 0), (SECURE, 1)]
    assert entries[0].source == "simulation"
    assert privacy["ledger"]["events"] == len(entries) - 1  # up to the candidate's round
    assert privacy["ledger"]["through"] == [SECURE, 0]
    entry = [e for e in history(real_var / "reranker") if e["action"] == "candidate"][-1]
    assert entry["version"] == candidate and entry["promoted"] is better
    assert entry["candidate_figure"] == (0.6 if better else 0.4)
    live = data.resolve_artifact(real_var / "reranker", "latest").name
    assert live == (candidate if better else base)
    nxt = engine.current()
    assert nxt["round"] == 1
    assert nxt["model_version"] == (1 if better else 0)
    np.testing.assert_array_equal(engine.model()[1], weights if better else base_weights)
    # a restart does not decide the same candidate again
    assert _engine(real_var / "secure", clock, var=real_var, model="reranker",
                   evaluate=evaluate, noise_multiplier=0.3,
                   target_epsilon=None).decide_pending() == []


def test_a_candidate_published_before_a_crash_is_recovered_not_published_twice(
        real_var: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between publishing the candidate's reranker version and recording its name:
    the next decision finds that version (same model version, round and base, files
    verified) and decides it; no second copy, no orphan."""
    clock = Clock()
    kind_dir = real_var / "reranker"
    base = data.resolve_artifact(kind_dir, "latest").name
    n_parameters = int(np.load(kind_dir / base / "global_weights.npy").shape[0])

    def evaluate(var: Path, version: str) -> float:
        return 0.5 if version == base else 0.6

    def engine() -> SecureRounds:
        return _engine(real_var / "secure", clock, var=real_var, model="reranker",
                       evaluate=evaluate, noise_multiplier=0.3, target_epsilon=None)

    first = engine()
    first.tick()
    deltas = np.random.default_rng(1).normal(0, 0.02, (5, n_parameters)).astype(np.float32)
    assert _reranker_round(first, clock, 0, deltas)["status"] == "aggregated"
    versions_before = {p.name for p in kind_dir.iterdir() if p.is_dir()}
    published: list[str] = []
    real_publish = SecureRounds._publish

    def publish_then_crash(self: SecureRounds, params: np.ndarray, base_artifact: str,
                           version: int, round_: int) -> str:
        published.append(real_publish(self, params, base_artifact, version, round_))
        raise KeyboardInterrupt("power lost before the name was recorded")

    monkeypatch.setattr(SecureRounds, "_publish", publish_then_crash)
    with pytest.raises(KeyboardInterrupt):
        first.decide_pending()
    monkeypatch.setattr(SecureRounds, "_publish", real_publish)
    [orphan] = published
    assert {p.name for p in kind_dir.iterdir() if p.is_dir()} == versions_before | {orphan}
    row = first._conn().execute("SELECT artifact, status FROM models WHERE model_version=1"
                                ).fetchone()
    assert row == (None, "candidate")  # the name never reached the store
    # the restarted server (the dead claim is this process's own: taken over)
    [decided] = engine().decide_pending()
    assert decided["version"] == orphan and decided["promoted"] is True
    assert {p.name for p in kind_dir.iterdir() if p.is_dir()} == versions_before | {orphan}
    assert data.resolve_artifact(kind_dir, "latest").name == orphan
    # a damaged copy is not taken for the candidate's
    assert engine()._published(1, 0, base) == orphan
    (kind_dir / orphan / "global_weights.npy").write_bytes(b"damaged")
    assert engine()._published(1, 0, base) is None


def test_plain_rounds_after_secure_rounds_are_charged_device_local_for_every_round(
        real_var: Path, tmp_path: Path) -> None:
    """Decision (#18): a plain HTTP round shows the server each upload, so its budget kind
    is ``device_local`` over every round of the lineage — the secure rounds included at
    their own device-local cost, a valid bound on what their sums reveal (a sum is a
    function of the uploads). Their ``secure_sum`` figure cannot stand in: its
    assumption (a secret Poisson sampling coin) is not met by devices that choose when
    to check in. So once secure rounds have spent the device_local budget, the plain
    round is refused (naming device_local) and nothing is recorded; before them it
    opened."""
    from federated import FederatedConfig
    from serving import UpdateStore, aggregate_round, open_next_round
    from serving.rounds import BudgetExhaustedError

    kind_dir = real_var / "reranker"
    base = data.resolve_artifact(kind_dir, "latest").name
    lineage = lineage_of(real_var, base)
    n_parameters = int(np.load(kind_dir / base / "global_weights.npy").shape[0])
    secure = SecureRoundsConfig.model_validate({**BASE, "model": "reranker",
                                                "noise_multiplier": 1.0,
                                                "target_epsilon": None})
    recipe = RoundRecipe.from_config(secure.federated(), n_parameters, secure=True)

    def plain(target: float | None) -> FederatedConfig:
        return FederatedConfig.model_validate({
            "rounds": {"min_reports": 2, "max_examples": 100, "deadline_s": 300.0,
                       "sampling_rate": 0.05, "max_uploads_per_day": 100},
            "privacy": {"clip_norm": 1.0, "noise_multiplier": 20.0, "target_epsilon": target,
                        "budget_kind": "device_local", "delta": 1e-6}})

    ledger_path = real_var / "serving" / "privacy_ledger.sqlite3"
    ledger_path.parent.mkdir(exist_ok=True)
    with UpdateStore(ledger_path.parent / "updates.sqlite3") as store:
        spec = open_next_round(store, real_var, base, config=plain(None), now=T0)
        assert spec is not None
        aggregate_round(store, real_var, spec.round, config=plain(None), publish=None,
                        now=T0 + 400)
        with ServerLedger(ledger_path) as ledger:
            before = ledger.report(lineage, plain(None))["epsilon"]["device_local"]
            for r in range(3):  # secure rounds of the same lineage (their own budget kind)
                ledger.open_round(lineage, SECURE, r, RoundPrivacyEvent.from_recipe(recipe, 0),
                                  opened_at=T0 + 1000 + r, config=recipe.config)
            after = ledger.report(lineage, plain(None))["epsilon"]
        target = (before + after["device_local"]) / 2
        # without the secure rounds a second plain round (sigma 20) fits the target
        with ServerLedger(ledger_path) as ledger:
            kept = [e.event for e in ledger.entries(lineage) if e.source != SECURE]
        without = PrivacyLedger(events=(*kept, kept[-1]), max_uploads_per_day=100)
        assert DevicePrivacyAccountant(delta=1e-6).epsilon(without, "device_local") < target
        # with them it does not; secure_sum would have let it through
        assert after["secure_sum"] < target < after["device_local"]
        with pytest.raises(BudgetExhaustedError, match="device_local"):
            open_next_round(store, real_var, base, config=plain(target), now=T0 + 2000)
        assert store.current_round() is None
        with ServerLedger(ledger_path) as ledger:
            assert [(e.source, e.round) for e in ledger.entries(lineage)][-4:] == [
                ("http", spec.round), (SECURE, 0), (SECURE, 1), (SECURE, 2)]
        # device_sum (secure rounds as sums, plain ones at their device-local cost) holds
        # too and is tighter: under it the same plain round opens
        assert after["secure_sum"] < after["device_sum"] < target
        tighter = plain(target).model_copy(update={"privacy": plain(target).privacy.model_copy(
            update={"budget_kind": "device_sum"})})
        assert open_next_round(store, real_var, base, config=tighter, now=T0 + 2000)
        with ServerLedger(ledger_path) as ledger:
            assert ledger.entries(lineage)[-1].source == "http"
            assert not ledger.entries(lineage)[-1].event.secure_aggregation


def test_the_device_runner_waits_while_the_last_candidate_is_being_decided(
        real_var: Path) -> None:
    """``device run`` evaluates the model after the run only once the last round's
    candidate is decided: the engine's 404 while it is pending means wait; its 404 when
    no round can open (``max_rounds``) means stop waiting."""
    import http.server
    import threading

    from federated._device_population import _wait_decided
    from federated.device import HttpTransport

    clock = Clock()
    kind_dir = real_var / "reranker"
    base = data.resolve_artifact(kind_dir, "latest").name
    n_parameters = int(np.load(kind_dir / base / "global_weights.npy").shape[0])
    engine = _engine(real_var / "secure", clock, var=real_var, model="reranker",
                     evaluate=lambda var, version: 0.5, noise_multiplier=0.3,
                     target_epsilon=None, max_rounds=1)
    engine.tick()
    deltas = np.random.default_rng(2).normal(0, 0.02, (5, n_parameters)).astype(np.float32)
    assert _reranker_round(engine, clock, 0, deltas)["status"] == "aggregated"
    answers: list[tuple[int, dict[str, object]]] = []

    def engine_answer() -> tuple[int, dict[str, object]]:
        try:
            return 200, dict(engine.current())
        except ApiError as exc:
            return exc.status, {"type": f"/problems/{exc.reason}", "status": exc.status,
                                "detail": exc.detail}

    calls: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(1)
            if len(calls) == 4:  # the candidate gets decided while the runner waits
                engine.decide_pending()
            status, body = engine_answer()
            answers.append((status, body))
            data_ = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data_)))
            self.end_headers()
            self.wfile.write(data_)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _wait_decided(HttpTransport(url, attempts=1), 0, 30.0)
        # three answers "being decided", then (max_rounds 1: no round 1) "none can open"
        assert len(calls) == 4
        assert all("being decided" in str(body["detail"]) for _, body in answers[:3])
        assert answers[3][0] == 404 and "being decided" not in str(answers[3][1]["detail"])
        assert engine._conn().execute("SELECT status FROM models WHERE model_version=1"
                                      ).fetchone()[0] in ("live", "held")
    finally:
        server.shutdown()


# ------------------------------------ #18: the budget binds on the headline's guarantee


def _published_privacy(real_var: Path, noise_multiplier: float
                       ) -> tuple[dict[str, Any], SecureRounds]:
    """One aggregated secure round of the live reranker: its candidate's privacy.json."""
    clock = Clock()
    kind_dir = real_var / "reranker"
    base = data.resolve_artifact(kind_dir, "latest").name
    n_parameters = int(np.load(kind_dir / base / "global_weights.npy").shape[0])
    engine = _engine(real_var / "secure", clock, var=real_var, model="reranker",
                     evaluate=lambda var, version: 0.5, noise_multiplier=noise_multiplier)
    engine.tick()
    deltas = np.random.default_rng(3).normal(0, 0.02, (5, n_parameters)).astype(np.float32)
    assert _reranker_round(engine, clock, 0, deltas)["status"] == "aggregated"
    [decided] = engine.decide_pending()
    manifest = data.read_manifest(kind_dir / decided["version"], verify=True, kind="reranker")
    return json.loads(manifest.file("privacy.json").read_text()), engine


def test_secure_rounds_budget_the_guarantee_their_privacy_json_headlines(
        real_var: Path) -> None:
    """#18 (budget and record must agree): with the default config, the kind the secure
    rounds budget is the one their candidate's privacy.json headlines, marked met, and
    its ε is what the budget check spent. Before: the budget was on ``secure_sum``, which
    the same record marks "assumption not met" (HTTP devices choose when to check in, so
    the sampling coin is not secret) while it headlined ``device_local``."""
    privacy, engine = _published_privacy(real_var, noise_multiplier=1.0)
    kind = engine.config.budget_kind
    assert privacy["headline"] == kind == "device_sum"
    assert privacy["guarantees"][kind]["assumption_met"] is True
    assert privacy["budget"] == {"kind": kind, "target_epsilon": engine.config.target_epsilon,
                                 "spent_epsilon": privacy["epsilon"][kind],
                                 "assumption_met": True}
    # the amplified figure is stated, as what would hold with a secret coin
    secure_sum = privacy["guarantees"]["secure_sum"]
    assert secure_sum["assumption_met"] is False
    assert secure_sum["label"] == "if secure aggregation and a secret sampling coin were in place"
    assert secure_sum["epsilon"] < privacy["epsilon"][kind] < privacy["epsilon"]["device_local"]
    # what each round met is in the record: the root's simulated rounds had a secret coin
    # and ran secure aggregation; the server's round ran secure aggregation only
    with ServerLedger(engine.ledger_path) as ledger:
        entries = ledger.entries(lineage_of(real_var, privacy["ledger"]["lineage"]))
    simulated = [e for e in entries if e.source == "simulation"]
    assert simulated and all(e.event.secret_sampling for e in simulated)
    [server] = [e for e in entries if e.source == SECURE and e.round == 0]
    assert server.event.secure_aggregation and not server.event.secret_sampling
    assert privacy["rounds_met"]["secret_sampling"] == len(simulated)


def test_secure_rounds_are_refused_over_the_device_sum_budget(tmp_path: Path) -> None:
    """The default budget kind refuses a round once ``device_sum`` (no amplification by
    sampling) would pass the target, although the amplified ``secure_sum`` figure — the
    old default — would have let many more through."""
    cfg = SecureRoundsConfig.model_validate({**BASE, "tokens_per_day": 10})
    assert cfg.budget_kind == "device_sum"
    fcfg = cfg.federated()
    acc = DevicePrivacyAccountant(delta=cfg.delta)

    def planned(rounds: int) -> PrivacyLedger:
        return PrivacyLedger.planned_from(fcfg, P, rounds=rounds, secure=True)

    three, four = (acc.epsilon(planned(r), "device_sum") for r in (3, 4))
    target = (three + four) / 2
    assert acc.epsilon(planned(20), "secure_sum") < target  # the old budget: 20 rounds fit
    clock = Clock()
    engine = _engine(tmp_path, clock, tokens_per_day=10, target_epsilon=target)
    for r in range(3):
        engine.tick()
        assert engine.current()["round"] == r
        clock.now += 11  # nobody checked in: abandoned, and counted
    engine.tick()
    assert engine.refused is not None and "device_sum" in str(engine.refused)
    with pytest.raises(ApiError) as refused:
        engine.current()
    assert refused.value.reason == "privacy_budget_exhausted"
    assert [e.round for e in _entries(engine)] == [0, 1, 2]  # round 3: nothing recorded


def test_the_default_budget_allows_the_runs_of_ten_rounds_and_more() -> None:
    """The README's HTTP runs (σ = 1 per device, min_clients = 100, every device in
    every round of one day, a fresh start model): with the default collusion bound γ 0.05
    (95 honest noises of 100) the default target ε = 8 on ``device_sum`` allows 196
    rounds (207 when every noise counted), so runs of 10+ rounds are never refused."""
    from federated.privacy import max_affordable_rounds
    cfg = SecureRoundsConfig.model_validate({"enabled": True, "min_clients": 100,
                                             "max_clients": 270, "tokens_per_day": 1000})
    assert cfg.target_epsilon == 8.0 and cfg.budget_kind == "device_sum"
    ledger = PrivacyLedger.planned_from(cfg.federated(), 2000, rounds=400, secure=True)
    assert {e.corruption_rate for e in ledger.events} == {0.05}
    acc = DevicePrivacyAccountant(delta=cfg.delta)
    assert acc.epsilon(ledger.head(10), "device_sum") == pytest.approx(1.5138, abs=1e-4)
    assert max_affordable_rounds(ledger, acc, kind="device_sum", target_epsilon=8.0) == 196


def test_the_recipe_runs_and_records_the_configured_dropout_and_corruption_rates(
        tmp_path: Path) -> None:
    """``SecureRoundsConfig.federated()`` passes its ``dropout_rate`` and
    ``corruption_rate`` to the round recipe (before: the platform defaults 0.1 / 0.05
    whatever the config said), so the ledger records the γ the protocol ran under."""
    from federated.secagg import choose_degree_and_threshold
    cfg = SecureRoundsConfig.model_validate({**BASE, "dropout_rate": 0.45,
                                             "corruption_rate": 0.2})
    sa = cfg.federated().secure_aggregation
    assert (sa.dropout_rate, sa.corruption_rate) == (0.45, 0.2)
    recipe = RoundRecipe.from_config(cfg.federated(), P, secure=True)
    assert RoundPrivacyEvent.from_recipe(recipe, 0).corruption_rate == 0.2
    clock = Clock()
    engine = _engine(tmp_path, clock, dropout_rate=0.45, corruption_rate=0.2,
                     min_clients=10, max_clients=40)
    engine.tick()
    [entry] = _entries(engine)
    assert entry.event.corruption_rate == 0.2 and entry.event.honest_reports == 8
    for _ in range(40):
        engine.checkin(0, _token(engine))
    engine.tick()
    params = engine.round_info(0)["params"]
    assert [params["degree"], params["threshold"]] == list(choose_degree_and_threshold(
        40, dropout_rate=0.45, corruption_rate=0.2))
    with ServerLedger(engine.ledger_path) as ledger:
        report = ledger.report(engine._lineage(None), cfg.federated())
    assert report["corruption_rate"] == 0.2
    assert "gamma=0.2: 8 of 10 reports' noise counted" in report["guarantees"]["device_sum"][
        "assumption"]


def _round_with_survivors(engine: SecureRounds, clock: Clock, cohort: int,
                          survivors: int) -> dict[str, Any]:
    engine.tick()
    tickets = [engine.checkin(0, _token(engine)) for _ in range(cohort)]
    clock.now += 11
    engine.tick()
    dim = engine.round_info(0)["params"]["dimension"]
    clients = {t: SecAggClient(np.zeros(dim, np.uint32)) for t in tickets}
    _step(engine, 0, clients)  # advertise
    _step(engine, 0, clients)  # share
    _step(engine, 0, clients, skip=set(tickets[survivors:]))  # masked inputs
    clock.now += 6
    engine.tick()
    for _ in range(4):  # consistency, unmask: each completes with its last reply
        if engine.round_info(0)["status"] != "open":
            break
        _step(engine, 0, clients, skip=set(tickets[survivors:]))
    return engine.round_info(0)


@pytest.mark.parametrize("gamma, status", [(0.0, "aggregated"), (0.2, "abandoned")])
def test_a_sum_is_unmasked_only_with_the_honest_noises_it_was_charged_for(
        tmp_path: Path, gamma: float, status: str) -> None:
    """min_clients 4, a cohort of 5, 4 masked inputs: at γ 0 the 4 noises are the
    charge; at γ 0.2 the ledger charged 4 - floor(0.8) = 4 honest noises, but one of the
    5 may collude, leaving 3 of the 4 survivors honest for sure: the round is abandoned
    with nothing unmasked (before: 4 >= min_clients, it was unmasked)."""
    clock = Clock()
    engine = _engine(tmp_path, clock, corruption_rate=gamma, max_stage_extensions=0)
    info = _round_with_survivors(engine, clock, cohort=5, survivors=4)
    assert info["status"] == status
    if status == "abandoned":
        message = info["outcome"]["message"]
        assert "4 masked inputs arrived from a cohort of 5; up to 1 of them" in message
        assert "fewer than the 4" in message and "nothing was unmasked" in message
        assert "sum" not in info["outcome"]
        assert engine.model()[0] == 0
    else:
        assert info["outcome"]["n_survivors"] == 4


def test_events_recorded_before_the_coin_was_stated_read_as_they_ran(tmp_path: Path) -> None:
    """Ledger rows written before events stated ``secure_aggregation`` and
    ``secret_sampling``: secure aggregation follows the mechanism (the discrete Gaussian
    runs only under it), the coin was secret only in the simulation's rounds."""
    import sqlite3
    recipe = RoundRecipe.from_config(SecureRoundsConfig.model_validate(BASE).federated(), P,
                                     secure=True)
    path = tmp_path / "ledger.sqlite3"
    with ServerLedger(path):
        pass
    fields = {k: v for k, v in RoundPrivacyEvent.from_recipe(recipe, 3).__dict__.items()
              if k not in ("secure_aggregation", "secret_sampling")}
    plain = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "min_reports": 2, "day": 3}
    with sqlite3.connect(path) as conn:
        for seq, (source, event) in enumerate([("simulation", fields), (SECURE, fields),
                                               ("http", plain)]):
            conn.execute("INSERT INTO ledger (lineage, source, round, event, day, opened_at, "
                         "status) VALUES ('l', ?, ?, ?, 3, ?, 'open')",
                         (source, seq, json.dumps(event), 3 * 86_400.0))
    with ServerLedger(path) as ledger:
        events = [e.event for e in ledger.entries("l")]
    assert [(e.secure_aggregation, e.secret_sampling) for e in events] == [
        (True, True), (True, False), (False, False)]
