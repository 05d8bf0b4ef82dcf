"""SecAgg+, the distributed discrete Gaussian and their accounting (issue #17), and the
named random streams of federated training (issue #14 item 5)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import federated._ddg as ddg_module
from federated import (
    FederatedConfig,
    FederatedTrainer,
    LocalResult,
    SecAggAbandoned,
    SecAggProtocolError,
    SyntheticRegressionTask,
)
from federated.privacy import (
    DDG_RDP_ORDERS,
    DiscreteGaussianEncoding,
    ddg_round_rdp,
    ddg_tau,
    hadamard_transform,
    rounded_l2_sensitivity,
    sample_discrete_gaussian,
)
from federated.secagg import (
    ConsistencySignature,
    EncryptedShares,
    ForwardedShares,
    KeyAdvertisement,
    MaskedInput,
    Message,
    NeighbourKeys,
    RoundSetup,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    choose_degree_and_threshold,
    reconstruct,
    run_secagg_round,
    split,
    survivor_bitmap,
    survivor_ids,
)


def _inputs(n: int, d: int, bits: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << bits, size=(n, d), dtype=np.uint64).astype(np.uint32)


def _modsum(x: np.ndarray, ids: list[int], bits: int) -> np.ndarray:
    return (x[ids].astype(np.uint64).sum(0) % (1 << bits)).astype(np.uint32)


# ------------------------------------------------------------------------- Shamir


def test_shamir_matches_the_published_worked_example() -> None:
    # Wikipedia, "Shamir's secret sharing", worked example: p = 1613, f = 1234 + 166x + 94x²
    shares = split(1234, [1, 2, 3, 4, 5, 6], 3, prime=1613, coefficients=[166, 94])
    assert shares == [1494, 329, 965, 176, 1188, 775]
    assert reconstruct([(2, 329), (4, 176), (5, 1188)], prime=1613) == 1234
    assert reconstruct([(1, 1494), (3, 965), (6, 775)], prime=1613) == 1234


def test_shamir_round_trips_32_byte_secrets_and_fewer_shares_fail() -> None:
    secret = bytes(range(32))
    xs = list(range(1, 11))
    ys = split(secret, xs, 6)
    points = list(zip(xs, ys, strict=True))
    assert reconstruct(points[:6]).to_bytes(32, "big") == secret
    assert reconstruct(points[4:]).to_bytes(32, "big") == secret
    assert reconstruct(points[:5]) != int.from_bytes(secret, "big")
    with pytest.raises(ValueError, match="threshold"):
        split(secret, xs, 11)


# ------------------------------------------------------------------- parameters


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_degree_and_threshold_meet_their_stated_bounds(n: int) -> None:
    k, t = choose_degree_and_threshold(n, dropout_rate=0.1, corruption_rate=0.05)
    assert k < n - 1 and k % 2 == 0 and t > k / 2
    assert k <= 8 * math.log2(n)  # O(log n)
    assert n * stats.binom.sf(t - 1, k, 0.05) <= 2.0 ** -40  # corrupt neighbours < t
    assert n * stats.binom.cdf(t - 1, k, 0.9) <= 2.0 ** -20  # survivors >= t
    assert choose_degree_and_threshold(8, dropout_rate=0.1, corruption_rate=0.05) == (7, 4)


# --------------------------------------------------------------------- exactness


@pytest.mark.parametrize(("n", "bits"), [
    (3, 32), (5, 16), (12, 24), (40, 32), (100, 20), (250, 32),
    pytest.param(500, 24, marks=pytest.mark.slow)])
def test_unmasked_sum_is_the_modular_sum_with_dropouts_at_every_stage(n: int, bits: int) -> None:
    params = SecAggParams.for_cohort(n, bits=bits, dimension=37, dropout_rate=0.1,
                                     corruption_rate=0.05)
    x = _inputs(n, 37, bits, seed=n)
    assert np.array_equal(run_secagg_round(x, params), _modsum(x, list(range(n)), bits))
    if n < 12:
        return
    # drop clients at each stage, within the tolerance of every neighbourhood
    rng = np.random.default_rng(n)
    order = [int(u) for u in rng.permutation(n)]
    per_stage = max(1, (params.degree - params.threshold) // 6)
    stages = ["advertise", "share", "mask", "consistency", "unmask"]
    drop = {s: set(order[i * per_stage:(i + 1) * per_stage]) for i, s in enumerate(stages)}
    gone_before_mask = drop["advertise"] | drop["share"] | drop["mask"]
    survivors = [u for u in range(n) if u not in gone_before_mask]
    out = run_secagg_round(x, params, drop=drop, transport=True)
    assert np.array_equal(out, _modsum(x, survivors, bits))


def _drive(server: SecAggServer, x: np.ndarray,
           drop: dict[str, set[int]]) -> np.ndarray | None:
    """run_secagg_round on a given server (so a test can read its neighbour graph)."""
    clients = [SecAggClient(x[u]) for u in range(len(x))]
    outgoing: dict[int, Message] = dict(server.setup_messages())
    gone: set[int] = set()
    for stage in ("advertise", "share", "mask", "consistency", "unmask"):
        gone |= drop.get(stage, set())
        for u, m in outgoing.items():
            if u in gone:
                continue
            try:
                reply = clients[u].handle(Message.from_bytes(m.to_bytes()))
            except SecAggAbandoned:
                gone.add(u)
                continue
            server.receive(Message.from_bytes(reply.to_bytes()))
        outgoing = server.advance()
    return server.result


@pytest.mark.parametrize("n", [12, 100, 200])
def test_a_client_survives_exactly_k_minus_t_neighbours_dropping_across_all_stages(
        n: int) -> None:
    # The tolerance is per neighbourhood: a client is unmasked while at most k - t of
    # its k neighbours drop out, at whatever stage; one more and the round is abandoned.
    params = SecAggParams.for_cohort(n, bits=32, dimension=16, dropout_rate=0.1,
                                     corruption_rate=0.05)
    k, t = params.degree, params.threshold
    x = _inputs(n, 16, 32, seed=7)
    stages = ["advertise", "share", "mask", "consistency", "unmask"]
    for extra in (0, 1):
        server = SecAggServer(params)
        victim = 0
        lost = server.neighbours[victim][:k - t + extra]
        drop: dict[str, set[int]] = {s: set() for s in stages}
        for i, v in enumerate(lost):  # spread over every stage
            drop[stages[i % len(stages)]].add(v)
        if extra == 0:
            before_mask = drop["advertise"] | drop["share"] | drop["mask"]
            expected = _modsum(x, [u for u in range(n) if u not in before_mask], 32)
            result = _drive(server, x, drop)
            assert result is not None and np.array_equal(result, expected)
        else:
            with pytest.raises(SecAggAbandoned, match=f"fewer than t={t}"):
                _drive(server, x, drop)
            assert server.result is None


def test_below_threshold_the_round_is_abandoned_and_nothing_is_unmasked() -> None:
    n = 10
    params = SecAggParams(n, 9, 6, 32, 8)
    x = _inputs(n, 8, 32)
    with pytest.raises(SecAggAbandoned, match="fewer than t=6"):
        run_secagg_round(x, params, drop={"mask": set(range(5))})
    server = SecAggServer(params)
    clients = [SecAggClient(x[u]) for u in range(n)]
    for u, m in server.setup_messages().items():
        if u < 5:
            server.receive(clients[u].handle(m))
    with pytest.raises(SecAggAbandoned, match="nothing was unmasked"):
        server.advance()
    assert server.result is None and server.stage == "done"


def test_a_masked_input_is_indistinguishable_from_uniform() -> None:
    n, d, bits = 6, 4096, 16
    x = np.zeros((n, d), np.uint32)  # the most structured input there is
    x[0] = np.arange(d) % 7
    params = SecAggParams(n, 5, 3, bits, d)
    server = SecAggServer(params)
    clients = [SecAggClient(x[u]) for u in range(n)]
    out: dict[int, Message] = dict(server.setup_messages())
    for _ in range(2):
        for u, m in out.items():
            server.receive(clients[u].handle(m))
        out = server.advance()
    masked = [clients[u].handle(out[u]) for u in range(n)]
    assert isinstance(masked[0], MaskedInput)
    y = masked[0].vector
    # Kolmogorov-Smirnov against U[0, 2^b) and a chi-square on 64 bins
    assert stats.kstest(y / float(1 << bits), "uniform").pvalue > 1e-3
    counts = np.bincount(y >> (bits - 6), minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert abs(np.corrcoef(y.astype(float), x[0].astype(float))[0, 1]) < 0.1


# ------------------------------------------------------- messages, errors, checkpoint


def _run_until(stage_count: int, n: int = 6, d: int = 5, k: int = 0) -> tuple[SecAggServer,
                                                                 list[SecAggClient],
                                                                 dict[int, Message],
                                                                 list[Message]]:
    x = _inputs(n, d, 32, seed=3)
    server = SecAggServer(SecAggParams(n, k or n - 1, 3, 32, d))
    clients = [SecAggClient(x[u]) for u in range(n)]
    out: dict[int, Message] = dict(server.setup_messages())
    replies: list[Message] = []
    for _ in range(stage_count):
        replies = []
        for u, m in out.items():
            reply = clients[u].handle(m)
            replies.append(reply)
            server.receive(reply)
        out = server.advance()
    return server, clients, out, replies


def test_every_message_round_trips_its_serialised_form() -> None:
    seen: list[Message] = []
    server, clients, out, _ = _run_until(0)
    for _ in range(5):
        for u, m in out.items():
            seen.append(m)
            reply = clients[u].handle(Message.from_bytes(m.to_bytes()))
            seen.append(reply)
            server.receive(Message.from_bytes(reply.to_bytes()))
        out = server.advance()
    kinds = {type(m) for m in seen}
    assert {RoundSetup, KeyAdvertisement, NeighbourKeys, EncryptedShares, MaskedInput,
            SurvivorList, ConsistencySignature, UnmaskShares} <= kinds
    for m in seen:
        again = Message.from_bytes(m.to_bytes())
        assert again.to_bytes() == m.to_bytes() and type(again) is type(m)
    assert server.result is not None
    with pytest.raises(SecAggProtocolError, match="unreadable"):
        Message.from_bytes(b"{not json")


def test_wrong_and_replayed_messages_are_refused_with_clear_errors() -> None:
    server, clients, out, _ = _run_until(1)  # keys advertised, now sharing
    with pytest.raises(SecAggProtocolError, match="replayed key_advertisement"):
        server.receive(KeyAdvertisement(server.round_id, 0, b"a" * 32, b"b" * 32, b"c" * 32))
    with pytest.raises(SecAggProtocolError, match="another round"):
        server.receive(EncryptedShares(b"x" * 16, 0, {}))
    with pytest.raises(SecAggProtocolError, match="expected encrypted_shares, got masked_input"):
        server.receive(MaskedInput(server.round_id, 0, np.zeros(5, np.uint32)))
    reply = clients[0].handle(out[0])
    server.receive(reply)
    with pytest.raises(SecAggProtocolError, match="replayed encrypted_shares from client 0"):
        server.receive(reply)
    with pytest.raises(SecAggProtocolError, match="replayed neighbour_keys"):
        clients[0].handle(out[0])
    with pytest.raises(SecAggProtocolError, match="should come from the server"):
        clients[1].handle(NeighbourKeys(server.round_id, 3, {}))
    with pytest.raises(SecAggProtocolError, match="expected round_setup"):
        SecAggClient(np.zeros(5, np.uint32)).handle(SurvivorList(server.round_id, -1, b"\x01"))


def test_a_checkpoint_mid_protocol_resumes_to_the_same_sum() -> None:
    server, clients, out, _ = _run_until(3)  # masked inputs are in; consistency next
    x = np.stack([c.vector for c in clients])
    server = SecAggServer.from_bytes(server.to_bytes())
    clients = [SecAggClient.from_bytes(c.to_bytes()) for c in clients]
    out = {u: Message.from_bytes(m.to_bytes()) for u, m in out.items()}
    for _ in range(2):
        for u, m in out.items():
            server.receive(clients[u].handle(m))
        out = server.advance()
    assert server.result is not None
    assert np.array_equal(server.result, _modsum(x, list(range(len(clients))), 32))


@pytest.mark.parametrize("stage_count", [0, 1, 2, 3, 4])
def test_a_checkpoint_at_any_stage_resumes_to_the_same_sum(stage_count: int) -> None:
    server, clients, out, _ = _run_until(stage_count)
    x = np.stack([c.vector for c in clients])
    server = SecAggServer.from_bytes(server.to_bytes())
    clients = [SecAggClient.from_bytes(c.to_bytes()) for c in clients]
    out = {u: Message.from_bytes(m.to_bytes()) for u, m in out.items()}
    for _ in range(5 - stage_count):
        for u, m in out.items():
            server.receive(clients[u].handle(m))
        out = server.advance()
    assert server.result is not None
    assert np.array_equal(server.result, _modsum(x, list(range(len(clients))), 32))


def test_tampered_shares_forged_signatures_and_a_changed_survivor_list_are_refused() -> None:
    # a server (or network) that alters what it forwards is caught by the clients
    server, clients, out, _ = _run_until(1)  # neighbour keys are out; sharing next
    replies = {u: clients[u].handle(m) for u, m in out.items()}
    for reply in replies.values():
        server.receive(reply)
    forwarded = server.advance()
    victim = forwarded[0]
    assert isinstance(victim, ForwardedShares)
    sender, blob = next(iter(victim.ciphertexts.items()))
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    tampered = ForwardedShares(victim.round_id, -1, {**victim.ciphertexts, sender: flipped})
    masked = {u: clients[u].handle(m if u else tampered) for u, m in forwarded.items()}
    for reply in masked.values():
        server.receive(reply)
    lists = server.advance()
    sigs = {u: clients[u].handle(m) for u, m in lists.items()}
    for reply in sigs.values():
        server.receive(reply)
    requests = server.advance()
    with pytest.raises(SecAggProtocolError, match=f"share from {sender} does not decrypt"):
        clients[0].handle(requests[0])
    # a forged signature of the survivor list
    req = requests[1]
    assert isinstance(req, UnmaskRequest)
    other = next(v for v in req.signatures if v != 1)
    forged = UnmaskRequest(req.round_id, -1, req.survivor_bitmap,
                           {**req.signatures, other: bytes(64)})
    with pytest.raises(SecAggProtocolError, match=f"neighbour {other}'s signature"):
        clients[1].handle(forged)
    # another survivor list than the one the client signed
    last = max(survivor_ids(req.survivor_bitmap))
    shrunk = UnmaskRequest(req.round_id, -1,
                           survivor_bitmap(set(server.survivors) - {last}, len(clients)),
                           req.signatures)
    with pytest.raises(SecAggProtocolError, match="other survivors"):
        clients[2].handle(shrunk)


def test_the_survivor_list_is_one_bitmap_of_n_bits_for_every_client() -> None:
    # U3 goes out as ⌈n/8⌉ bytes, the same object for every client (not 4 bytes per id)
    n, gone = 60, {3, 17, 41}
    server, clients, out, _ = _run_until(2, n=n, k=10)
    for u, m in out.items():
        if u not in gone:
            server.receive(clients[u].handle(m))
    lists = server.advance()
    assert set(lists) == set(range(n)) - gone
    survivor_lists = [m for m in lists.values() if isinstance(m, SurvivorList)]
    assert len(survivor_lists) == len(lists)
    bitmaps = {id(m.survivor_bitmap) for m in survivor_lists}
    assert len(bitmaps) == 1
    first = lists[0]
    assert isinstance(first, SurvivorList)
    bitmap = first.survivor_bitmap
    assert len(bitmap) == math.ceil(n / 8) and survivor_ids(bitmap) == server.survivors
    assert survivor_ids(bitmap) == tuple(u for u in range(n) if u not in gone)
    # bit u of byte u // 8, least significant first
    assert bitmap[0] == 0b11110111 and bitmap[2] == 0b11111101
    sizes = [len(m.to_bytes()) for m in lists.values()]
    assert max(sizes) < 200  # ids as JSON would be ~3.5 bytes each: > 200 for 57 of them
    # each client keeps only its neighbourhood's survivors
    for u, m in lists.items():
        clients[u].handle(m)
        assert set(clients[u].survivors) == set(server.neighbours[u]) - gone
    # a bitmap too short to cover a client's neighbours is refused
    _, fresh, out2, _ = _run_until(3, n=n, k=10)
    with pytest.raises(SecAggProtocolError, match="does not cover client"):
        fresh[0].handle(SurvivorList(out2[0].round_id, -1, b"\xff"))


@given(st.integers(1, 300).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_survivor_bitmap_round_trips(case: tuple[int, set[int]]) -> None:
    n, ids = case
    bitmap = survivor_bitmap(ids, n)
    assert len(bitmap) == (n + 7) // 8 and survivor_ids(bitmap) == tuple(sorted(ids))


# ------------------------------------------------------------ discrete Gaussian


def test_hadamard_is_orthonormal_and_self_inverse() -> None:
    x = np.random.default_rng(0).normal(size=(3, 64))
    y = hadamard_transform(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(hadamard_transform(y), x, atol=1e-12)


def test_discrete_gaussian_sampler_has_the_right_law() -> None:
    rng = np.random.default_rng(1)
    draws = sample_discrete_gaussian(1.5, 200_000, rng)
    support = np.arange(-12, 13)
    pmf = np.exp(-support ** 2 / (2 * 1.5 ** 2))
    pmf /= pmf.sum()
    counts = np.array([(draws == k).sum() for k in support])
    keep = pmf * draws.size > 5
    expected = pmf[keep] * draws.size
    scaled = expected * counts[keep].sum() / expected.sum()
    assert stats.chisquare(counts[keep], scaled).pvalue > 1e-3


def test_encoding_decodes_the_sum_and_bounds_the_wrap_around() -> None:
    enc = DiscreteGaussianEncoding.plan(dimension=1064, clip_norm=1.0, noise_multiplier=0.1,
                                        bits=32, n_max=10_000)
    assert enc.padded_dimension == 2048 and enc.wrap_probability == 1e-9
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1064))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    reports = enc.encode(x, 11, rng, np.random.default_rng(2))
    assert reports.dtype == np.uint32 and reports.shape == (200, 2048)
    total = (reports.astype(np.uint64).sum(0) % (1 << 32)).astype(np.uint32)
    err = enc.decode(total, 11) - x.sum(0)
    # the error is the summed noise: std sqrt(200)·σC = 1.41 per coordinate
    assert abs(err.std() - math.sqrt(200) * 0.1) < 0.1 and abs(err.mean()) < 0.05
    small = DiscreteGaussianEncoding.plan(dimension=1064, clip_norm=1.0, noise_multiplier=0.1,
                                          bits=16, n_max=100)
    assert small.gamma > enc.gamma  # fewer bits: a coarser grid
    with pytest.raises(ValueError, match="raise bits"):
        DiscreteGaussianEncoding.plan(dimension=1064, clip_norm=1.0, noise_multiplier=0.1,
                                      bits=8, n_max=10_000)


def test_ddg_accounting_follows_kls21_theorem_1() -> None:
    # τ as stated in KLS21 Thm 1, computed term by term
    sigma_z, n = 0.4, 50
    expected = 10 * sum(math.exp(-2 * math.pi ** 2 * sigma_z ** 2 * k / (k + 1))
                        for k in range(1, n))
    assert ddg_tau(sigma_z, n) == pytest.approx(expected, rel=1e-12)
    orders = np.array(DDG_RDP_ORDERS, float)
    # q = 1, τ = 0: the bound is s²/2-zCDP, exactly dp_accounting's ZCDpEvent
    acc = dp_accounting.rdp.RdpAccountant(orders=list(orders))
    acc.compose(dp_accounting.ZCDpEvent(rho=0.5 / 1.3 ** 2), 10)
    ours = 10 * np.array(ddg_round_rdp(1.0, 1 / 1.3, 0.0, 0.0))
    np.testing.assert_allclose(ours, acc._rdp, rtol=1e-12)
    # Poisson sampling: an upper bound of the exact subsampled Gaussian, and close to it
    for q, z in ((0.02, 1.0), (0.01, 0.7), (0.2, 2.0)):
        sampled = np.array(ddg_round_rdp(q, 1 / z, 0.0, 0.0))
        exact = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, z, orders)
        assert (sampled >= exact * (1 - 1e-9)).all()
        e_ddg, _ = rdp_privacy_accountant.compute_epsilon(orders, 300 * sampled, 1e-6)
        e_gauss, _ = rdp_privacy_accountant.compute_epsilon(orders, 300 * exact, 1e-6)
        assert e_gauss <= e_ddg <= 1.5 * e_gauss
    # τ > 0 only ever costs privacy
    assert all(a >= b for a, b in zip(ddg_round_rdp(0.02, 1.0, 1e-3, 1e-4),
                                      ddg_round_rdp(0.02, 1.0, 0.0, 0.0), strict=True))


def test_ddg_accounting_at_the_dropout_figure_setting_is_the_gaussian_bound() -> None:
    # KLS21's client-dropout figure ("server observed privacy", made by
    # google-research/federated distributed_dp/plot_client_dropout.py): n = 100 clients
    # per round, T = 1,500 rounds, q = 1, d = 2^20, δ = 1e-5, C = 1, b = 32, β = e^-1/2;
    # each curve starts at ε₀ ∈ {1, 2, 4, 6, 8} with no dropout and the local noise fixed
    # for n = 100, then n shrinks to n(1 - p). At 32 bits the grid γ is so fine that
    # rounding and τ vanish and the paper's Thm 1 reduces to the continuous Gaussian with
    # central noise multiplier σ√n'; those values come here from dp_accounting's exact
    # Gaussian RDP, an independent route, and our DDG accountant must reproduce every
    # point of the figure's curves (and only ever lie above them).
    n, rounds, big_d, delta = 100, 1500, 2 ** 20, 1e-5
    orders = np.array(DDG_RDP_ORDERS, float)

    def gaussian_eps(z: float) -> float:
        rdp = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(1.0, z, orders)
        return float(rdp_privacy_accountant.compute_epsilon(orders, rounds * rdp, delta)[0])

    def local_sigma_for(eps0: float) -> float:  # the figure's calibration at n = 100
        lo, hi = 0.01, 100.0
        for _ in range(80):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if gaussian_eps(mid * math.sqrt(n)) > eps0 else (lo, mid)
        return hi

    from federated import DevicePrivacyAccountant, PrivacyLedger
    accountant = DevicePrivacyAccountant(delta=delta, accountant="rdp")
    for eps0 in (1, 2, 4, 6, 8):
        sigma = local_sigma_for(eps0)
        enc = DiscreteGaussianEncoding.plan(dimension=big_d, clip_norm=1.0,
                                            noise_multiplier=sigma, bits=32, n_max=n)
        assert enc.gamma < 1e-6 and enc.sensitivity < 1.0 + 1e-6  # fine grid at 32 bits
        for p in (0.0, 0.1, 0.3, 0.6):
            n_now = round(n * (1 - p))
            _, tau_d, _ = enc.epsilon_terms(n_now)
            ledger = PrivacyLedger.planned(
                rounds=rounds, noise_multiplier=sigma, sampling_rate=1.0,
                min_reports=n_now, mechanism="ddg", sensitivity=enc.sensitivity,
                tau=tau_d / big_d, dimension=big_d)
            ours = accountant.epsilon(ledger, "secure_sum")
            reference = gaussian_eps(sigma * math.sqrt(n_now))
            assert reference * (1 - 1e-12) <= ours <= reference * (1 + 1e-6), (eps0, p, ours)
            if p == 0.0:  # each curve's starting point
                assert ours == pytest.approx(eps0, rel=1e-3)
    # The figure's point: dropouts raise the server-observed ε (ours calibrates at n_min,
    # so privacy.json already states the value at the smallest cohort it aggregates).
    sigma = local_sigma_for(4)
    assert gaussian_eps(sigma * math.sqrt(40)) > 1.4 * gaussian_eps(sigma * math.sqrt(100))


# The client-dropout figure of KLS21 ("Server Observed Privacy": ε against the client
# dropout rate, one curve per initial ε₀), as its authors' code draws it:
# google-research/federated distributed_dp/plot_client_dropout.py and accounting_utils.py at
# commit 94b2854ca6eecd4596848d097119eab97044a249 (2021-06-08; get_ddgauss_gamma with k = 4,
# get_ddgauss_noise_stddev, get_ddgauss_epsilon), its RDP-to-(ε, δ) conversion from
# tensorflow/privacy tensorflow_privacy/privacy/analysis/rdp_accountant.py at commit
# 385fefc85e80dacd262cc63fb485a42062983622 (2021-06-03, the version of that day). Setting:
# n = 100, q = 1, T = 1,500, b = 32, d = 2^20, C = 1, β = e^-1/2, δ = 1e-5. Per curve: the
# γ and local σ the script calibrates at n = 100, and ε at n = 100·(1 - dropout) for dropout
# 0, 10, …, 60%; the script's output printed to 12 significant digits.
KLS21_DROPOUT_FIGURE: dict[int, tuple[float, float, dict[int, float]]] = {
    1: (2.918305483539586e-07, 15.66771262569965,
        {100: 0.999999999878, 90: 1.05896475155, 80: 1.12920545296, 70: 1.2146284237,
         60: 1.32139460326, 50: 1.45999328324, 40: 1.65029989308}),
    2: (1.5508192487485028e-07, 8.3256695775366,
        {100: 2.00000000054, 90: 2.12022104095, 80: 2.26391760952, 70: 2.43780875727,
         60: 2.65676165285, 50: 2.94529214985, 40: 3.33383325939}),
    4: (8.352250415396687e-08, 4.48402124126313,
        {100: 4.00000000166, 90: 4.24867648603, 80: 4.55952209149, 70: 4.91711924075,
         60: 5.36118439141, 50: 5.98287560233, 40: 6.81800889434}),
    6: (5.892660720001721e-08, 3.163428752237519,
        {100: 5.99999999642, 90: 6.41636351415, 80: 6.83513328843, 70: 7.37045781123,
         60: 8.08422384163, 50: 9.08349628419, 40: 10.4225989694}),
    8: (4.602796614655703e-08, 2.47129927328326,
        {100: 7.99999999975, 90: 8.54579315208, 80: 9.22803459248, 70: 10.0646968775,
         60: 10.9418644437, 50: 12.1698990364, 40: 14.0119509255}),
}

# Coarse grids, where rounding inflates the sensitivity and τ > 0 is in play (the figure's
# 32-bit grid makes both vanish): (q, T, n, γ, σ, C, D, δ) -> ε from the same
# get_ddgauss_epsilon at 94b2854 (two-term bound of KLS21 Thm 1), and from
# ddgauss_epsilon at commit 5e27a86323a35c2018fb97fbbe755c7ade9370ab (2022-02-15), which adds
# Proposition 14's third term with the L1 sensitivity and uses orders 2..128, 256.
KLS21_COARSE_GRID: list[tuple[tuple[float, int, int, float, float, float, int, float],
                              float, float]] = [
    ((1.0, 1, 100, 0.125, 0.15, 1.0, 256, 1e-5), 4.75327181443, 4.75313595241),
    ((0.1, 200, 100, 0.125, 0.15, 1.0, 256, 1e-5), 13.5351657696, 13.5348752577),
    ((1.0, 10, 20, 0.4, 0.36, 1.0, 64, 1e-6), 30.9910529376, 30.7253382212),
    ((0.01, 3000, 500, 0.02, 0.022, 0.3, 1024, 1e-6), 3.8640798488, 3.85984454811),
]


def _our_ddg_epsilon(q: float, rounds: int, n: int, gamma: float, local_std: float,
                     clip: float, dim: int, delta: float) -> float:
    from federated import DevicePrivacyAccountant, PrivacyLedger
    ledger = PrivacyLedger.planned(
        rounds=rounds, noise_multiplier=local_std / clip, sampling_rate=q, min_reports=n,
        mechanism="ddg", sensitivity=rounded_l2_sensitivity(clip, gamma, dim) / clip,
        tau=ddg_tau(local_std / gamma, n), dimension=dim)
    return DevicePrivacyAccountant(delta=delta, accountant="rdp").epsilon(ledger, "secure_sum")


def test_ddg_accounting_reproduces_the_points_of_the_kls21_dropout_figure() -> None:
    """Every point of KLS21's client-dropout figure, as the authors' code computes it.

    Source: :data:`KLS21_DROPOUT_FIGURE` (google-research/federated
    ``distributed_dp/plot_client_dropout.py`` @ 94b2854, with tensorflow/privacy's RDP
    conversion @ 385fefc). Given the figure's γ and local σ, our accountant (rounded
    sensitivity, τ, the RDP curve, dp_accounting's conversion) must give each plotted ε to
    the 12 digits printed; each curve starts at its ε₀ and rises with dropouts.
    """
    n, rounds, big_d, delta = 100, 1500, 2 ** 20, 1e-5
    for eps0, (gamma, local_std, points) in KLS21_DROPOUT_FIGURE.items():
        ours = {m: _our_ddg_epsilon(1.0, rounds, m, gamma, local_std, 1.0, big_d, delta)
                for m in points}
        for m, theirs in points.items():
            assert ours[m] == pytest.approx(theirs, rel=1e-10), (eps0, m, ours[m], theirs)
        assert ours[n] == pytest.approx(eps0, rel=1e-9)
        values = [ours[m] for m in sorted(ours, reverse=True)]  # n = 100, 90, ..., 40
        assert all(a < b for a, b in itertools.pairwise(values))


def test_ddg_accounting_reproduces_the_kls21_code_on_coarse_grids() -> None:
    """Rounding and τ in play: ours equals the figure's code, and bounds the later code's.

    Source: :data:`KLS21_COARSE_GRID`. Our bound is KLS21 Thm 1 (two terms), as the
    figure's code; the authors' 2022 code adds Proposition 14's L1 term, which can only
    lower ε (it helps when C/γ < √D). So ours must equal the first to 10 digits and lie
    at or above the second, within 1%.
    """
    for args, theirs, theirs_l1 in KLS21_COARSE_GRID:
        ours = _our_ddg_epsilon(*args)
        assert ours == pytest.approx(theirs, rel=1e-10), (args, ours, theirs)
        assert theirs_l1 * (1 - 1e-10) <= ours <= theirs_l1 * 1.01, (args, ours, theirs_l1)
    # the points really are off the Gaussian: τ·D and the rounding both move ε
    q, rounds, n, gamma, local_std, clip, dim, delta = KLS21_COARSE_GRID[2][0]
    orders = np.array(DDG_RDP_ORDERS, float)
    plain = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(
        q, local_std * math.sqrt(n) / clip, orders)
    gauss = rdp_privacy_accountant.compute_epsilon(orders, rounds * plain, delta)[0]
    assert ddg_tau(local_std / gamma, n) * dim > 0.1 and KLS21_COARSE_GRID[2][1] > 2 * gauss


# ------------------------------------------------------------------ in the trainer


def _config(**overrides: object) -> FederatedConfig:
    base: dict[str, Any] = {
        "devices.require_charging": False, "devices.require_idle": False,
        "devices.min_battery": 0.0, "devices.min_free_storage_mb": 0.0,
        "devices.dropout_rate": 0.1, "rounds.sampling_rate": 0.1, "rounds.min_reports": 20,
        "rounds.rounds": 4, "rounds.max_uploads_per_day": 48, "rounds.deadline_s": 90.0,
        "privacy.noise_multiplier": 0.5, "privacy.target_epsilon": 1e4}
    base.update(overrides)
    return FederatedConfig.load(**base)  # dotted keys: **values, typed Any by load


def test_sum_only_mode_gives_the_identical_model_as_the_full_protocol() -> None:
    runs = {}
    for mode in ("protocol", "sum_only"):
        task = SyntheticRegressionTask(n_devices=600, n_features=6)
        trainer = FederatedTrainer(task, _config(**{"secure_aggregation.mode": mode}))
        runs[mode] = trainer.fit(np.random.default_rng(5))
    protocol, sum_only = runs["protocol"], runs["sum_only"]
    assert [h.status for h in protocol.history_].count("aggregated") >= 3
    assert all(h.metrics.get("secagg_protocol") == 1.0 for h in protocol.history_
               if h.status == "aggregated")
    assert any(h.late > 0 for h in protocol.history_)  # stragglers dropped mid-protocol
    np.testing.assert_array_equal(protocol.parameters_, sum_only.parameters_)
    assert protocol.privacy_["headline"] == "secure_sum"


def test_secure_and_plain_runs_of_one_seed_have_the_same_participation() -> None:
    # the DDG-vs-continuous quality comparison (#17) is paired only if turning secure
    # aggregation on moves no schedule or participation draw (the round's public rotation
    # seed once came from the schedule stream and shifted every later eligibility draw)
    runs = {}
    for secure in (True, False):
        task = SyntheticRegressionTask(n_devices=600, n_features=6)
        cfg = _config(**{"secure_aggregation.enabled": secure, "rounds.rounds": 6,
                         "devices.require_idle": True})
        runs[secure] = FederatedTrainer(task, cfg).fit(np.random.default_rng(5)).history_

    def seen(h: object) -> tuple[object, ...]:
        return tuple(getattr(h, k) for k in ("eligible", "sampled", "dropped", "uploaded"))

    assert [seen(h) for h in runs[True]] == [seen(h) for h in runs[False]]
    assert len({seen(h) for h in runs[True]}) > 1  # rounds differ: the check has teeth


class _GreedyTask(SyntheticRegressionTask):
    """The same task, but its local training draws extra random numbers."""

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        rng.random(1000)
        return super().local_train(parameters, devices, rng)


@pytest.mark.parametrize("secure", [True, False])
def test_changing_the_tasks_random_use_leaves_every_noise_draw_unchanged(
        secure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import federated._client as client_module

    draws: list[np.ndarray] = []
    real_dg, real_gauss = ddg_module.sample_discrete_gaussian, client_module.add_gaussian_noise

    def spy_dg(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
        out = real_dg(sigma, size, rng)
        draws.append(out.copy())
        return out

    def spy_gauss(d: np.ndarray, c: float, s: float, rng: np.random.Generator) -> np.ndarray:
        out = real_gauss(d, c, s, rng)
        draws.append(out - d)
        return out

    monkeypatch.setattr(ddg_module, "sample_discrete_gaussian", spy_dg)
    monkeypatch.setattr(client_module, "add_gaussian_noise", spy_gauss)
    cfg = _config(**{"secure_aggregation.enabled": secure,
                     "secure_aggregation.mode": "sum_only"})
    recorded = []
    for task in (SyntheticRegressionTask(n_devices=400, n_features=5),
                 _GreedyTask(n_devices=400, n_features=5)):
        draws.clear()
        FederatedTrainer(task, cfg).fit(np.random.default_rng(3))
        recorded.append([d.copy() for d in draws])
    plain, greedy = recorded
    assert plain and len(plain) == len(greedy)
    for a, b in zip(plain, greedy, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_simulator_unmasks_only_rounds_with_the_honest_noises_it_charged() -> None:
    """γ 0.45, n_min 30: the ledger charges 30 - 13 = 17 honest noises per round, so a
    round is unmasked only if its in-time reports less ⌊0.45 × its uploads⌋ (all of the
    cohort that may collude) reach 17. Same seed at γ 0: every round with >= 30 in time
    is aggregated; at γ 0.45 exactly the rounds the rule predicts are, and the others
    are abandoned with nothing unmasked and the reason stated."""
    from federated.privacy import unmask_shortfall
    runs = {}
    for gamma in (0.0, 0.45):
        cfg = _config(**{"secure_aggregation.corruption_rate": gamma,
                         "rounds.min_reports": 30, "rounds.rounds": 6})
        task = SyntheticRegressionTask(n_devices=600, n_features=6)
        runs[gamma] = FederatedTrainer(task, cfg).fit(np.random.default_rng(5)).history_
    plain, colluded = runs[0.0], runs[0.45]
    assert [(h.uploaded, h.accepted) for h in plain] == [(h.uploaded, h.accepted)
                                                         for h in colluded]
    assert all(h.status == ("aggregated" if h.accepted >= 30 else "abandoned")
               for h in plain)
    expected = ["aggregated" if unmask_shortfall(h.accepted, h.uploaded, min_reports=30,
                                                 corruption_rate=0.45) == 0 else "abandoned"
                for h in colluded]
    assert [h.status for h in colluded] == expected
    refused = [h for h in colluded if h.status == "abandoned" and h.accepted >= 30]
    assert refused, "the rule must refuse a round the old rule unmasked"
    assert all("17 honest noises" in h.message and "nothing was unmasked" in h.message
               for h in refused)
