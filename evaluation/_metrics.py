"""Ranking metrics of the visible sticker row, per impression and per session.

Conventions (shared by every arm):

- An impression is one keystroke: scores (B, n) over a cluster's candidates and the
  sticker each candidate would show, ``shown`` (B, n) (``-1`` = nothing to show).
  Candidates with a non-finite score or nothing to show are not *eligible*.
- The row is the top ``k`` eligible candidates by score; ties go to the earlier
  candidate (stage-1 order), as in ``reranker.hits_at``.
- The *rank* of the sent sticker is its 0-based position in that full ordering, or
  ``-1`` when no eligible candidate shows it (stage 1 did not shortlist its package,
  or the package shows another of its stickers for this text): such a session is a
  miss for every metric.

Every per-session metric of the report is declared once, in :data:`METRICS`: its key, its
function of the send-time ranks and the sentence that defines it in the report. The
analysis (:func:`session_metrics`, :func:`metric_names`), every table and figure of the
report and its definitions pick it up from there, so adding a metric is one entry here
(plus its test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "KEYSTROKE_NEVER",
    "METRICS",
    "Metric",
    "catalogue_coverage",
    "first_hit_keystroke",
    "hit_at",
    "keystroke_summary",
    "metric_definitions",
    "metric_names",
    "ndcg_at",
    "reciprocal_rank",
    "sent_rank",
    "session_metrics",
    "visible_rows",
]

KEYSTROKE_NEVER = -1
"""Keystrokes-to-hit of a session whose row never showed the sent sticker (censored)."""


def _eligible(scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    return np.isfinite(scores) & (shown >= 0)


def sent_rank(scores: np.ndarray, shown: np.ndarray, sent_sticker: np.ndarray) -> np.ndarray:
    """0-based rank of the sent sticker among eligible candidates, ``-1`` if not shown.

    Parameters
    ----------
    scores : ndarray of float, shape (B, n)
        Candidate scores (``-inf`` = not eligible).
    shown : ndarray of int, shape (B, n)
        Sticker each candidate shows (``-1`` = none).
    sent_sticker : ndarray of int, shape (B,)
        The sticker that was sent.

    Returns
    -------
    ndarray of int64, shape (B,)
    """
    eligible = _eligible(scores, shown)
    is_sent = eligible & (shown == np.asarray(sent_sticker)[:, None])
    found = is_sent.any(axis=1)
    p = is_sent.argmax(axis=1)
    rows = np.arange(scores.shape[0])
    s_p = scores[rows, p][:, None]
    before = (eligible & (scores > s_p)).sum(axis=1)
    ties = (eligible & (scores == s_p) & (np.arange(scores.shape[1]) < p[:, None])).sum(axis=1)
    return np.where(found, before + ties, -1).astype(np.int64)


def visible_rows(scores: np.ndarray, shown: np.ndarray, k: int) -> np.ndarray:
    """Candidate positions (B, k) of the visible row, best first; ``-1`` pads short rows.

    Ties go to the earlier position (as a stable sort of the whole row would order them),
    found in linear time per row: the ``k``-th best score by partition, every position
    strictly above it, then the earliest positions equal to it until ``k`` are taken.
    """
    masked = np.where(_eligible(scores, shown), scores, -np.inf)
    b, n = masked.shape
    if n <= k:
        order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    else:
        kth = -np.partition(-masked, k - 1, axis=1)[:, k - 1:k]  # (B, 1)
        above = masked > kth
        equal = masked == kth
        room = k - above.sum(axis=1, keepdims=True)
        take = above | (equal & (np.cumsum(equal, axis=1) <= room))
        picked = np.nonzero(take)[1].reshape(b, k)  # position order within each row
        best = np.argsort(-np.take_along_axis(masked, picked, axis=1), axis=1, kind="stable")
        order = np.take_along_axis(picked, best, axis=1)
    ok = np.isfinite(np.take_along_axis(masked, order, axis=1))
    return np.where(ok, order, -1)


def hit_at(rank: np.ndarray, k: int) -> np.ndarray:
    """(B,) bool: the sent sticker is in the top ``k`` (``rank`` from :func:`sent_rank`)."""
    return (rank >= 0) & (rank < k)


def reciprocal_rank(rank: np.ndarray) -> np.ndarray:
    """(B,) float: ``1 / (rank + 1)`` over the full ordering, 0 when not shown."""
    return np.where(rank >= 0, 1.0 / (np.maximum(rank, 0) + 1.0), 0.0)


def ndcg_at(rank: np.ndarray, k: int) -> np.ndarray:
    """(B,) float: NDCG@k with the one sent sticker relevant, ``1 / log2(rank + 2)`` in the row."""
    return np.where(hit_at(rank, k), 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)


def first_hit_keystroke(hit: np.ndarray, session: np.ndarray, typed: np.ndarray,
                        n_sessions: int) -> np.ndarray:
    """Characters typed when each session's row first showed the sent sticker.

    Parameters
    ----------
    hit : ndarray of bool, shape (K,)
        Per keystroke: the sent sticker is in the row.
    session : ndarray of int, shape (K,)
        Session of each keystroke (0 .. n_sessions-1).
    typed : ndarray of int, shape (K,)
        Characters typed at that keystroke (1 for the first character).
    n_sessions : int

    Returns
    -------
    ndarray of int64, shape (n_sessions,)
        Smallest ``typed`` with a hit, :data:`KEYSTROKE_NEVER` if none.
    """
    big = np.iinfo(np.int64).max
    first = np.full(n_sessions, big, np.int64)
    np.minimum.at(first, session[hit], typed[hit].astype(np.int64))
    return np.where(first == big, KEYSTROKE_NEVER, first)


def keystroke_summary(first: np.ndarray, text_length: np.ndarray,
                      max_typed: int = 20) -> dict[str, float | list[float]]:
    """Keystrokes-to-hit summary of sessions (lower is better).

    ``never_share``: share of sessions whose row never showed the sent sticker while
    typing; ``mean_when_hit``: mean characters typed before it first appeared, over the
    sessions where it did; ``capped_mean``: mean over all sessions with a never-hit
    session counted as ``len(text) + 1`` (one more than typing the whole text);
    ``hit_by``: share of sessions hit within 1, 2, ... ``max_typed`` characters.
    """
    first = np.asarray(first)
    n = max(first.size, 1)
    hit = first != KEYSTROKE_NEVER
    capped = np.where(hit, first, np.asarray(text_length) + 1)
    counts = np.bincount(first[hit], minlength=max_typed + 1)[: max_typed + 1]
    return {
        "never_share": float((~hit).sum() / n),
        "mean_when_hit": float(first[hit].mean()) if hit.any() else float("nan"),
        "capped_mean": float(capped.mean()) if first.size else float("nan"),
        "hit_by": (np.cumsum(counts[1:]) / n).tolist(),
    }


def catalogue_coverage(shown_ids: np.ndarray, catalogue_size: int) -> float:
    """Distinct ids (``>= 0``) in ``shown_ids`` (any shape) / ``catalogue_size``."""
    ids = np.asarray(shown_ids).ravel()
    return float(np.unique(ids[ids >= 0]).size / max(catalogue_size, 1))


@dataclass(frozen=True)
class Metric:
    """A per-session ranking metric of the report.

    Attributes
    ----------
    key : str
        Its name in the report; ``{k}`` stands for the row length (``hit@{k}``).
    values : callable
        ``values(rank, k)``: per-session values, float64 (S,), from the send-time ranks
        (S,) of :func:`sent_rank` (``-1`` = not shown) and the row length ``k``.
    definition : str
        The sentence that defines it among the report's definitions.
    """

    key: str
    values: Callable[[np.ndarray, int], np.ndarray]
    definition: str

    def name(self, k: int) -> str:
        """The report key for a row of length ``k``."""
        return self.key.format(k=k)


METRICS: tuple[Metric, ...] = (
    Metric("hit@{k}", lambda rank, k: hit_at(rank, k).astype(np.float64),
           "hit@k: the sent sticker is in the row when it was sent (the send-rate proxy)."),
    Metric("hit@1", lambda rank, k: hit_at(rank, 1).astype(np.float64),
           "hit@1: it is first in the row."),
    Metric("mrr", lambda rank, k: reciprocal_rank(rank),
           "MRR: 1/(rank+1) over the full ordering."),
    Metric("ndcg@{k}", ndcg_at, "NDCG@k: 1/log2(rank+2) inside the row."),
)
"""The report's metrics in display order; the first is the headline metric."""


def metric_names(k: int) -> list[str]:
    """Metric keys in display order (:data:`METRICS`; ``hit@1`` once when ``k = 1``)."""
    return list(dict.fromkeys(m.name(k) for m in METRICS))


def session_metrics(rank: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-session values (S,) float64 of every metric from ranks (S,) at send time."""
    return {m.name(k): m.values(rank, k) for m in METRICS}


def metric_definitions() -> str:
    """The definitions of every metric, in display order, as report prose."""
    return " ".join(m.definition for m in METRICS)
