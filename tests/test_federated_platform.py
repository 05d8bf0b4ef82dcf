"""The federated platform end to end, on toy tasks that know nothing about stickers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from federated import (
    UPLOAD_FIELDS,
    FederatedConfig,
    FederatedTask,
    FederatedTrainer,
    LocalResult,
    Server,
    SyntheticRegressionTask,
    Upload,
    UploadBatch,
    UploadError,
    load_latest_checkpoint,
    parse_upload,
)
from federated.simulation import DevicePopulation
from federated.strategies import DifferentialPrivacy, FedAdam, FedAvg, NormBound, TrimmedMean

EASY_DEVICES = {"devices.require_charging": False, "devices.require_idle": False,
                "devices.min_battery": 0.0, "devices.min_free_storage_mb": 0.0,
                "devices.dropout_rate": 0.0}


def config(**overrides: object) -> FederatedConfig:
    base: dict[str, object] = {**EASY_DEVICES, "rounds.sampling_rate": 0.2,
                               "rounds.min_reports": 20, "rounds.rounds": 6,
                               "rounds.max_uploads_per_day": 48,
                               "privacy.target_epsilon": None, "privacy.noise_multiplier": 0.5}
    base.update(overrides)
    raw: dict[str, dict[str, object]] = {}
    for dotted, value in base.items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    return FederatedConfig.model_validate(raw)


# ------------------------------------------------------------------ a second toy task


class LogisticTask:
    """Federated logistic regression: each device holds a few labelled 2-D points."""

    name = "toy-logistic"

    def __init__(self, n_devices: int = 2000, seed: int = 0) -> None:
        gen = np.random.default_rng(seed)
        self.n_devices = n_devices
        self.n_parameters = 3  # w1, w2, bias
        self.truth = np.array([2.0, -3.0, 0.5])
        self.x = gen.normal(size=(n_devices, 6, 2))
        logits = self.x @ self.truth[:2] + self.truth[2]
        self.y = (gen.random((n_devices, 6)) < 1 / (1 + np.exp(-logits))).astype(float)
        self.test_x = gen.normal(size=(3000, 2))
        self.test_y = (self.test_x @ self.truth[:2] + self.truth[2] > 0).astype(float)

    def initial_parameters(self) -> np.ndarray:
        return np.zeros(3, np.float32)

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        x, y = self.x[devices], self.y[devices]
        w = np.tile(parameters.astype(float), (len(devices), 1))
        for _ in range(5):
            p = 1 / (1 + np.exp(-(np.einsum("bmk,bk->bm", x, w[:, :2]) + w[:, 2:3])))
            g = p - y
            w[:, :2] -= 0.5 * np.einsum("bmk,bm->bk", x, g) / 6
            w[:, 2] -= 0.5 * g.mean(axis=1)
        return LocalResult((w - parameters).astype(np.float32), np.full(len(devices), 6))

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        pred = self.test_x @ parameters[:2] + parameters[2] > 0
        return {"accuracy": float((pred == self.test_y).mean())}

    def export(self, parameters: np.ndarray, directory: Path) -> list[str]:
        np.save(directory / "w.npy", parameters)
        return ["w.npy"]

    def forget_before(self, cutoff_s: float) -> int:
        return 0


def test_platform_trains_a_second_non_sticker_task_unchanged() -> None:
    task = LogisticTask()
    assert isinstance(task, FederatedTask)
    start = task.evaluate(task.initial_parameters())["accuracy"]
    cfg = config(**{"rounds.rounds": 15, "privacy.clip_norm": 2.0,
                    "privacy.noise_multiplier": 0.3})
    trainer = FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    assert trainer.status_ == "completed"
    assert trainer.metrics_["accuracy"] > 0.9 > start + 0.2
    assert trainer.privacy_["enabled"] and trainer.privacy_["rounds"] == 15


def test_platform_package_never_mentions_stickers() -> None:
    root = Path(__file__).parents[1] / "federated"
    for path in root.glob("*.py"):
        text = path.read_text().lower()
        # The project's names (StickerSuggestError, the entry-point group, the CLI root)
        # are allowed; the application's are not.
        for allowed in ("stickersuggesterror", "sticker_suggest.", "stickers federated"):
            text = text.replace(allowed, "")
        for forbidden in ("sticker", "reranker", "candidate_gen", "keyword_index", "hit@5"):
            assert forbidden not in text, (path, forbidden)


def test_platform_errors_derive_from_its_own_base_not_from_data() -> None:
    # issue #14 item 7: an application-agnostic platform has its own error root
    import inspect

    import data
    import federated
    import federated.secagg as secagg

    assert not issubclass(federated.FederatedError, data.StickerSuggestError)
    assert federated.FederatedError.__mro__[1] is Exception
    modules = [federated, secagg]
    errors = {cls for m in modules for _, cls in inspect.getmembers(m, inspect.isclass)
              if issubclass(cls, Exception) and cls.__module__.startswith("federated")}
    assert len(errors) >= 8
    for cls in errors:
        assert issubclass(cls, federated.FederatedError), cls
    # kept for the callers that already catch the shared config error
    assert issubclass(federated.FederatedConfigError, data.ConfigError)


def test_synthetic_regression_learns_with_local_dp() -> None:
    task = SyntheticRegressionTask(n_devices=5000, n_features=10, seed=3)
    before = task.evaluate(task.initial_parameters())["mse"]
    cfg = config(**{"rounds.rounds": 12, "rounds.sampling_rate": 0.2,
                    "privacy.noise_multiplier": 0.5, "privacy.clip_norm": 1.0})
    trainer = FederatedTrainer(task, cfg).fit(np.random.default_rng(1))
    assert trainer.metrics_["mse"] < 0.5 * before
    losses = [h.loss for h in trainer.history_]
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------ uploads carry no id


def test_uploads_carry_no_identity() -> None:
    assert tuple(f.name for f in dataclasses.fields(Upload)) == UPLOAD_FIELDS
    assert {f.name for f in dataclasses.fields(UploadBatch)} == {
        "round", "model_version", "deltas", "n_examples", "nonces"}
    # What the simulation uploads, converted to the wire form, round-trips the validator.
    task = SyntheticRegressionTask(n_devices=300, n_features=4)
    cfg = config(**{"rounds.rounds": 1, "rounds.min_reports": 1,
                    "secure_aggregation.enabled": False})  # the plain upload path
    seen: list[UploadBatch] = []

    class Spy(Server):
        def receive(self, uploads: UploadBatch, arrival_s: np.ndarray) -> np.ndarray:
            seen.append(uploads)
            return super().receive(uploads, arrival_s)

    import federated._trainer as trainer_module
    with pytest.MonkeyPatch.context() as patch:  # restored on exit, as the finally did
        patch.setattr(trainer_module, "Server", Spy)
        FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    uploads = [u for batch in seen for u in batch.uploads()]
    assert uploads
    for upload in uploads:
        payload = upload.to_payload()
        assert set(payload) == set(UPLOAD_FIELDS)
        parsed = parse_upload(payload, n_parameters=4, max_examples=1000)
        np.testing.assert_array_equal(parsed.delta, upload.delta)


@pytest.mark.parametrize("field", ["device_id", "user", "userId", "ip_address", "account"])
def test_validator_rejects_identity_fields(field: str) -> None:
    payload = Upload(1, 0, np.zeros(3, np.float32), 5, "0" * 32).to_payload()
    payload[field] = "abc"
    with pytest.raises(UploadError, match="identifying"):
        parse_upload(payload, n_parameters=3, max_examples=10)


@pytest.mark.parametrize(("change", "message"), [
    ({"extra": 1}, "unknown field"),
    ({"n_examples": 11}, "should be <= 10"),
    ({"n_examples": -1}, "non-negative"),
    ({"delta": [0.0, 1.0]}, "list of 3 numbers"),
    ({"delta": [0.0, float("nan"), 1.0]}, "finite"),
    ({"nonce": "xyz"}, "nonce"),
    ({"round": True}, "non-negative integer"),
])
def test_validator_rejects_malformed_uploads(change: dict[str, object], message: str) -> None:
    payload = {**Upload(1, 0, np.zeros(3, np.float32), 5, "a" * 32).to_payload(), **change}
    with pytest.raises(UploadError, match=message):
        parse_upload(payload, n_parameters=3, max_examples=10)


# ------------------------------------------------------------------ the server's round


def _batch(n: int, round_: int, version: int, seed: int = 0) -> UploadBatch:
    rng = np.random.default_rng(seed)
    return UploadBatch(np.full(n, round_, np.int64), np.full(n, version, np.int64),
                       rng.normal(size=(n, 4)).astype(np.float32), np.full(n, 3, np.int64),
                       rng.integers(0, 2**63, size=(n, 2)).astype(np.uint64))


def test_server_rejects_stale_late_and_replayed_uploads() -> None:
    server = Server(FedAvg(), np.zeros(4, np.float32), min_reports=3, deadline_s=60,
                    sampling_rate=0.1, max_examples=10, model_version=7)
    plan = server.open_round(5, now_s=1000.0)
    good = _batch(4, 5, 7)
    wrong_round = _batch(2, 4, 7, seed=1)
    wrong_version = _batch(2, 5, 6, seed=2)
    server.receive(wrong_round, np.full(2, 1010.0))
    server.receive(wrong_version, np.full(2, 1010.0))
    accepted = server.receive(good, np.array([1010.0, 1020.0, 1059.0, 1061.0]))
    assert accepted.tolist() == [True, True, True, False]
    assert not server.receive(good.select(np.array([0])), np.array([1030.0])).any()  # replay
    outcome = server.close_round()
    assert (outcome.status, outcome.accepted, outcome.stale, outcome.late,
            outcome.duplicate) == ("aggregated", 3, 4, 1, 1)
    assert server.model_version == 8 and plan.deadline_s == 1060.0


def test_round_below_min_reports_is_abandoned_and_says_so() -> None:
    server = Server(FedAvg(), np.zeros(4, np.float32), min_reports=5, deadline_s=60,
                    sampling_rate=0.1, max_examples=10)
    server.open_round(0, 0.0)
    server.receive(_batch(4, 0, 0), np.full(4, 10.0))
    outcome = server.close_round()
    assert outcome.status == "abandoned"
    assert "fewer than min_reports=5" in outcome.message
    assert server.model_version == 0
    np.testing.assert_array_equal(server.parameters, np.zeros(4, np.float32))


def test_deadline_latency_and_dropout_shape_each_round() -> None:
    task = SyntheticRegressionTask(n_devices=4000, n_features=4)
    cfg = config(**{"devices.dropout_rate": 0.3, "devices.latency_median_s": 60.0,
                    "rounds.deadline_s": 60.0, "rounds.rounds": 4,
                    "rounds.min_reports": 50})
    trainer = FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    for rec in trainer.history_:
        assert rec.dropped == pytest.approx(0.3 * rec.sampled, rel=0.25)
        assert rec.uploaded == rec.sampled - rec.dropped
        assert rec.late == pytest.approx(0.5 * rec.uploaded, rel=0.2)  # median = deadline
        assert rec.accepted + rec.late == rec.uploaded
    # under secure aggregation a straggler drops out of its own round's protocol (its
    # masks are removed in unmasking); it never reaches the next round
    assert all(rec.stale == 0 for rec in trainer.history_)
    plain = cfg.model_copy(update={"secure_aggregation": cfg.secure_aggregation.model_copy(
        update={"enabled": False})})
    uploads_seen = FederatedTrainer(task, plain).fit(np.random.default_rng(0))
    assert all(rec.stale > 0 for rec in uploads_seen.history_[1:])  # stragglers arrive stale
    strict = config(**{"rounds.min_reports": 10_000, "rounds.rounds": 2})
    abandoned = FederatedTrainer(SyntheticRegressionTask(n_devices=500, n_features=4),
                                 strict).fit(np.random.default_rng(0))
    assert {h.status for h in abandoned.history_} == {"abandoned"}
    assert abandoned.model_version_ == 0


# ------------------------------------------------------------------ devices


def test_ineligible_devices_never_train() -> None:
    n = 3000
    task = SyntheticRegressionTask(n_devices=n, n_features=4)
    task.record_calls = True
    population = DevicePopulation.simulate(n, np.random.default_rng(5))
    population.free_storage_mb[::2] = 10.0  # every even device lacks storage
    cfg = config(**{"devices.require_charging": True, "devices.min_battery": 0.8,
                    "devices.min_free_storage_mb": 512.0, "devices.require_idle": True,
                    "rounds.rounds": 16, "rounds.min_reports": 1,
                    "rounds.round_interval_s": 1800.0, "rounds.sampling_rate": 0.5})
    trainer = FederatedTrainer(task, cfg, population=population).fit(np.random.default_rng(0))
    assert len(task.trained_devices) == 16
    total = 0
    for r, devices in enumerate(task.trained_devices):
        now = cfg.rounds.start_time_s + r * cfg.rounds.round_interval_s
        assert not np.any(devices % 2 == 0)
        assert population.charging(now)[devices].all()
        assert (population.battery(now)[devices] >= 0.8).all()
        total += len(devices)
    assert total > 100  # the eligible ones did train
    assert trainer.history_[0].eligible < n // 2


def test_devices_upload_at_most_once_per_round_and_within_the_daily_cap() -> None:
    n = 400
    task = SyntheticRegressionTask(n_devices=n, n_features=4)
    task.record_calls = True
    cfg = config(**{"rounds.sampling_rate": 1.0, "rounds.max_uploads_per_day": 2,
                    "rounds.rounds": 12, "rounds.round_interval_s": 3600.0,
                    "rounds.start_time_s": 18 * 3600.0, "rounds.min_reports": 1})
    trainer = FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    # Rounds run 18:00-05:00: with q = 1 everyone uploads in the first two rounds of each
    # day (rounds 0, 1 on day 0; 6, 7 on day 1), then the daily cap stops them.
    assert [h.uploaded for h in trainer.history_] == [n, n, 0, 0, 0, 0, n, n, 0, 0, 0, 0]
    assert len(task.trained_devices) == 4  # local_train is not called for empty rounds
    counts = np.zeros(n, int)
    for devices in task.trained_devices:
        assert len(np.unique(devices)) == len(devices)  # once per round
        counts[devices] += 1
    assert (counts == 4).all()  # 2 per day on each of 2 days


def test_retention_deletes_old_logs() -> None:
    task = SyntheticRegressionTask(n_devices=1000, n_features=4, log_span_s=20 * 86400.0)
    cfg = config(**{"devices.retention_days": 5.0, "rounds.rounds": 2,
                    "rounds.start_time_s": 0.0})
    FederatedTrainer(task, cfg).fit(np.random.default_rng(0))
    state = task.device_state()
    kept = state["alive"].mean()
    assert kept == pytest.approx(5 / 20, abs=0.03)
    assert task.forget_before(-5 * 86400.0) == 0  # nothing older than the window is left


# ------------------------------------------------------------------ strategies


def _attack(n_honest: int = 90, n_attackers: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.1, size=(n_honest, 8))
    attack = np.full((n_attackers, 8), 1e6)
    return np.vstack([honest, attack]).astype(np.float32), np.full(n_honest + n_attackers, 10)


def test_trimmed_mean_withstands_a_minority_of_huge_updates_fedavg_does_not() -> None:
    deltas, counts = _attack()
    zero = np.zeros(8, np.float32)
    robust = TrimmedMean(trim_fraction=0.15).aggregate(zero, deltas, counts).parameters
    plain = FedAvg().aggregate(zero, deltas, counts).parameters
    np.testing.assert_allclose(robust, 1.0, atol=0.05)
    assert np.abs(plain).min() > 1e4


def test_norm_bound_drops_huge_updates_and_dp_wrapper_wraps_any_strategy() -> None:
    deltas, counts = _attack()
    zero = np.zeros(8, np.float32)
    bounded = NormBound(FedAvg(), max_norm=100.0).aggregate(zero, deltas, counts)
    np.testing.assert_allclose(bounded.parameters, 1.0, atol=0.05)
    assert bounded.metrics["norm_rejected"] == 10
    for inner in (FedAvg(), FedAdam(), TrimmedMean(0.2), NormBound(FedAvg(), 100.0)):
        dp = DifferentialPrivacy(inner, clip_norm=1.0, noise_multiplier=2.0, min_reports=5)
        plan = dp.configure_round(Server(dp, zero, min_reports=5, deadline_s=1,
                                         sampling_rate=1, max_examples=1).open_round(0, 0))
        assert (plan.clip_norm, plan.noise_multiplier) == (1.0, 2.0)
        out = dp.aggregate(zero, deltas[:20], counts[:20])
        assert out.parameters.shape == (8,)


def test_fedavg_bounds_weights() -> None:
    deltas = np.array([[1.0], [0.0]], np.float32)
    out = FedAvg(max_weight=10).aggregate(np.zeros(1, np.float32), deltas, np.array([1000, 10]))
    assert out.parameters[0] == pytest.approx(0.5)


def test_fedadam_moves_along_the_mean_delta() -> None:
    strategy = FedAdam(server_learning_rate=0.1)
    params = np.zeros(2, np.float32)
    for _ in range(3):
        params = strategy.aggregate(params, np.array([[1.0, -1.0]], np.float32),
                                    np.array([1])).parameters
    assert params[0] > 0 > params[1]
    assert strategy.state_dict()["t"] == 3


@pytest.mark.parametrize("bad", [
    lambda: FedAvg(server_learning_rate=0), lambda: FedAdam(beta_1=1.0),
    lambda: TrimmedMean(trim_fraction=0.5), lambda: NormBound(FedAvg(), 0.0),
    lambda: DifferentialPrivacy(FedAvg(), clip_norm=0, noise_multiplier=1),
    lambda: DifferentialPrivacy(FedAvg(), clip_norm=1, noise_multiplier=-1),
])
def test_constructors_reject_bad_parameters(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="should be"):
        bad()


# ------------------------------------------------------------------ resume


class Crashing(SyntheticRegressionTask):
    """Dies in the middle of a given round's local training (a killed job)."""

    crash_at_call: int = -1

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        self.crash_at_call -= 1
        if self.crash_at_call == 0:
            raise KeyboardInterrupt("killed")
        return super().local_train(parameters, devices, rng)


def test_a_killed_run_resumes_at_the_right_round_without_spending_privacy_twice(
        tmp_path: Path) -> None:
    cfg = config(**{"rounds.rounds": 8, "strategy.name": "fedadam",
                    "strategy.server_learning_rate": 0.05})
    reference = FederatedTrainer(Crashing(n_devices=2000, n_features=6),
                                 cfg).fit(np.random.default_rng(42))
    killed_task = Crashing(n_devices=2000, n_features=6)
    killed_task.crash_at_call = 6  # dies during round 5 (0-based), after 5 checkpoints
    with pytest.raises(KeyboardInterrupt):
        FederatedTrainer(killed_task, cfg, checkpoint_dir=tmp_path).fit(
            np.random.default_rng(42))
    meta, _ = load_latest_checkpoint(tmp_path) or ({}, {})
    assert meta["next_round"] == 5 and len(meta["ledger"]) == 5
    resumed = FederatedTrainer(Crashing(n_devices=2000, n_features=6), cfg,
                               checkpoint_dir=tmp_path).fit(np.random.default_rng(999))
    assert resumed.resumed_from_ == 5
    assert [h.round for h in resumed.history_] == list(range(8))
    assert resumed.ledger_.rounds == 8  # round 5 counted once, though it was started twice
    np.testing.assert_array_equal(resumed.parameters_, reference.parameters_)
    assert resumed.privacy_["epsilon"] == reference.privacy_["epsilon"]
    assert len(list(tmp_path.glob("round-*.npz"))) == 2


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path: Path) -> None:
    from federated import CheckpointError

    task = SyntheticRegressionTask(n_devices=500, n_features=4)
    FederatedTrainer(task, config(**{"rounds.rounds": 1}), checkpoint_dir=tmp_path).fit(
        np.random.default_rng(0))
    other = config(**{"rounds.rounds": 2, "privacy.noise_multiplier": 3.0})
    with pytest.raises(CheckpointError, match="different"):
        FederatedTrainer(task, other, checkpoint_dir=tmp_path).fit(np.random.default_rng(0))
