"""Keystroke replay of held-out device sessions under every arm.

A session's keystrokes are the successive prefixes (by character) of the text typed
when the sticker was sent. Each distinct ``(language, prefix)`` is matched once, each
distinct ``(cluster, match)`` featurised once (``RankingContext.match_features``); every
arm then scores the same features, and the row is the top ``k`` eligible candidates
(see :mod:`evaluation._metrics`). Devices only use history from before the split: each
reranker arm's personal embedding is what the phone derives for that arm's global
weights — the ridge fold-in of its pre-split sessions refined against the model
(``RerankerTask.personalize``), as it does whenever a new model version arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from data import progress
from evaluation._errors import EvaluationError
from evaluation._metrics import first_hit_keystroke, hit_at, sent_rank, visible_rows
from keyword_index import Match
from reranker import (
    RankingContext,
    RerankerTask,
    build_sessions,
    fold_in,
    score_impressions,
    stage1_order_scores,
)

__all__ = [
    "ARM_LABELS",
    "Arm",
    "HeldOutSample",
    "ReplayResult",
    "control_arm",
    "package_popularity",
    "personalized_embeddings",
    "popularity_arm",
    "replay",
    "reranker_arm",
    "sample_held_out",
]

ARM_LABELS: dict[str, str] = {
    "control": "A · stage 1 only",
    "treatment": "B · federated DP reranker",
    "popularity": "popularity order",
    "central": "central reranker (non-private)",
}
"""Display names of the arms (control and treatment are the experiment; others references)."""

ArmScorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``(keyword (B, n, k), cluster (B,), device (B,)) -> scores (B, n)``; ``-inf`` = padding."""


@dataclass(frozen=True)
class Arm:
    """One way to order a cluster's candidates on a keystroke."""

    name: str
    label: str
    score: ArmScorer


def control_arm(context: RankingContext) -> Arm:
    """A: keyword-matched candidates first, each group in stage-1 order."""
    def score(keyword: np.ndarray, cluster: np.ndarray, device: np.ndarray) -> np.ndarray:
        return stage1_order_scores(keyword, context.prior, context.candidate_mask[cluster])
    return Arm("control", ARM_LABELS["control"], score)


def popularity_arm(context: RankingContext, popularity: np.ndarray) -> Arm:
    """Keyword-matched candidates first, each group by global package popularity.

    ``popularity`` (n_clusters, n_cand) float: ``log1p`` of each candidate's weight in
    the pre-split server log (ties keep stage-1 order).
    """
    def score(keyword: np.ndarray, cluster: np.ndarray, device: np.ndarray) -> np.ndarray:
        matched = keyword[:, :, 0] > 0
        return np.where(context.candidate_mask[cluster], matched * 1e3 + popularity[cluster],
                        -np.inf)
    return Arm("popularity", ARM_LABELS["popularity"], score)


def personalized_embeddings(context: RankingContext, sample: HeldOutSample,
                            theta: np.ndarray) -> np.ndarray:
    """Embeddings (N, d) the sampled phones derive for global weights ``theta``.

    Each phone folds its embedding in from its pre-split log and refines it against
    ``theta`` (:meth:`reranker.RerankerTask.personalize`), as it does whenever a new
    model version arrives; held-out sessions are never used.
    """
    sessions = build_sessions(context, sample.history_logs, user_ids=sample.user_ids,
                              show_progress=False)
    task = RerankerTask(context, sessions, split_ts=sample.split_ts)
    return task.personalize(np.asarray(theta, np.float32), np.arange(sample.user_ids.size))


def reranker_arm(name: str, context: RankingContext, theta: np.ndarray,
                 user_embeddings: np.ndarray) -> Arm:
    """A reranker with global weights ``theta`` (P,) and per-device embeddings (N, d)."""
    theta = np.asarray(theta, np.float32)

    def score(keyword: np.ndarray, cluster: np.ndarray, device: np.ndarray) -> np.ndarray:
        return score_impressions(theta, context.layout, user_embeddings[device],
                                 context.candidate_factors[cluster], keyword, context.prior,
                                 context.candidate_mask[cluster])
    return Arm(name, ARM_LABELS.get(name, name), score)


@dataclass
class HeldOutSample:
    """Held-out sessions of a device sample, sorted by device then time.

    Attributes
    ----------
    user_ids : ndarray of int32, shape (N,)
        The sampled users (device ``i`` is ``user_ids[i]``).
    embeddings : ndarray of float32, shape (N, d)
        Fold-in embeddings from pre-split history only (before personalisation).
    history_logs : polars.DataFrame
        The sampled devices' pre-split device logs (what their phones hold).
    history : ndarray of int64, shape (N,)
        Pre-split sessions of each device (user activity).
    device, cluster : ndarray, shape (S,)
    language, text : list of str, length S
    sent_sticker, sent_package : ndarray of int32, shape (S,)
    split_ts : float
        Seconds since the epoch; held-out sessions were sent at or after it.
    """

    user_ids: np.ndarray
    embeddings: np.ndarray
    history: np.ndarray
    device: np.ndarray
    cluster: np.ndarray
    language: list[str]
    text: list[str]
    sent_sticker: np.ndarray
    sent_package: np.ndarray
    split_ts: float
    history_logs: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def n_sessions(self) -> int:
        """S."""
        return int(self.device.shape[0])


def _ts_seconds(col: str = "ts") -> pl.Expr:
    return pl.col(col).cast(pl.Int64) / 1000.0


def sample_held_out(context: RankingContext, split_ts: float, n_devices: int,
                    rng: np.random.Generator) -> HeldOutSample:
    """Sample ``n_devices`` users with held-out sessions; fold in their pre-split history.

    Only sessions in a language with a keyword index, of users stage 1 clustered, count.

    Raises
    ------
    EvaluationError
        If no user has a held-out session.
    """
    logs = context.dataset.table("device_logs").filter(
        pl.col("language").is_in(context.languages))
    held_users = np.unique(logs.filter(_ts_seconds() >= split_ts)["user_id"].to_numpy())
    held_users = held_users[np.asarray(context.stage1.cluster_of(held_users)) >= 0]
    if held_users.size < 2:
        raise EvaluationError(
            f"{held_users.size} users have sessions after the split "
            f"(split_ts={split_ts:.0f}); the A/B replay needs at least 2")
    users = np.sort(rng.choice(held_users, size=min(n_devices, held_users.size),
                               replace=False)).astype(np.int32)
    dev = pl.DataFrame({"user_id": users, "device": np.arange(users.size, dtype=np.int64)})
    mine = logs.join(dev, on="user_id", how="inner").sort("device", "ts")
    before = mine.filter(_ts_seconds() < split_ts)
    after = mine.filter(_ts_seconds() >= split_ts)
    s1 = context.stage1
    factors = s1.package_factors.astype(np.float32)
    rows = np.array([context.package_row.get(p, -1)
                     for p in before["package_id"].to_list()], dtype=np.int64)
    embeddings = fold_in(before["device"].to_numpy(), rows, users.size, factors,
                         factors.T.astype(np.float64) @ factors.astype(np.float64),
                         float(s1.config.regularization), float(s1.config.als.alpha))
    return HeldOutSample(
        user_ids=users, embeddings=embeddings,
        history_logs=before.drop("device"),
        history=np.bincount(before["device"].to_numpy(), minlength=users.size),
        device=after["device"].to_numpy(),
        cluster=np.asarray(s1.cluster_of(after["user_id"].to_numpy()), dtype=np.int64),
        language=after["language"].to_list(), text=after["text"].to_list(),
        sent_sticker=after["sticker_id"].to_numpy().astype(np.int32),
        sent_package=after["package_id"].to_numpy().astype(np.int32), split_ts=split_ts)


def package_popularity(context: RankingContext, split_ts: float) -> np.ndarray:
    """(n_clusters, n_cand) ``log1p`` of each candidate's pre-split server-log weight."""
    inter = context.dataset.table("interactions").filter(_ts_seconds() < split_ts)
    weight = inter.group_by("package_id").agg(pl.col("weight").sum())
    lookup = dict(weight.iter_rows())
    ids = context.candidate_ids
    flat = np.array([lookup.get(int(p), 0.0) for p in ids.ravel().tolist()], dtype=np.float64)
    return np.log1p(flat).reshape(ids.shape) * context.candidate_mask


@dataclass
class ReplayResult:
    """Per-session outcomes of every arm.

    Attributes
    ----------
    k : int
    arms : list of str
    rank : dict of str to ndarray of int64, shape (S,)
        Rank of the sent sticker at send time (``-1`` = not shown).
    first_hit : dict of str to ndarray of int64, shape (S,)
        Characters typed when the row first showed it (``-1`` = never).
    text_length : ndarray of int64, shape (S,)
    reachable : ndarray of bool, shape (S,)
        Stage 1 shortlisted the sent package for the user's cluster.
    stickers_shown, packages_shown : dict of str to ndarray of bool
        Indexed by sticker / package id: shown in some row of the arm.
    n_keystrokes : int
    """

    k: int
    arms: list[str]
    rank: dict[str, np.ndarray]
    first_hit: dict[str, np.ndarray]
    text_length: np.ndarray
    reachable: np.ndarray
    stickers_shown: dict[str, np.ndarray] = field(default_factory=dict)
    packages_shown: dict[str, np.ndarray] = field(default_factory=dict)
    n_keystrokes: int = 0


def _keystrokes(sample: HeldOutSample) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Session (K,), characters typed (K,) and (language, prefix) of every keystroke."""
    session: list[int] = []
    typed: list[int] = []
    prefixes: list[tuple[str, str]] = []
    for s, (language, text) in enumerate(zip(sample.language, sample.text, strict=True)):
        lengths = range(1, len(text) + 1) if text else range(0, 1)
        for i in lengths:
            session.append(s)
            typed.append(i)
            prefixes.append((language, text[:i]))
    return np.asarray(session, np.int64), np.asarray(typed, np.int64), prefixes


def replay(context: RankingContext, sample: HeldOutSample, arms: list[Arm], k: int, *,
           chunk: int = 4096, show_progress: bool = True) -> ReplayResult:
    """Replay every keystroke of ``sample`` under ``arms``; rows of ``k`` stickers.

    Parameters
    ----------
    context : RankingContext
    sample : HeldOutSample
    arms : list of Arm
    k : int
        Row length.
    chunk : int
        Keystrokes scored together.
    show_progress : bool
    """
    session, typed, prefixes = _keystrokes(sample)
    n_keys_total = session.size
    cluster_of_stroke = sample.cluster[session]
    # distinct (language, prefix) → match signature → distinct (cluster, signature)
    signature: dict[bytes, int] = {}
    matches: list[Match] = []
    sig_of_prefix: dict[tuple[str, str], int] = {}
    for language, prefix in prefixes:
        if (language, prefix) in sig_of_prefix:
            continue
        m = context.indexes[language].match(prefix)
        raw = m.label_ids.tobytes() + m.strengths.tobytes() + m.kinds.tobytes()
        if raw not in signature:
            signature[raw] = len(matches)
            matches.append(m)
        sig_of_prefix[(language, prefix)] = signature[raw]
    sig = np.array([sig_of_prefix[p] for p in prefixes], dtype=np.int64)
    pair = cluster_of_stroke * (len(matches) + 1) + sig
    pairs, key = np.unique(pair, return_inverse=True)  # sorted by cluster: cache-friendly
    n_cand = context.candidate_ids.shape[1]
    n_feat = context.layout.n_keyword_features
    shown = np.full((pairs.size, n_cand), -1, np.int32)
    key_pos: list[np.ndarray] = []
    key_feat: list[np.ndarray] = []
    with progress("featurising keystrokes", total=pairs.size, show=show_progress) as bar:
        for i, p in enumerate(pairs.tolist()):
            feats, shown[i] = context.match_features(p // (len(matches) + 1),
                                                     matches[p % (len(matches) + 1)])
            nz = np.flatnonzero(np.any(feats != 0, axis=1))
            key_pos.append(nz)
            key_feat.append(feats[nz])
            bar.advance()
    ptr = np.zeros(pairs.size + 1, np.int64)
    ptr[1:] = np.cumsum([x.size for x in key_pos])
    flat_pos = np.concatenate(key_pos) if key_pos else np.zeros(0, np.int64)
    flat_feat = (np.concatenate(key_feat) if key_feat
                 else np.zeros((0, n_feat), np.float32))

    n_sessions = sample.n_sessions
    text_length = np.array([len(t) for t in sample.text], np.int64)
    is_last = typed == np.maximum(text_length[session], 0)
    n_stickers = int(context.dataset.table("stickers")["sticker_id"].to_numpy().max()) + 1
    n_packages = int(context.dataset.table("packages")["package_id"].to_numpy().max()) + 1
    rank = {a.name: np.full(n_sessions, -1, np.int64) for a in arms}
    hits = {a.name: np.zeros(n_keys_total, bool) for a in arms}
    stickers_shown = {a.name: np.zeros(n_stickers, bool) for a in arms}
    packages_shown = {a.name: np.zeros(n_packages, bool) for a in arms}
    with progress("replaying keystrokes", total=n_keys_total, show=show_progress) as bar:
        for lo in range(0, n_keys_total, chunk):
            sl = slice(lo, min(lo + chunk, n_keys_total))
            keys, sess = key[sl], session[sl]
            cl, dev = cluster_of_stroke[sl], sample.device[sess]
            keyword = np.zeros((keys.size, n_cand, n_feat), np.float32)
            start, stop = ptr[keys], ptr[keys + 1]
            counts = stop - start
            if counts.sum():
                rows = np.repeat(np.arange(keys.size), counts)
                src = np.concatenate([np.arange(a, b) for a, b in zip(start, stop, strict=True)])
                keyword[rows, flat_pos[src]] = flat_feat[src]
            shown_b = shown[keys]
            sent = sample.sent_sticker[sess]
            last = is_last[sl]
            for arm in arms:
                scores = arm.score(keyword, cl, dev)
                r = sent_rank(scores, shown_b, sent)
                hits[arm.name][sl] = hit_at(r, k)
                rank[arm.name][sess[last]] = r[last]
                row = visible_rows(scores, shown_b, k)
                ok = row >= 0
                safe = np.maximum(row, 0)
                stickers_shown[arm.name][np.take_along_axis(shown_b, safe, 1)[ok]] = True
                packages_shown[arm.name][context.candidate_ids[cl[:, None], safe][ok]] = True
            bar.advance(keys.size)
    first = {a.name: first_hit_keystroke(hits[a.name], session, typed, n_sessions)
             for a in arms}
    cand = context.candidate_ids[sample.cluster]
    reachable = (cand == sample.sent_package[:, None]).any(axis=1)
    return ReplayResult(k=k, arms=[a.name for a in arms], rank=rank, first_hit=first,
                        text_length=text_length, reachable=reachable,
                        stickers_shown=stickers_shown, packages_shown=packages_shown,
                        n_keystrokes=n_keys_total)
