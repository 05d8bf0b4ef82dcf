"""Promotion is a decision: an aggregated round publishes a *candidate*; a policy decides.

An aggregation publishes its new reranker version without moving ``LATEST``; then
:func:`decide_promotion` applies the configured policy and records the decision in the
promotion history (``promotions.jsonl``, action ``candidate``, with the policy, the
figures it compared and why):

- ``validation``: the candidate goes live only if its validation figure on the server's
  own data is not below the live version's by more than the tolerance, and ``LATEST``
  still names the round's base (compare-and-swap under the promotion lock, recorded as
  ``publish``). The default figure, :func:`keyword_hit_rate`, needs no user data: for
  keywords of the catalogue's keyword table (each typed in full, in its language, in
  clusters taken in turn), the share whose top-5 row shows a sticker carrying that
  keyword's label. An update that teaches the model to ignore what is typed (issue #18:
  100 crafted uploads pushed the keyword weight negative; the typed label reached the
  top 5 for 0 of 100 queries, 79 before) fails it.
- ``operator``: the candidate waits for ``stickers models promote reranker VERSION``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from data import set_latest
from serving._promotions import latest_lock, promoted_versions, record
from serving._rounds import RERANKER, live_reranker

__all__ = ["Evaluator", "PromotionDecision", "PromotionPolicy", "decide_promotion",
           "keyword_hit_rate"]

log = structlog.get_logger(__name__)

PromotionPolicy = Literal["validation", "operator"]
Evaluator = Callable[[Path, str], float]
"""(artifact root, reranker version) → a validation figure, higher is better."""


def keyword_hit_rate(var: Path, version: str, *, queries: int = 200, k: int = 5,
                     seed: int = 0) -> float:
    """Share of catalogue keyword queries whose top-``k`` row shows a sticker with the
    keyword's label (server-side data only: the keyword and label tables).

    Parameters
    ----------
    var : Path
        Artifact root.
    version : str
        The reranker version (the served stage-1 version ranks its candidates).
    queries : int
        Keywords drawn (without replacement, ``seed``) from the languages the model serves.
    k : int
        Row length.
    """
    from reranker import Suggester  # on first use: onnxruntime is heavy

    suggester = Suggester.load(var, reranker_version=version)
    dataset = suggester.context.dataset
    labels = dict(dataset.table("labels").select("label_id", "label").iter_rows())
    table = dataset.table("keywords").select("label_id", "language", "keyword")
    rows = [r for r in table.iter_rows() if r[1] in suggester.languages]
    if not rows:
        raise ValueError(f"no keyword of the served languages {suggester.languages}")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=min(queries, len(rows)), replace=False)
    hits = 0
    for i, index in enumerate(picked.tolist()):
        label_id, language, keyword = rows[index]
        cluster = i % suggester.n_clusters
        shown = suggester.suggest(language=language, text=keyword, cluster_id=cluster,
                                  limit=k)
        hits += any(labels.get(label_id) in s.labels for s in shown)
    return hits / len(picked)


@dataclass(frozen=True)
class PromotionDecision:
    """What the policy decided for one candidate version (recorded in the history)."""

    candidate: str
    base: str
    policy: str
    promoted: bool
    reason: str
    candidate_figure: float | None = None
    live_figure: float | None = None
    tolerance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def decide_promotion(var: Path, candidate: str, base: str, *,
                     policy: PromotionPolicy = "validation", tolerance: float = 0.0,
                     evaluate: Evaluator | None = None) -> PromotionDecision:
    """Apply ``policy`` to a candidate version aggregated from ``base``; record the decision.

    Parameters
    ----------
    var : Path
        Artifact root.
    candidate : str
        The published, not yet promoted version.
    base : str
        The version its round trained (live when the round opened).
    policy : {"validation", "operator"}
    tolerance : float
        How much lower than the live version's the candidate's figure may be.
    evaluate : callable, optional
        The validation figure (default :func:`keyword_hit_rate`).
    """
    if policy not in ("validation", "operator"):
        raise ValueError(f"policy={policy!r} should be 'validation' or 'operator'")
    kind_dir = Path(var) / RERANKER
    if policy == "operator":
        decision = PromotionDecision(
            candidate, base, policy, False,
            f"waits for an operator: stickers models promote reranker {candidate}")
        return _record(kind_dir, decision)
    evaluate = evaluate or keyword_hit_rate
    live = live_reranker(var)
    if live != base:
        decision = PromotionDecision(
            candidate, base, policy, False, f"{live or 'nothing'} is live, not the round's "
            f"base {base} (promoted or rolled back meanwhile); the operator's choice stands")
        return _record(kind_dir, decision)
    new, old = float(evaluate(var, candidate)), float(evaluate(var, base))
    if new + tolerance < old:
        decision = PromotionDecision(
            candidate, base, policy, False,
            f"validation figure {new:.4f} is below the live version's {old:.4f} by more "
            f"than the tolerance {tolerance:g}", new, old, tolerance)
        log.warning("candidate not promoted", **decision.to_dict())
        return _record(kind_dir, decision)
    with latest_lock(kind_dir):
        live = live_reranker(var)
        if live != base:  # moved while we evaluated
            decision = PromotionDecision(
                candidate, base, policy, False, f"{live or 'nothing'} became live during the "
                "validation; the operator's choice stands", new, old, tolerance)
            return _record(kind_dir, decision)
        decision = PromotionDecision(
            candidate, base, policy, True,
            f"validation figure {new:.4f} is not below the live version's {old:.4f} (tolerance "
            f"{tolerance:g})", new, old, tolerance)
        _record(kind_dir, decision)
        if base not in promoted_versions(kind_dir):
            record(kind_dir, "found", base)
        set_latest(kind_dir, candidate)
        record(kind_dir, "publish", candidate, base)
    log.info("candidate promoted", **decision.to_dict())
    return decision


def _record(kind_dir: Path, decision: PromotionDecision) -> PromotionDecision:
    record(kind_dir, "candidate", decision.candidate, decision.base,
           details={k: v for k, v in decision.to_dict().items()
                    if k not in ("candidate", "base")})
    return decision
