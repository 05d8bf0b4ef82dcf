"""User-level A/B statistics: bootstrap coverage, null behaviour, MDE, arm hashing (issue #8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evaluation.stats import (
    arm_bucket,
    assign_treatment,
    compare_independent,
    compare_paired,
    minimum_detectable_effect,
    ratio_variance,
)


def _users(rng: np.random.Generator, m: int, effect: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m users: sessions 1 + Poisson(4), per-user hit rate p ~ Beta(2, 18) (mean 0.1).

    Returns sessions, hits at rate p and hits at rate p·(1 + effect): the true relative
    uplift of the per-session rate is exactly ``effect`` (p is independent of sessions).
    """
    n = 1 + rng.poisson(4, m)
    p = rng.beta(2, 18, m)
    return n, rng.binomial(n, p), rng.binomial(n, np.minimum(p * (1 + effect), 1.0))


def test_randomised_bootstrap_ci_covers_known_effect_at_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    effect, runs, covered = 0.2, 200, 0
    for _ in range(runs):
        n_a, y_a, _ = _users(rng, 400)
        n_b, _, y_b = _users(rng, 400, effect)
        est = compare_independent("hit", y_a, n_a, y_b, n_b, rng=rng, n_resamples=500,
                                  n_permutations=0)
        covered += est.covers(effect)
    # binomial sd of the coverage of 200 runs is 1.5 points; percentile intervals of a
    # ratio run a little narrow in small samples
    assert 0.90 <= covered / runs <= 0.99


def test_paired_bootstrap_ci_covers_known_effect_at_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    effect, runs, covered = 0.15, 200, 0
    for _ in range(runs):
        n, y_a, y_b = _users(rng, 400, effect)
        est = compare_paired("hit", y_a, y_b, n, rng=rng, n_resamples=500, n_permutations=0)
        covered += est.covers(effect)
    assert 0.90 <= covered / runs <= 0.99


def test_identical_arms_give_an_interval_containing_zero() -> None:
    rng = np.random.default_rng(0)
    n, y, _ = _users(rng, 300)
    paired = compare_paired("hit", y, y, n, rng=rng)
    assert paired.uplift == 0.0 and paired.ci_low == 0.0 == paired.ci_high
    assert paired.covers(0.0) and paired.p_value == 1.0
    ab = compare_independent("hit", y, n, y.copy(), n.copy(), rng=rng)
    assert ab.uplift == 0.0 and ab.ci_low < 0.0 < ab.ci_high
    assert ab.p_value > 0.9
    # the same population split in two by a hash: no effect, the CI contains 0
    ids = np.arange(600)
    is_b = assign_treatment(ids, "null-test")
    n, y, _ = _users(rng, 600)
    ab = compare_independent("hit", y[~is_b], n[~is_b], y[is_b], n[is_b], rng=rng)
    assert ab.covers(0.0)


def test_large_effect_is_significant_and_reported_both_ways() -> None:
    rng = np.random.default_rng(3)
    n_a, y_a, _ = _users(rng, 2000)
    n_b, _, y_b = _users(rng, 2000, 0.5)
    est = compare_independent("hit", y_a, n_a, y_b, n_b, rng=rng, n_permutations=500)
    assert est.p_value < 0.01 and est.ci_low > 0
    assert est.uplift == pytest.approx(est.mean_b / est.mean_a - 1)
    assert est.difference == pytest.approx(est.mean_b - est.mean_a)
    assert est.difference_ci_low < est.difference < est.difference_ci_high
    assert est.n_users_a == 2000 and est.n_sessions_a == int(n_a.sum())
    assert est.to_dict()["design"] == "randomised"


def test_ratio_variance_and_mde_closed_form() -> None:
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    # one session per user: the variance of a mean, s² / m
    assert ratio_variance(y, np.ones(5)) == pytest.approx(np.var(y, ddof=1) / 5)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert minimum_detectable_effect(0.01, 0.05, 0.8) == pytest.approx(z * 0.01)
    assert z == pytest.approx(2.8016, abs=1e-4)
    rng = np.random.default_rng(5)
    n_a, y_a, _ = _users(rng, 1000)
    n_b, y_b, _ = _users(rng, 1000)
    est = compare_independent("hit", y_a, n_a, y_b, n_b, rng=rng, n_permutations=0)
    se = np.sqrt(ratio_variance(y_a, n_a) + ratio_variance(y_b, n_b))
    assert est.mde_absolute == pytest.approx(z * se)
    assert est.mde == pytest.approx(z * se / est.mean_a)


def test_arm_assignment_is_stable_salted_and_balanced() -> None:
    ids = np.arange(20000)
    b = assign_treatment(ids, "exp-1")
    assert 0.48 < b.mean() < 0.52
    np.testing.assert_array_equal(b, assign_treatment(ids, "exp-1"))
    assert (b != assign_treatment(ids, "exp-2")).mean() > 0.4
    assert arm_bucket("exp-1", 42) == arm_bucket("exp-1", 42)
    assert 0.0 <= arm_bucket("exp-1", 42) < 1.0


def test_too_few_users_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="each arm needs >= 2 users, got A=1"):
        compare_independent("hit", np.ones(1), np.ones(1), np.ones(3), np.ones(3),
                            rng=np.random.default_rng(0))


def test_report_config_round_trips_and_rejects_bad_values(tmp_path: Path) -> None:
    from data import ConfigError
    from evaluation import ReportConfig

    config = ReportConfig.create(devices=100, k=3, seed=None)
    assert config.devices == 100 and config.k == 3 and config.seed == 0
    path = tmp_path / "report.json"
    path.write_text(config.model_dump_json())
    assert ReportConfig.from_file(path, seed=4) == config.model_copy(update={"seed": 4})
    toml = tmp_path / "report.toml"
    toml.write_text("devices = 50\nsalt = 'x'\n")
    assert ReportConfig.from_file(toml).salt == "x"
    with pytest.raises(ConfigError, match="k"):
        ReportConfig.create(k=0)
    with pytest.raises(ConfigError, match="extra"):
        ReportConfig.create(colour="red")
