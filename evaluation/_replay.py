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
from evaluation._baselines import KEY_WEIGHT, MATCHED_WEIGHT, DeviceHistory, Holdings
from evaluation._errors import EvaluationError
from evaluation._metrics import first_hit_keystroke, hit_at, sent_rank, visible_rows
from keyword_index import Match
from reranker import (
    ParameterLayout,
    RankingContext,
    RerankerTask,
    RowReplay,
    build_sessions,
    fold_in,
    score_impressions,
    stage1_order_scores,
)

__all__ = [
    "ARM_LABELS",
    "BASELINE_ARMS",
    "Arm",
    "HeldOutSample",
    "KeystrokeBatch",
    "ReplayResult",
    "control_arm",
    "device_counts_arm",
    "package_popularity",
    "personalized_embeddings",
    "popularity_arm",
    "recents_arm",
    "replay",
    "reranker_arm",
    "row_arm",
    "sample_held_out",
    "segment_popularity_arm",
]

ARM_LABELS: dict[str, str] = {
    "control": "A · stage-1 order",
    "treatment": "B · federated DP reranker",
    "popularity": "global popularity",
    "central": "central reranker (non-private)",
    "recents": "recents row (own sent stickers)",
    "owned": "owned row (held stickers, sent first)",
    "owned_by_match": "owned row (held stickers, best match first)",
    "device_counts": "device send counts",
    "segment_popularity": "segment popularity",
    "fold_in_only": "fold-in only (no federated training)",
    "treatment_explore": "B + 1 exploration slot (best candidate new to the device)",
}
"""Display names of the arms (control and treatment are the experiment; others references)."""

BASELINE_ARMS: tuple[str, ...] = ("recents", "owned", "owned_by_match", "device_counts",
                                  "segment_popularity", "popularity", "fold_in_only")
"""Arms that need no federated training: the treatment's headline is against the best."""

@dataclass
class KeystrokeBatch:
    """Keystrokes scored together, with everything an arm may look at.

    Attributes
    ----------
    keyword : ndarray of float32, shape (B, n_cand, k)
        Keyword features of the keystroke's cluster candidates.
    shown : ndarray of int32, shape (B, n_cand)
        Sticker each candidate package shows for the text (``-1``: none).
    cluster, device, session, signature : ndarray of int64, shape (B,)
        The keystroke's cluster, device (index into the sample), session and match
        signature (index into the replay's distinct matches).
    label_keys : ndarray of int64, shape (M,)
        Sorted ``signature * n_label_slots + label`` of every matched label.
    n_label_slots : int
    matches : list of keyword_index.Match
        The replay's distinct matches (``signature`` indexes them).
    label_strengths : ndarray of float32, shape (M,)
        Match strength of each of ``label_keys``.
    """

    keyword: np.ndarray
    shown: np.ndarray
    cluster: np.ndarray
    device: np.ndarray
    session: np.ndarray
    signature: np.ndarray
    label_keys: np.ndarray
    n_label_slots: int
    matches: list[Match] = field(default_factory=list)
    label_strengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def matched(self) -> np.ndarray:
        """(B, n_cand) bool: the candidate package has a sticker matching the text."""
        return np.asarray(self.keyword[:, :, 0] > 0)


ArmScorer = Callable[[KeystrokeBatch], tuple[np.ndarray, np.ndarray]]
"""``batch -> (scores (B, L), stickers (B, L))``: higher first, ``-inf`` = not eligible."""


@dataclass(frozen=True)
class Arm:
    """One way to fill the row on a keystroke.

    ``score`` returns a score and a sticker per slot; the row is the ``k`` best eligible
    slots (ties: earlier slot first). Candidate arms score the cluster's packages (each
    showing one sticker); others (``recents``) bring their own stickers.
    """

    name: str
    label: str
    score: ArmScorer


def control_arm(context: RankingContext) -> Arm:
    """A: keyword-matched candidates first, each group in stage-1 order."""
    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        return (stage1_order_scores(batch.keyword, context.prior,
                                    context.candidate_mask[batch.cluster]), batch.shown)
    return Arm("control", ARM_LABELS["control"], score)


def popularity_arm(context: RankingContext, popularity: np.ndarray) -> Arm:
    """Keyword-matched candidates first, each group by global package popularity.

    ``popularity`` (n_clusters, n_cand) float: ``log1p`` of each candidate's weight in
    the pre-split server log (ties keep stage-1 order).
    """
    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        return (np.where(context.candidate_mask[batch.cluster],
                         batch.matched * 1e3 + popularity[batch.cluster], -np.inf),
                batch.shown)
    return Arm("popularity", ARM_LABELS["popularity"], score)


def segment_popularity_arm(context: RankingContext, keys: np.ndarray) -> Arm:
    """Keyword-matched candidates first, then by popularity in the device's segment.

    ``keys`` (N, n_cand) from :func:`~evaluation._baselines.segment_popularity_scores`.
    """
    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        value = batch.matched * MATCHED_WEIGHT + keys[batch.device] + context.prior
        return (np.where(context.candidate_mask[batch.cluster], value, -np.inf), batch.shown)
    return Arm("segment_popularity", ARM_LABELS["segment_popularity"], score)


def _history_matches(history: DeviceHistory, sticker_labels: np.ndarray, batch: KeystrokeBatch
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return history.matching_entries(batch.session, batch.signature, batch.label_keys,
                                    sticker_labels, batch.n_label_slots, batch.label_strengths)


def recents_arm(history: DeviceHistory, sticker_labels: np.ndarray,
                name: str = "recents", by_match: bool = False) -> Arm:
    """The keyboard's recents row: own earlier-sent stickers matching the text.

    Ordered by recency-weighted send count (:class:`DeviceHistory`); stage 1 plays no
    part. ``sticker_labels`` (n_stickers, 3) int32, ``-1`` padded. Given a history built
    ``with_holdings``, it is the ``owned`` row: every held sticker matching the text,
    sent ones first. ``by_match``: order by the sticker's match strength first (a whole
    keyword at the end before a keyword being typed), that order breaking its ties.
    """
    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        row, col, entry, strength = _history_matches(history, sticker_labels, batch)
        width = max(int(col.max()) + 1 if col.size else 1, 1)
        scores = np.full((batch.session.size, width), -np.inf)
        items = np.full((batch.session.size, width), -1, np.int32)
        scores[row, col] = history.score[entry] + (strength * KEY_WEIGHT if by_match else 0.0)
        items[row, col] = history.sticker[entry]
        return scores, items
    return Arm(name, ARM_LABELS.get(name, name), score)


def device_counts_arm(context: RankingContext, history: DeviceHistory,
                      sticker_labels: np.ndarray) -> Arm:
    """Stage-1 candidates by this device's decayed send counts (package, then sticker).

    Keyword-matched candidates first; then by the device's recency-weighted sends of
    the package; then stage-1 order. A package shows the device's most-sent sticker of
    it that matches the text, else its default sticker. No history = stage-1 order.
    """
    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        counts = history.package_score[batch.session]
        key = np.where(counts > 0, (1000.0 + np.log(np.maximum(counts, 1e-300))) * KEY_WEIGHT, 0.0)
        value = batch.matched * MATCHED_WEIGHT + key + context.prior
        scores = np.where(context.candidate_mask[batch.cluster], value, -np.inf)
        shown = batch.shown.copy()
        row, _, entry, _ = _history_matches(history, sticker_labels, batch)
        pos = history.cand_pos[entry].astype(np.int64)
        ok = pos >= 0
        row, pos, entry = row[ok], pos[ok], entry[ok]
        # entries are best first within a keystroke: the first per package wins
        _, first = np.unique(row * shown.shape[1] + pos, return_index=True)
        shown[row[first], pos[first]] = history.sticker[entry[first]]
        return scores, shown
    return Arm("device_counts", ARM_LABELS["device_counts"], score)


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

    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        return (score_impressions(theta, context.layout, user_embeddings[batch.device],
                                  context.candidate_factors[batch.cluster], batch.keyword,
                                  context.prior, context.candidate_mask[batch.cluster]),
                batch.shown)
    return Arm(name, ARM_LABELS.get(name, name), score)


def row_arm(name: str, row: RowReplay, theta: np.ndarray, layout: ParameterLayout,
            user_embeddings: np.ndarray, *, explore_slots: int = 0, k: int = 5) -> Arm:
    """A sticker-row model (``layout.n_history_features > 0``): on each keystroke, every
    matching sticker of the device's catalogue view (its cluster's stage-1 packages and
    the packages it holds or has sent from), scored with its history as of that send
    (:class:`reranker.RowReplay`); with ``explore_slots``, the row of ``k`` gives its
    last slot(s) to the best candidates new to the device when it shows none."""
    theta = np.asarray(theta, np.float32)

    def score(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        return row.score_keystrokes(theta, layout, user_embeddings, batch.session,
                                    batch.signature, batch.matches,
                                    explore_slots=explore_slots, k=k)
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
    ts : ndarray of float64, shape (S,)
        Send time of each held-out session (seconds since the epoch).
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
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def device_history(self, context: RankingContext, half_life_days: float, *,
                       with_holdings: bool = False) -> DeviceHistory:
        """Each held-out session's view of its device's earlier sends (pre-split and held-out).

        Parameters
        ----------
        context : RankingContext
        half_life_days : float
            Half-life of a send's weight in the recency-weighted counts.
        with_holdings : bool
            Also list every sticker of the packages the device holds at each session's
            time (the ``owned`` baseline): from the dataset's private ``device_library``
            when it has one (what the phone knows it holds, subscription included), else
            the user's own purchases and downloads in the interaction log.
        """
        device_of = {int(u): i for i, u in enumerate(self.user_ids.tolist())}
        hist = self.history_logs
        holdings = None
        if with_holdings:
            table = ("device_library" if context.dataset.has("device_library")
                     else "interactions")
            lib = context.dataset.table(table).filter(
                pl.col("user_id").is_in(self.user_ids.tolist()))
            holdings = Holdings.build(
                self.user_ids.size,
                np.array([device_of[int(u)] for u in lib["user_id"].to_list()], np.int64),
                lib["package_id"].to_numpy(), lib["ts"].dt.epoch("ms").to_numpy() / 1000.0,
                context.dataset.table("stickers"))
        return DeviceHistory.build(
            context, self.device, self.ts, self.cluster, self.sent_sticker, self.sent_package,
            np.array([device_of[int(u)] for u in hist["user_id"].to_list()], np.int64),
            hist["ts"].dt.epoch("ms").to_numpy() / 1000.0,
            hist["sticker_id"].to_numpy(), hist["package_id"].to_numpy(), half_life_days,
            holdings=holdings)

    @property
    def n_sessions(self) -> int:
        """S."""
        return int(self.device.shape[0])


def _ts_seconds(col: str = "ts") -> pl.Expr:
    return pl.col(col).dt.epoch("ms") / 1000.0


def sample_held_out(context: RankingContext, split_ts: float, n_devices: int,
                    rng: np.random.Generator, exclude_users: np.ndarray | None = None
                    ) -> HeldOutSample:
    """Sample ``n_devices`` users with held-out sessions; fold in their pre-split history.

    Only sessions in a language with a keyword index, of users stage 1 clustered, count.
    ``exclude_users`` (validation devices, used for tuning) are never sampled.

    Raises
    ------
    EvaluationError
        If no user has a held-out session.
    """
    logs = context.dataset.table("device_logs").filter(
        pl.col("language").is_in(context.languages))
    held_users = np.unique(logs.filter(_ts_seconds() >= split_ts)["user_id"].to_numpy())
    held_users = held_users[np.asarray(context.stage1.cluster_of(held_users)) >= 0]
    if exclude_users is not None and exclude_users.size:
        held_users = held_users[~np.isin(held_users, exclude_users)]
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
        sent_package=after["package_id"].to_numpy().astype(np.int32), split_ts=split_ts,
        ts=after["ts"].dt.epoch("ms").to_numpy() / 1000.0)


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
    n_label_slots = int(context.label_embeddings.shape[0]) + 1
    raw_keys = np.concatenate(
        [i * n_label_slots + m.label_ids[m.strengths > 0].astype(np.int64)
         for i, m in enumerate(matches)] or [np.zeros(0, np.int64)])
    raw_strengths = np.concatenate(
        [m.strengths[m.strengths > 0] for m in matches] or [np.zeros(0, np.float32)])
    label_keys, key_at = np.unique(raw_keys, return_index=True)  # a label is once per match
    label_strengths = raw_strengths[key_at].astype(np.float32)
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
    sticker_table = context.dataset.table("stickers")
    n_stickers = int(sticker_table["sticker_id"].to_numpy().max()) + 1
    n_packages = int(context.dataset.table("packages")["package_id"].to_numpy().max()) + 1
    package_of = np.full(n_stickers, -1, np.int64)
    package_of[sticker_table["sticker_id"].to_numpy()] = sticker_table["package_id"].to_numpy()
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
            batch = KeystrokeBatch(keyword=keyword, shown=shown[keys], cluster=cl, device=dev,
                                   session=sess, signature=sig[sl], label_keys=label_keys,
                                   n_label_slots=n_label_slots, matches=matches,
                                   label_strengths=label_strengths)
            sent = sample.sent_sticker[sess]
            last = is_last[sl]
            for arm in arms:
                scores, items = arm.score(batch)
                r = sent_rank(scores, items, sent)
                hits[arm.name][sl] = hit_at(r, k)
                rank[arm.name][sess[last]] = r[last]
                row = visible_rows(scores, items, k)
                ok = row >= 0
                visible = np.take_along_axis(items, np.maximum(row, 0), 1)[ok]
                stickers_shown[arm.name][visible] = True
                packages_shown[arm.name][package_of[visible]] = True
            bar.advance(keys.size)
    first = {a.name: first_hit_keystroke(hits[a.name], session, typed, n_sessions)
             for a in arms}
    cand = context.candidate_ids[sample.cluster]
    reachable = (cand == sample.sent_package[:, None]).any(axis=1)
    return ReplayResult(k=k, arms=[a.name for a in arms], rank=rank, first_hit=first,
                        text_length=text_length, reachable=reachable,
                        stickers_shown=stickers_shown, packages_shown=packages_shown,
                        n_keystrokes=n_keys_total)
