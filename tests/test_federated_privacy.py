"""Privacy maths of the federated platform: clipping, noise, ε of every kind, budgets.

Hand-checked values are computed independently here (scipy), never with the module's
own formulas.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal, TypedDict, Unpack

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import optimize, stats

from federated import (
    DevicePrivacyAccountant,
    FederatedConfig,
    FederatedTrainer,
    PrivacyBudgetError,
    PrivacyLedger,
    RoundPrivacyEvent,
    SyntheticRegressionTask,
    calibrate_noise_multiplier,
    guarantees_headline_first,
    privacy_headline,
)
from federated.privacy import (
    add_gaussian_noise,
    clip_deltas,
    fmt21_shuffle_epsilon,
    l2_norms,
    local_epsilon,
    poisson_amplified,
)


def analytic_gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Balle & Wang 2018, Thm 8: δ(ε) = Φ(Δ/2σ - εσ/Δ) - e^ε Φ(-Δ/2σ - εσ/Δ), solved for ε."""
    def gap(eps: float) -> float:
        a = sensitivity / (2 * sigma)
        b = eps * sigma / sensitivity
        return stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b) - delta
    return optimize.brentq(gap, 0.0, 500.0, xtol=1e-12)


# ------------------------------------------------------------------ clipping and noise


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 40)),
              elements=st.floats(-1e6, 1e6, width=32)),
       st.floats(1e-3, 1e3))
def test_clipping_bounds_every_upload_norm(deltas: np.ndarray, clip_norm: float) -> None:
    clipped = clip_deltas(deltas, clip_norm)
    assert clipped.shape == deltas.shape and clipped.dtype == np.float32
    assert np.all(l2_norms(clipped) <= clip_norm)
    small = l2_norms(deltas) <= clip_norm * 0.999
    np.testing.assert_allclose(clipped[small], deltas[small], rtol=1e-5, atol=1e-6)


def test_clipping_keeps_direction() -> None:
    clipped = clip_deltas(np.array([[3.0, 4.0]], np.float32), 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8]], rtol=1e-5)


def test_noise_has_the_right_scale() -> None:
    rng = np.random.default_rng(7)
    clip_norm, sigma = 2.0, 1.5
    noisy = add_gaussian_noise(np.zeros((2000, 50), np.float32), clip_norm, sigma, rng)
    sample = noisy.ravel().astype(np.float64)
    expected = sigma * clip_norm
    # std of the sample std is expected/sqrt(2n); 5 standard errors.
    assert abs(sample.std() - expected) < 5 * expected / math.sqrt(2 * sample.size)
    assert abs(sample.mean()) < 5 * expected / math.sqrt(sample.size)
    assert stats.kstest(sample / expected, "norm").pvalue > 1e-3


def test_noise_comes_only_from_the_given_generator() -> None:
    x = np.ones((3, 4), np.float32)
    a = add_gaussian_noise(x, 1.0, 1.0, np.random.default_rng(1))
    b = add_gaussian_noise(x, 1.0, 1.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(add_gaussian_noise(x, 1.0, 0.0, np.random.default_rng(1)), x)


# ------------------------------------------------------------------ hand-checked ε


def test_single_gaussian_release_matches_analytic_gaussian() -> None:
    # Sensitivity 1, σ = 1, δ = 1e-5: Balle & Wang's analytic value, computed here.
    expected = analytic_gaussian_epsilon(1.0, 1e-5)
    assert expected == pytest.approx(4.3772, abs=1e-3)
    # One local report with noise multiplier 2 has sensitivity 2C → effective σ = 1.
    assert local_epsilon(2.0, 1e-5) == pytest.approx(expected, rel=1e-4)
    pld = PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(dp_accounting.GaussianDpEvent(1.0))
    assert pld.get_epsilon(1e-5) == pytest.approx(expected, rel=1e-3)


def test_composition_matches_closed_form_and_pld_beats_rdp() -> None:
    # k-fold composition of Gaussian(σ) is Gaussian(σ/√k).
    sigma, k, delta = 3.0, 10, 1e-6
    expected = analytic_gaussian_epsilon(sigma / math.sqrt(k), delta)
    pld = PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), k))
    assert pld.get_epsilon(delta) == pytest.approx(expected, rel=1e-3)
    # The platform's device-local view: k uploads of local noise multiplier 2σ.
    ledger = PrivacyLedger.planned(rounds=k, noise_multiplier=2 * sigma, sampling_rate=0.5,
                                   min_reports=10)
    acc = DevicePrivacyAccountant(delta=delta)
    assert acc.epsilon(ledger, "device_local") == pytest.approx(expected, rel=1e-6)
    assert acc.epsilon(ledger, "device_local", "rdp") >= expected


def test_secure_sum_without_sampling_is_a_gaussian_of_sigma_root_n_over_root_r() -> None:
    sigma, n_min, rounds, delta = 0.5, 16, 4, 1e-6
    ledger = PrivacyLedger.planned(rounds=rounds, noise_multiplier=sigma, sampling_rate=1.0,
                                   min_reports=n_min)
    expected = analytic_gaussian_epsilon(sigma * math.sqrt(n_min) / math.sqrt(rounds), delta)
    acc = DevicePrivacyAccountant(delta=delta, value_discretization_interval=1e-4)
    assert acc.epsilon(ledger, "secure_sum") == pytest.approx(expected, rel=2e-3)
    assert acc.epsilon(ledger, "secure_sum", "rdp") >= acc.epsilon(ledger, "secure_sum") - 1e-9


def test_secure_sum_with_poisson_sampling_matches_dp_accounting_directly() -> None:
    sigma, n_min, q, rounds, delta = 0.4, 25, 0.02, 300, 1e-6
    ledger = PrivacyLedger.planned(rounds=rounds, noise_multiplier=sigma, sampling_rate=q,
                                   min_reports=n_min)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma * 5.0)),
        rounds)
    rdp = RdpAccountant()
    rdp.compose(event)
    pld = PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(event)
    acc = DevicePrivacyAccountant(delta=delta)
    assert acc.epsilon(ledger, "secure_sum", "rdp") == pytest.approx(rdp.get_epsilon(delta),
                                                                     rel=1e-9)
    assert acc.epsilon(ledger, "secure_sum") == pytest.approx(pld.get_epsilon(delta), rel=1e-9)
    # Amplification by sampling: far below the unsampled composition.
    assert acc.epsilon(ledger, "secure_sum") < analytic_gaussian_epsilon(
        5.0 * sigma / math.sqrt(rounds), delta)


def test_fmt21_closed_form_by_hand() -> None:
    eps0, n, delta = 1.0, 10_000, 1e-6
    # a = 8 sqrt(e log(4e6) / 1e4) = 0.51426, c = 8e/1e4, e' = log(1 + a + c),
    # eps = log(1 + (1 - 1/e) / (1 + e^(-1 - e')) (a + c)) = 0.23327 (worked by hand).
    assert fmt21_shuffle_epsilon(eps0, n, delta) == pytest.approx(0.23327, abs=2e-4)
    # Outside the theorem's range it gives nothing.
    assert fmt21_shuffle_epsilon(10.0, 1000, delta) is None
    assert fmt21_shuffle_epsilon(0.0, 1000, delta) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.floats(0.05, 3.0), st.integers(2_000, 10**7), st.floats(1e-10, 1e-3))
def test_shuffling_never_hurts(eps0: float, n: int, delta: float) -> None:
    eps = fmt21_shuffle_epsilon(eps0, n, delta)
    assert eps is None or 0 <= eps <= eps0


def test_poisson_amplification_by_hand() -> None:
    eps, delta = poisson_amplified(1.0, 1e-6, 0.01)
    assert eps == pytest.approx(math.log(1 + 0.01 * (math.e - 1)))
    assert delta == pytest.approx(1e-8)


def test_kinds_are_ordered_by_trust() -> None:
    ledger = PrivacyLedger.planned(rounds=50, noise_multiplier=8.0, sampling_rate=0.01,
                                   min_reports=1000, max_uploads_per_day=2,
                                   start_time_s=22 * 3600, round_interval_s=1800)
    acc = DevicePrivacyAccountant(delta=1e-6)
    report = acc.report(ledger, clip_norm=1.0)
    eps = report["epsilon"]
    assert eps["secure_sum"] < eps["shuffle"] < eps["device_local"]
    assert eps["local"] < eps["device_local"]
    # 50 rounds over two simulated days, at most 2 uploads a day: 4 participations.
    assert report["max_participations_per_device"] == 4
    for key in ("noise_multiplier", "clip_norm", "sampling_rate", "rounds", "delta",
                "accountant"):
        assert key in report
    assert "ASSUMES" in report["guarantees"]["shuffle"]["assumption"]
    assert "ASSUMES" in report["guarantees"]["secure_sum"]["assumption"]


# ------------------------------------------------------------------ budget and calibration


def _small_config(**overrides: object) -> FederatedConfig:
    base: dict[str, Any] = {"devices.require_charging": False, "devices.require_idle": False,
            "devices.min_battery": 0.0, "devices.min_free_storage_mb": 0.0,
            "devices.dropout_rate": 0.0, "rounds.sampling_rate": 0.2, "rounds.min_reports": 20,
            "rounds.rounds": 5, "rounds.max_uploads_per_day": 48}
    base.update(overrides)
    return FederatedConfig.load(**base)  # dotted keys: **values, typed Any by load


def test_budget_check_refuses_an_over_budget_run() -> None:
    task = SyntheticRegressionTask(n_devices=500, n_features=5)
    task.record_calls = True
    config = _small_config(**{"privacy.noise_multiplier": 0.5, "privacy.target_epsilon": 1.0,
                              "privacy.budget_kind": "device_local"})
    with pytest.raises(PrivacyBudgetError, match="over the target"):
        FederatedTrainer(task, config).fit(np.random.default_rng(0))
    assert task.trained_devices == []  # refused before any device trained


def test_budget_refuses_when_privacy_is_disabled_but_a_target_is_set() -> None:
    task = SyntheticRegressionTask(n_devices=100, n_features=3)
    config = _small_config(**{"privacy.enabled": False, "privacy.target_epsilon": 8.0})
    with pytest.raises(PrivacyBudgetError, match="disabled"):
        FederatedTrainer(task, config).fit(np.random.default_rng(0))


def test_stop_policy_stops_before_exceeding_the_target() -> None:
    task = SyntheticRegressionTask(n_devices=500, n_features=5)
    target = 6.0
    config = _small_config(**{"privacy.noise_multiplier": 4.0, "privacy.target_epsilon": target,
                              "privacy.budget_kind": "device_local",
                              "privacy.on_over_budget": "stop", "rounds.rounds": 12})
    trainer = FederatedTrainer(task, config).fit(np.random.default_rng(0))
    assert trainer.status_ == "budget_stopped"
    assert 0 < len(trainer.history_) < 12
    assert trainer.privacy_["epsilon"]["device_local"] <= target
    one_more = trainer.ledger_.add(trainer.ledger_.events[-1])
    assert DevicePrivacyAccountant(delta=1e-6).epsilon(one_more, "device_local") > target


@pytest.mark.parametrize("kind", ["local", "device_local", "secure_sum"])
def test_calibration_finds_sigma_for_a_target(
        kind: Literal["local", "device_local", "secure_sum"]) -> None:
    ledger = PrivacyLedger.planned(rounds=20, noise_multiplier=1.0, sampling_rate=0.05,
                                   min_reports=50, max_uploads_per_day=3,
                                   round_interval_s=3600)
    acc = DevicePrivacyAccountant(delta=1e-6)
    sigma = calibrate_noise_multiplier(ledger, 4.0, kind=kind, accountant=acc, rtol=5e-3)
    eps = acc.epsilon(ledger.with_noise_multiplier(sigma), kind)
    assert eps <= 4.0
    assert acc.epsilon(ledger.with_noise_multiplier(sigma * 0.98), kind) > 4.0


def test_calibration_of_one_local_report_inverts_the_analytic_gaussian() -> None:
    ledger = PrivacyLedger.planned(rounds=1, noise_multiplier=1.0, sampling_rate=1.0,
                                   min_reports=1)
    acc = DevicePrivacyAccountant(delta=1e-5)
    sigma = calibrate_noise_multiplier(ledger, 4.3772, kind="local", accountant=acc, rtol=1e-5)
    assert sigma == pytest.approx(2.0, rel=1e-3)  # see the single-release test above


# ---------------------------------------------------------------- the privacy headline


@pytest.mark.parametrize("secure", [False, True])
def test_published_headline_is_a_guarantee_whose_assumption_is_met(secure: bool) -> None:
    task = SyntheticRegressionTask(n_devices=500, n_features=5)
    config = _small_config(**{"privacy.noise_multiplier": 1.0, "privacy.target_epsilon": 1e4,
                              "secure_aggregation.enabled": secure})
    assert config.privacy.budget_kind == "device_local"  # the default budget kind is met
    privacy = FederatedTrainer(task, config).fit(np.random.default_rng(0)).privacy_
    kind, guarantee = privacy_headline(privacy)
    assert kind == privacy["headline"] and guarantee["assumption_met"] is True
    assert privacy["guarantees"][kind]["assumption_met"] is True
    assert guarantee["epsilon"] == privacy["epsilon"][kind]
    met = {k for k, g in privacy["guarantees"].items() if g["assumption_met"]}
    assert privacy["budget"]["assumption_met"] is True
    rows = guarantees_headline_first(privacy)
    assert rows[0][0] == kind and rows[0][2].startswith("headline: ")
    labels = {k: label for k, _, label in rows}
    assert labels["shuffle"] == "if anonymous shuffling were in place"
    if secure:
        # only the modular sum of >= n_min reports reached the server
        # the simulator's coin is secret too: secure_sum holds and stays the headline;
        # device_sum (each round as it ran) then is the same figure
        assert met == {"local", "device_local", "secure_sum", "device_sum"}
        assert kind == "secure_sum"
        assert privacy["epsilon"]["device_sum"] == privacy["epsilon"]["secure_sum"]
        assert privacy["rounds_met"] == {"secure_aggregation": privacy["rounds"],
                                         "secret_sampling": privacy["rounds"]}
        block = privacy["guarantees"]["secure_sum"]["secure_aggregation"]
        assert block["n_min"] == 20 and block["bits"] == 32
        assert block["wrap_probability_bound"] <= 1e-9 and "honest-but-curious" in (
            block["threat_model"])
        # accounted for the mechanism run: the KLS21 RDP bound, no PLD form
        assert "KLS21" in privacy["accountant"]
        assert privacy["guarantees"]["secure_sum"]["epsilon_pld"] is None
    else:
        # this run kept every upload: nothing more holds, and the far smaller secure_sum
        # epsilon is never the headline
        assert met == {"local", "device_local", "device_sum"} and kind == "device_local"
        assert privacy["epsilon"]["secure_sum"] < guarantee["epsilon"]
        # no round ran secure aggregation: device_sum is device_local's figure
        assert privacy["epsilon"]["device_sum"] == guarantee["epsilon"]
        assert labels["secure_sum"] == ("if secure aggregation and a secret sampling coin "
                                        "were in place")


def test_headline_picks_the_smallest_met_per_device_epsilon() -> None:
    record = {"guarantees": {
        "local": {"epsilon": 0.5, "assumption_met": True},
        "device_local": {"epsilon": 30.0, "assumption_met": True},
        "shuffle": {"epsilon": 1.0, "assumption_met": False},
        "secure_sum": {"epsilon": 2.0, "assumption_met": True}}}
    assert privacy_headline(record)[0] == "secure_sum"  # local is per upload: never headline
    record["guarantees"]["secure_sum"]["assumption_met"] = False
    assert privacy_headline(record)[0] == "device_local"
    with pytest.raises(ValueError, match="no guarantee"):
        privacy_headline({"enabled": False, "epsilon": None})


# ------------------------------------------- device_sum: each round as it ran (#18)


class _Mechanism(TypedDict, total=False):
    """A round's noise mechanism as RoundPrivacyEvent takes it (none: the Gaussian default)."""

    mechanism: str
    sensitivity: float
    tau: float
    dimension: int


def _event(sigma: float, n_min: int, q: float = 0.01, *, day: int = 0, secure: bool = True,
           secret: bool = False, corruption_rate: float = 0.0,
           **mechanism: Unpack[_Mechanism]) -> RoundPrivacyEvent:
    return RoundPrivacyEvent(sigma, q, n_min, day, secure_aggregation=secure,
                             secret_sampling=secret, corruption_rate=corruption_rate,
                             **mechanism)


def _rdp_reference(events: list[tuple[dp_accounting.DpEvent, int]], delta: float) -> float:
    """dp_accounting's own RdpAccountant on the same integer orders (independent route)."""
    from federated.privacy import DDG_RDP_ORDERS
    accountant = RdpAccountant(orders=[float(a) for a in DDG_RDP_ORDERS])
    for event, count in events:
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


# Points of KLS21's client-dropout figure ("server observed privacy": q = 1, the server
# sees who takes part), as the authors' code computes them: google-research/federated
# distributed_dp/plot_client_dropout.py @ 94b2854 (see tests/test_federated_secagg.py,
# KLS21_DROPOUT_FIGURE, for the whole figure). ε₀ -> (γ, local σ, {n: ε}); n = 100 clients
# per round, T = 1,500 rounds, d = 2^20, C = 1, δ = 1e-5.
KLS21_SERVER_OBSERVED = {
    1: (2.918305483539586e-07, 15.66771262569965, {100: 0.999999999878, 40: 1.65029989308}),
    4: (8.352250415396687e-08, 4.48402124126313, {100: 4.00000000166, 40: 6.81800889434}),
    8: (4.602796614655703e-08, 2.47129927328326, {100: 7.99999999975, 40: 14.0119509255}),
}


def test_device_sum_of_rounds_the_server_sees_joined_is_kls21_server_observed_privacy(
) -> None:
    """HTTP secure rounds (secure aggregation, the server sees who checks in): device_sum
    is the unamplified DDG sum in every round, KLS21's "server observed" setting, and
    reproduces the authors' published figure points whatever q the config assumes; the
    amplified secure_sum of the same events is far lower (its coin is not secret here)."""
    from federated.privacy import ddg_tau, rounded_l2_sensitivity
    big_d, delta = 2 ** 20, 1e-5
    acc = DevicePrivacyAccountant(delta=delta)
    for _eps0, (gamma, local_std, points) in KLS21_SERVER_OBSERVED.items():
        for n, theirs in points.items():
            ledger = PrivacyLedger.planned(
                rounds=1500, noise_multiplier=local_std, sampling_rate=0.01, min_reports=n,
                mechanism="ddg", sensitivity=rounded_l2_sensitivity(1.0, gamma, big_d),
                tau=ddg_tau(local_std / gamma, n), dimension=big_d)
            assert all(e.secure_aggregation and not e.secret_sampling for e in ledger.events)
            assert acc.epsilon(ledger, "device_sum") == pytest.approx(theirs, rel=1e-9)
            assert acc.epsilon(ledger, "secure_sum") < theirs
            assert "secure_sum" not in acc.report(ledger, clip_norm=1.0)["headline"]


def test_device_sum_composes_each_round_as_it_ran() -> None:
    """A lineage of simulated rounds (secure, secret coin: Poisson-amplified sums), server
    secure rounds (sums at q = 1) and plain rounds (each upload, σ/2): device_sum is
    dp_accounting's RDP composition of exactly those mechanisms, or device_local's
    exact figure when that is lower."""
    delta = 1e-6
    sim = _event(0.2, 100, 0.02, secret=True)
    server = [_event(1.0, 50, day=d) for d in (10, 11)]
    plain = [_event(8.0, 5, secure=False, day=d) for d in (12, 13, 14)]
    ledger = PrivacyLedger(events=(*[sim] * 40, *server, *plain))
    reference = _rdp_reference([
        (dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(
            0.2 * math.sqrt(100))), 40),
        (dp_accounting.GaussianDpEvent(1.0 * math.sqrt(50)), 2),
        (dp_accounting.GaussianDpEvent(8.0 / 2), 3)], delta)
    acc = DevicePrivacyAccountant(delta=delta)
    assert acc.epsilon(ledger, "device_sum", "rdp") == pytest.approx(reference, rel=1e-9)
    assert acc.epsilon(ledger, "device_sum") == pytest.approx(
        min(reference, acc.epsilon(ledger, "device_local")), rel=1e-9)
    # without a secure round it is device_local's figure exactly (and device_local heads)
    only_plain = PrivacyLedger(events=tuple(plain))
    assert acc.epsilon(only_plain, "device_sum") == acc.epsilon(only_plain, "device_local")
    assert acc.report(only_plain, clip_norm=1.0)["headline"] == "device_local"


def test_device_sum_counts_the_worst_case_participations_per_day() -> None:
    """Per day at most ``max_uploads_per_day`` rounds a device can join (its tokens):
    six rounds on one day with a cap of 2 cost the two least noisy ones."""
    delta = 1e-6
    day = [_event(s, 10, day=7) for s in (3.0, 1.0, 2.0, 4.0, 1.5, 5.0)]
    capped = PrivacyLedger(events=tuple(day), max_uploads_per_day=2)
    two = PrivacyLedger(events=(day[1], day[4]))
    acc = DevicePrivacyAccountant(delta=delta, accountant="rdp")
    assert acc.epsilon(capped, "device_sum") == pytest.approx(
        acc.epsilon(two, "device_sum"), rel=1e-12)
    assert acc.epsilon(capped, "device_sum") == pytest.approx(_rdp_reference(
        [(dp_accounting.GaussianDpEvent(1.0 * math.sqrt(10)), 1),
         (dp_accounting.GaussianDpEvent(1.5 * math.sqrt(10)), 1)], delta), rel=1e-9)
    # a second day adds its own two
    both = PrivacyLedger(events=(*day, *(replace(e, day=8) for e in day)),
                         max_uploads_per_day=2)
    assert acc.epsilon(both, "device_sum") > acc.epsilon(capped, "device_sum")


def test_secure_sum_is_met_only_when_every_round_had_both_assumptions() -> None:
    from federated.privacy import assumptions_met
    sim = _event(0.5, 20, 0.05, secret=True)
    assert "secure_sum" in assumptions_met(PrivacyLedger(events=(sim, sim)))
    http = replace(sim, secret_sampling=False)
    mixed = PrivacyLedger(events=(sim, http))
    assert "secure_sum" not in assumptions_met(mixed)
    assert "secure_sum" not in assumptions_met(PrivacyLedger(events=(
        sim, replace(sim, secure_aggregation=False))))
    report = DevicePrivacyAccountant(delta=1e-6).report(mixed, clip_norm=1.0)
    assert report["headline"] == "device_sum"
    assert report["rounds_met"] == {"secure_aggregation": 2, "secret_sampling": 1}
    # an event built without the field: secure aggregation follows the mechanism
    assert RoundPrivacyEvent(1.0, 0.1, 5, mechanism="ddg").secure_aggregation is True
    assert RoundPrivacyEvent(1.0, 0.1, 5).secure_aggregation is False


@settings(max_examples=60, deadline=None)
@given(sigma=st.floats(0.2, 5.0), n_min=st.integers(1, 300), q=st.floats(1e-3, 0.5),
       rounds=st.integers(1, 25), tau=st.sampled_from([0.0, 1e-6, 1e-3]),
       ddg=st.booleans())
def test_device_sum_properties(sigma: float, n_min: int, q: float, rounds: int, tau: float,
                               ddg: bool) -> None:
    """Server-observed secure rounds: ε never falls with more rounds, never rises with
    more noise, is at least the amplified secure_sum of the same events and at most
    their device_local."""
    mechanism: _Mechanism = ({"mechanism": "ddg", "sensitivity": 1.0001, "tau": tau,
                              "dimension": 64} if ddg else {})

    def ledger(r: int, s: float) -> PrivacyLedger:
        return PrivacyLedger(events=tuple(_event(s, n_min, q, day=i, **mechanism)
                                          for i in range(r)))

    acc = DevicePrivacyAccountant(delta=1e-6)
    eps = acc.epsilon(ledger(rounds, sigma), "device_sum")
    assert 0 < eps < math.inf
    assert acc.epsilon(ledger(rounds + 1, sigma), "device_sum") >= eps
    assert acc.epsilon(ledger(rounds, sigma * 1.5), "device_sum") <= eps
    assert eps >= acc.epsilon(ledger(rounds, sigma), "secure_sum") * (1 - 1e-9)
    assert eps <= acc.epsilon(ledger(rounds, sigma), "device_local")


# -------------------------------- collusion: only the honest clients' noise is charged


def test_honest_reports_and_the_unmask_rule_by_hand() -> None:
    from federated.privacy import honest_reports, unmask_shortfall
    assert honest_reports(20, 0.05) == 19
    assert honest_reports(100, 0.05) == 95
    assert honest_reports(100, 0.0) == 100
    assert honest_reports(19, 0.05) == 19  # floor(0.95) = 0
    assert honest_reports(100, 0.29) == 71  # 0.29 * 100 = 28.999...96 in floats: 29 corrupt
    assert honest_reports(10, 0.1) == 9
    # cohort 270, n_min 100, γ 0.05: 13 may collude, so 95 + 13 = 108 survivors are needed
    assert unmask_shortfall(108, 270, min_reports=100, corruption_rate=0.05) == 0
    assert unmask_shortfall(107, 270, min_reports=100, corruption_rate=0.05) == 1
    assert unmask_shortfall(100, 100, min_reports=100, corruption_rate=0.05) == 0
    assert unmask_shortfall(99, 100, min_reports=100, corruption_rate=0.05) == 1
    # γ = 0: the old rule, survivors >= n_min
    assert unmask_shortfall(100, 270, min_reports=100, corruption_rate=0.0) == 0
    assert unmask_shortfall(99, 270, min_reports=100, corruption_rate=0.0) == 1
    with pytest.raises(ValueError):
        honest_reports(10, 0.5)
    with pytest.raises(ValueError):
        unmask_shortfall(11, 10, min_reports=5, corruption_rate=0.1)


def test_secure_sum_of_twenty_with_one_colluder_is_a_gaussian_of_sigma_root_19() -> None:
    """n_min 20, γ 0.05: 19 honest noises. Unsampled secure sums over R rounds are one
    Gaussian of multiplier σ√19/√R (analytic Gaussian, computed here with scipy)."""
    sigma, rounds, delta = 0.5, 4, 1e-6
    ledger = PrivacyLedger.planned(rounds=rounds, noise_multiplier=sigma, sampling_rate=1.0,
                                   min_reports=20, corruption_rate=0.05)
    assert ledger.events[0].honest_reports == 19
    acc = DevicePrivacyAccountant(delta=delta, value_discretization_interval=1e-4)
    expected = analytic_gaussian_epsilon(sigma * math.sqrt(19) / math.sqrt(rounds), delta)
    assert acc.epsilon(ledger, "secure_sum") == pytest.approx(expected, rel=2e-3)
    old = analytic_gaussian_epsilon(sigma * math.sqrt(20) / math.sqrt(rounds), delta)
    assert acc.epsilon(ledger, "secure_sum") > old * (1 + 1e-3)
    # device_sum of server-observed rounds (q = 1): dp_accounting's RDP of σ√19 per round
    http = PrivacyLedger(events=tuple(_event(sigma, 20, day=d, corruption_rate=0.05)
                                      for d in range(rounds)))
    reference = _rdp_reference([(dp_accounting.GaussianDpEvent(sigma * math.sqrt(19)),
                                 rounds)], delta)
    assert DevicePrivacyAccountant(delta=delta, accountant="rdp").epsilon(
        http, "device_sum") == pytest.approx(reference, rel=1e-9)


def test_colluders_reduce_the_ddg_sum_to_kls21_figure_of_the_honest_clients() -> None:
    """KLS21's published server-observed points at n = 40 are what 42 clients with γ 0.05
    (two colluders, 40 honest discrete Gaussians) get; at γ = 0 the 42 would count."""
    from federated.privacy import ddg_tau, rounded_l2_sensitivity
    big_d, delta = 2 ** 20, 1e-5
    acc = DevicePrivacyAccountant(delta=delta)
    for _eps0, (gamma, local_std, points) in KLS21_SERVER_OBSERVED.items():
        mechanism: _Mechanism = {"mechanism": "ddg",
                                 "sensitivity": rounded_l2_sensitivity(1.0, gamma, big_d),
                                 "tau": ddg_tau(local_std / gamma, 40), "dimension": big_d}
        colluded = PrivacyLedger.planned(rounds=1500, noise_multiplier=local_std,
                                         sampling_rate=0.01, min_reports=42,
                                         corruption_rate=0.05, **mechanism)
        assert acc.epsilon(colluded, "device_sum") == pytest.approx(points[40], rel=1e-9)
        all_honest = PrivacyLedger.planned(rounds=1500, noise_multiplier=local_std,
                                           sampling_rate=0.01, min_reports=42, **mechanism)
        assert acc.epsilon(all_honest, "device_sum") < points[40]


def _pipeline_config(gamma: float | None) -> tuple[FederatedConfig, int]:
    """reranker/federated.toml as the pipeline trains it (P = 1,076 on the small world)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "reranker" / "federated.toml").read_text()
    cfg = FederatedConfig.from_toml(text)
    if gamma is not None:
        cfg = cfg.model_copy(update={"secure_aggregation": cfg.secure_aggregation.model_copy(
            update={"corruption_rate": gamma})})
    return cfg, 1076


def test_gamma_zero_gives_exactly_the_figures_published_before() -> None:
    """Regression against the code before collusion was charged (session 8 figures):
    the simulator's privacy.json headline secure_sum 3.592148315007649 (300 rounds, δ
    1e-6) and the HTTP lineage (σ 1, n_min 100, q = 1 in every round) 1.472 after 10
    rounds, 207 rounds within ε 8; at the default γ 0.05 each moves up."""
    from federated.privacy import max_affordable_rounds
    acc = DevicePrivacyAccountant(delta=1e-6)
    cfg0, p = _pipeline_config(0.0)
    sim0 = PrivacyLedger.planned_from(cfg0, p, secret_sampling=True)
    assert all(e.corruption_rate == 0.0 for e in sim0.events)
    assert acc.epsilon(sim0, "secure_sum") == pytest.approx(3.592148315007649, rel=1e-9)
    cfg, _ = _pipeline_config(None)
    assert cfg.secure_aggregation.corruption_rate == 0.05
    sim = PrivacyLedger.planned_from(cfg, p, secret_sampling=True)
    assert acc.epsilon(sim, "secure_sum") == pytest.approx(3.8729, abs=1e-4)

    def http(gamma: float) -> PrivacyLedger:
        c = FederatedConfig.model_validate({
            "rounds": {"min_reports": 100, "sampling_rate": 0.01,
                       "max_uploads_per_day": 1000},
            "privacy": {"noise_multiplier": 1.0, "budget_kind": "device_sum"},
            "secure_aggregation": {"enabled": True, "corruption_rate": gamma}})
        return PrivacyLedger.planned_from(c, 2000, rounds=400, secure=True)

    assert acc.epsilon(http(0.0).head(10), "device_sum") == pytest.approx(1.4717, abs=1e-4)
    assert max_affordable_rounds(http(0.0), acc, kind="device_sum", target_epsilon=8.0) == 207
    assert acc.epsilon(http(0.05).head(10), "device_sum") == pytest.approx(1.5138, abs=1e-4)
    assert max_affordable_rounds(http(0.05), acc, kind="device_sum",
                                 target_epsilon=8.0) == 196


def test_the_report_says_which_rounds_assumed_which_collusion_bound() -> None:
    """A lineage with rows recorded before γ (read as γ = 0, as they were charged) and
    rounds at γ 0.05: ε composes each at its own honest count, and the report says so."""
    delta = 1e-6
    old = [_event(1.0, 100, day=d) for d in range(3)]
    new = [_event(1.0, 100, day=d, corruption_rate=0.05) for d in range(3, 10)]
    ledger = PrivacyLedger(events=(*old, *new))
    reference = _rdp_reference([(dp_accounting.GaussianDpEvent(math.sqrt(100)), 3),
                                (dp_accounting.GaussianDpEvent(math.sqrt(95)), 7)], delta)
    acc = DevicePrivacyAccountant(delta=delta)
    assert acc.epsilon(ledger, "device_sum", "rdp") == pytest.approx(reference, rel=1e-9)
    report = acc.report(ledger, clip_norm=1.0)
    assert report["corruption_rate"] == [0.0, 0.05]
    assert report["honest_reports"] == [95, 100]
    assert report["rounds_by_corruption_rate"] == {"0": 3, "0.05": 7}
    for kind in ("device_sum", "secure_sum"):
        text = report["guarantees"][kind]["assumption"]
        assert "3 rounds at gamma=0 (no collusion assumed" in text
        assert "7 rounds at gamma=0.05: 95 of 100 reports' noise counted" in text
    assert "gamma" not in report["guarantees"]["device_local"]["assumption"]


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(0.2, 5.0), n_min=st.integers(3, 300), q=st.floats(1e-3, 0.5),
       rounds=st.integers(1, 20), gammas=st.lists(st.floats(0.0, 0.49), min_size=2,
                                                   max_size=2),
       ddg=st.booleans(), secret=st.booleans())
def test_epsilon_never_falls_as_the_collusion_bound_grows(
        sigma: float, n_min: int, q: float, rounds: int, gammas: list[float], ddg: bool,
        secret: bool) -> None:
    lo, hi = sorted(gammas)
    mechanism: _Mechanism = ({"mechanism": "ddg", "sensitivity": 1.0001, "tau": 1e-6,
                              "dimension": 64} if ddg else {})

    def ledger(gamma: float) -> PrivacyLedger:
        return PrivacyLedger(events=tuple(_event(sigma, n_min, q, day=i, secret=secret,
                                                 corruption_rate=gamma, **mechanism)
                                          for i in range(rounds)))

    acc = DevicePrivacyAccountant(delta=1e-6, accountant="rdp")
    for kind in ("secure_sum", "device_sum"):
        assert acc.epsilon(ledger(hi), kind) >= acc.epsilon(ledger(lo), kind) * (1 - 1e-12)
    assert acc.epsilon(ledger(hi), "device_local") == acc.epsilon(ledger(0.0), "device_local")


def test_the_calculator_plans_the_secure_kinds_under_the_collusion_bound() -> None:
    """``stickers federated privacy|calibrate`` default to γ 0.05 (the SecAgg config's),
    so a σ calibrated for secure_sum holds with up to 5 % of clients colluding;
    ``--corruption-rate 0`` gives the old figure."""
    import json

    from click.testing import CliRunner

    from data.cli import main
    args = ["-q", "federated", "privacy", "--sigma", "0.5", "--q", "1", "--rounds", "4",
            "--min-reports", "20", "--max-per-day", "100", "--json"]
    default = json.loads(CliRunner().invoke(main, args).output)
    zero = json.loads(CliRunner().invoke(main, [*args, "--corruption-rate", "0"]).output)
    assert default["corruption_rate"] == 0.05 and default["honest_reports"] == 19
    assert zero["corruption_rate"] == 0.0 and zero["honest_reports"] == 20
    assert default["epsilon"]["secure_sum"] == pytest.approx(
        analytic_gaussian_epsilon(0.5 * math.sqrt(19) / 2, 1e-6), rel=2e-3)
    assert zero["epsilon"]["secure_sum"] == pytest.approx(
        analytic_gaussian_epsilon(0.5 * math.sqrt(20) / 2, 1e-6), rel=2e-3)
    calibrate = ["-q", "federated", "calibrate", "--target-epsilon", "2", "--q", "1",
                 "--rounds", "4", "--min-reports", "20", "--max-per-day", "100"]
    sigma = float(CliRunner().invoke(main, calibrate).output.strip().splitlines()[-1])
    sigma0 = float(CliRunner().invoke(main, [*calibrate, "--corruption-rate", "0"]
                                      ).output.strip().splitlines()[-1])
    assert sigma == pytest.approx(sigma0 * math.sqrt(20 / 19), rel=3e-3)


def test_the_report_summary_states_the_collusion_bound() -> None:
    from evaluation import privacy_summary
    ledger = PrivacyLedger(events=(_event(1.0, 100, corruption_rate=0.05),))
    summary = privacy_summary({**DevicePrivacyAccountant().report(ledger, clip_norm=1.0),
                               "enabled": True})
    assert summary["corruption_rate"] == 0.05
    assert "1 round at gamma=0.05: 95 of 100 reports' noise counted" in summary["collusion"]
    old = privacy_summary({"enabled": True, "epsilon": {"device_local": 3.0}})
    assert old["corruption_rate"] == 0.0 and "gamma = 0" in old["collusion"]
