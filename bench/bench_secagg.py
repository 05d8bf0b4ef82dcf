"""SecAgg+ cost per client and per server: ours beside Flower's SecAgg+ in the same run.

Both run the four SecAgg+ stages (keys, shares, masked input, unmasking) on n clients
with d = 1,076 (the reranker's P for the sticker row; ``--dimension``), the same
neighbour degree k and threshold t (ours, from
:func:`federated.choose_degree_and_threshold` with 10% dropout and 5% corruption), and
10% of the clients dropping out after sharing their keys (the costly case: their
pairwise masks must be reconstructed and removed). Flower's side calls the client
stage functions of ``flwr.client.mod.secure_aggregation.secaggplus_mod`` (``_setup``,
``_share_keys``, ``_collect_masked_vectors``, ``_unmask``) and, for the server, the
primitives its ``SecAggPlusWorkflow`` unmasking loop uses (``combine_shares``,
``pseudo_rand_gen``, ``generate_shared_key``) in the same order; routing and transport
are left out on both sides (bytes are counted from the payloads). Flower's masks come
from 32-bit seeds expanded by numpy's Mersenne twister (flwr issue 7522); ours from
256-bit seeds through AES-256-CTR, and ours adds the Ed25519 consistency round.

CPU time is ``time.process_time`` around each side's calls; per client = total over
clients / n. Bytes per client = what one client sends plus what it receives (mean).
Needs the ``bench`` extra (``pip install -e .[bench]``) for Flower.

Flower at n = 10,000 takes over an hour of CPU on one core (its server unmasking is
~0.17 s per client), so above ``--flower-max-n`` (default 1,000) Flower runs on a
*subset*: ``--flower-max-n`` clients on a ring of the same degree k and threshold t as
the full cohort, with the same 10% dropout. With k fixed, every client's work and
traffic depend on k and d only, and the server's work is a sum over survivors and
dropped clients of per-client costs that depend on k and d only, so per-client figures
are taken as measured and the server time is scaled by n / n_subset. Those rows are
labelled ``flower (extrapolated ...)`` in the table and ``"extrapolated_from"`` in the
JSON; ours always runs the full n.
"""

from __future__ import annotations

import argparse
import importlib
import io
import time
from typing import Any

import numpy as np

from bench._results import write_results
from federated.secagg import (
    Message,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    choose_degree_and_threshold,
)

__all__ = ["main"]

DIMENSION = 1076
DROPOUT = 0.1


def _ours(n: int, x: np.ndarray, k: int, t: int, dropped: set[int]) -> dict[str, float]:
    params = SecAggParams(n, k, t, 32, x.shape[1])
    client_cpu = server_cpu = 0.0
    sent = received = 0
    t0 = time.process_time()
    server = SecAggServer(params)
    outgoing: dict[int, Message] = dict(server.setup_messages())
    server_cpu += time.process_time() - t0
    clients = [SecAggClient(x[u]) for u in range(n)]
    for stage in range(5):
        replies = []
        for u, m in outgoing.items():
            if stage == 2 and u in dropped:
                continue  # drops out after sharing keys
            data = m.to_bytes()
            received += len(data)
            t0 = time.process_time()
            reply = clients[u].handle(Message.from_bytes(data))
            out = reply.to_bytes()
            client_cpu += time.process_time() - t0
            sent += len(out)
            replies.append(out)
        t0 = time.process_time()
        for data in replies:
            server.receive(Message.from_bytes(data))
        outgoing = server.advance()
        server_cpu += time.process_time() - t0
    survivors = [u for u in range(n) if u not in dropped]
    expected = (x[survivors].astype(np.uint64).sum(0) % (1 << 32)).astype(np.uint32)
    if server.result is None or not np.array_equal(server.result, expected):
        raise AssertionError("our SecAgg+ sum is wrong")
    return {"client_cpu_s": client_cpu / n, "server_cpu_s": server_cpu,
            "client_bytes": (sent + received) / n}


def _flower(n: int, x: np.ndarray, k: int, t: int, dropped: set[int]) -> dict[str, float]:
    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    from flwr.common import ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    mod_range = 1 << 32
    half = k // 2
    ids = list(range(1, n + 1))  # Flower node ids
    ring = {ids[i]: [ids[(i + off) % n] for off in range(-half, half + 1)] for i in range(n)}
    client_cpu = server_cpu = 0.0
    sent = received = 0
    states: dict[int, Any] = {}
    pks: dict[int, tuple[bytes, bytes]] = {}
    for nid in ids:
        t0 = time.process_time()
        state = mod.SecAggPlusState(nid=nid)
        out = mod._setup(state, {Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: k + 1,
                                 Key.THRESHOLD: t, Key.CLIPPING_RANGE: 8.0,
                                 Key.TARGET_RANGE: 1 << 22, Key.MOD_RANGE: mod_range,
                                 Key.MAX_WEIGHT: 1000.0})
        client_cpu += time.process_time() - t0
        states[nid] = state
        pks[nid] = (out[Key.PUBLIC_KEY_1], out[Key.PUBLIC_KEY_2])
        sent += len(pks[nid][0]) + len(pks[nid][1])
    cipher: dict[int, dict[int, bytes]] = {nid: {} for nid in ids}
    for nid in ids:
        keys = {v: pks[v] for v in ring[nid]}
        received += sum(len(a) + len(b) for a, b in keys.values())
        t0 = time.process_time()
        out = mod._share_keys(states[nid], keys)
        client_cpu += time.process_time() - t0
        for dst, ct in zip(out[Key.DESTINATION_LIST], out[Key.CIPHERTEXT_LIST], strict=True):
            cipher[dst][nid] = ct
            sent += len(ct)
    masked: dict[int, list[np.ndarray]] = {}
    for nid in ids:
        if nid - 1 in dropped:
            continue
        srcs = sorted(cipher[nid])
        cts = [cipher[nid][s] for s in srcs]
        received += sum(len(c) for c in cts)
        params = ndarrays_to_parameters([x[nid - 1].astype(np.float32) * 1e-6])
        t0 = time.process_time()
        out = mod._collect_masked_vectors(
            states[nid], {Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: srcs}, 1, params)
        client_cpu += time.process_time() - t0
        blobs = out[Key.MASKED_PARAMETERS]
        masked[nid] = [np.load(io.BytesIO(b)) for b in blobs]
        sent += sum(len(b) for b in blobs)
    active = sorted(masked)
    dead = [nid for nid in ids if nid not in masked]
    shares: dict[int, list[bytes]] = {nid: [] for nid in ids}
    for nid in active:
        cfg = {Key.ACTIVE_NODE_ID_LIST: [v for v in ring[nid] if v in masked],
               Key.DEAD_NODE_ID_LIST: [v for v in ring[nid] if v not in masked]}
        t0 = time.process_time()
        out = mod._unmask(states[nid], cfg)
        client_cpu += time.process_time() - t0
        for owner, share in zip(out[Key.NODE_ID_LIST], out[Key.SHARE_LIST], strict=True):
            shares[owner].append(share)
            sent += len(share)
    # server: sum the masked vectors and remove the masks, as SecAggPlusWorkflow does
    t0 = time.process_time()
    total = [np.zeros_like(masked[active[0]][0])]
    for nid in active:
        total = parameters_addition(total, masked[nid])
    shape = [a.shape for a in total]
    for nid, share_list in shares.items():
        secret = combine_shares(share_list)
        if nid in masked:
            total = parameters_subtraction(total, pseudo_rand_gen(secret, mod_range, shape))
        else:
            for nb in ring[nid]:
                if nb == nid or nb not in masked:
                    continue
                key = generate_shared_key(bytes_to_private_key(secret),
                                          bytes_to_public_key(pks[nb][0]))
                mask = pseudo_rand_gen(key, mod_range, shape)
                total = (parameters_addition(total, mask) if nid > nb
                         else parameters_subtraction(total, mask))
    total = parameters_mod(total, mod_range)
    server_cpu += time.process_time() - t0
    del dead
    return {"client_cpu_s": client_cpu / n, "server_cpu_s": server_cpu,
            "client_bytes": (sent + received) / n}


def main(argv: list[str]) -> int:
    """Run the benchmark; ``--sizes 100,1000,10000`` picks the cohort sizes."""
    parser = argparse.ArgumentParser(prog="bench_secagg")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--dimension", type=int, default=DIMENSION,
                        help="d, the length of every input (default: the reranker's P).")
    parser.add_argument("--flower-max-n", type=int, default=1000,
                        help="Above this n, Flower runs on this many clients with the "
                             "full cohort's k and t, and its server time is extrapolated.")
    parser.add_argument("--no-flower", action="store_true", help="Skip Flower's side.")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    d = args.dimension
    rows: list[list[object]] = []
    results: dict[str, Any] = {}
    for n in sizes:
        k, t = choose_degree_and_threshold(n, dropout_rate=DROPOUT, corruption_rate=0.05)
        print(f"  ours: n={n}, k={k}, t={t}, d={d} ...", flush=True)
        x, dropped = _cohort(n, d)
        r = _ours(n, x, k, t, dropped)
        results[f"ours/{n}"] = r
        rows.append(["ours", n, k, t, r["client_cpu_s"] * 1e3, r["server_cpu_s"],
                     r["client_bytes"] / 1024])
        if args.no_flower:
            continue
        n_run = min(n, args.flower_max_n)
        if n_run <= k + 1:
            raise SystemExit(f"--flower-max-n={args.flower_max_n} should be > k + 1 = {k + 1} "
                             f"(a ring of degree k={k} needs more clients)")
        print(f"  flower: n={n_run}, k={k}, t={t}, d={d} ...", flush=True)
        x, dropped = _cohort(n_run, d)
        fl = _flower(n_run, x, k, t, dropped)
        label = "flower"
        if n_run < n:
            fl = {**fl, "server_cpu_s": fl["server_cpu_s"] * n / n_run,
                  "measured_server_cpu_s": fl["server_cpu_s"], "extrapolated_from": n_run}
            label = f"flower (extrapolated from n={n_run})"
        results[f"flower/{n}"] = fl
        rows.append([label, n, k, t, fl["client_cpu_s"] * 1e3, fl["server_cpu_s"],
                     fl["client_bytes"] / 1024])
        rows.append(["ours / flower", n, k, t, r["client_cpu_s"] / fl["client_cpu_s"],
                     r["server_cpu_s"] / fl["server_cpu_s"],
                     r["client_bytes"] / fl["client_bytes"]])
    write_results("secagg", ["implementation", "n", "k", "t", "client CPU (ms)",
                             "server CPU (s)", "client traffic (KiB)"], rows,
                  {"dimension": d, "dropout": DROPOUT, "flower_max_n": args.flower_max_n,
                   "results": results})
    return 0


def _cohort(n: int, d: int) -> tuple[np.ndarray, set[int]]:
    """Inputs (n, d) uint32 and the 10% of clients that drop out, from seed n."""
    rng = np.random.default_rng(n)
    x = rng.integers(0, 1 << 32, size=(n, d), dtype=np.uint64).astype(np.uint32)
    return x, set(rng.choice(n, size=int(DROPOUT * n), replace=False).tolist())
