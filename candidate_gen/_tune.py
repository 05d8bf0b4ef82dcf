"""``candidates tune``: a seeded search of the stage-1 config on the validation split.

Every trial fits on interactions before the split's ``validation_start`` and is scored
on the validation devices' new packages in ``[validation_start, test_start)``; the test
window is never read for scoring, so a report evaluated on ``[test_start, end)`` is not
tuned on. Trial 0 is the starting config; the others draw each searched key from its
grid (:data:`SEARCH_SPACE`) with a seeded generator. Factorisations are cached by their
``als`` section, so trials that differ only in clustering or list settings reuse them.
After the drawn trials come the *popularity trials* (:func:`popularity_overrides`):
``clusters.method = "segments"`` over the evaluation's segment features, over the
language alone and over nothing, lists by the group's own popularity (no shrinkage) —
the segment, language and global popularity baselines as shippable configs (the label
coverage repair still applies). So the chosen lists never validate below those three
baselines: if no clustering beats them on validation, one of them is what ships.
The chosen config is the trial with the highest recall@k of the cluster lists among
the trials whose users' own factorisation top-k is at least as good as global popularity
(the factorisation must be sound, not only the lists); if no trial is, among all trials.
Equal lists go to the better own top-k.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from candidate_gen._build import evaluate_stage1, fit_stage1, load_stage1_data
from candidate_gen._config import Stage1Config
from candidate_gen._factorization import FactorModel, fit_factors
from candidate_gen._search import faiss_threads
from data import Dataset, progress

__all__ = ["SEARCH_SPACE", "TrialResult", "TuneResult", "popularity_overrides", "tune_stage1"]

log = structlog.get_logger(__name__)

SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "als.confidence": ("linear", "log", "bm25"),
    "als.alpha": (1.0, 3.0, 10.0, 30.0),
    "als.regularization": (1.0, 10.0, 100.0, 300.0),
    "als.iterations": (10, 20),
    "als.popularity_prior": (0.0, 1.0, 3.0, 5.0),
    "clusters.representation": ("user_factors", "package_mean"),
    "clusters.feature_weight": (0.0, 0.75, 1.5, 3.0, 6.0, 12.0),
    "clusters.n_clusters": (128, 256, 512),
    "candidates.popularity_blend": (0.0, 0.5, 0.8, 0.9, 1.0),
    # Pseudo-users of the prior: the best count grows with how thinly a cluster's holders
    # spread over the catalogue (800 on 5k packages, >= 51200 on 100k), so the grid is wide.
    "candidates.shrinkage": ("auto", 0.0, 50.0, 200.0, 800.0, 3200.0, 12800.0, 51200.0,
                             204800.0),
    "candidates.segment_features": (["language", "region", "age_bucket"],
                                    ["language", "region", "age_bucket", "gender",
                                     "subscriber"]),
}
"""Searched keys and their grids (``als.factors`` stays as given: the reranker reuses it)."""


def popularity_overrides(base: Stage1Config) -> list[dict[str, Any]]:
    """Overrides that turn ``base`` into the segment, language and global popularity lists.

    Each user's cluster is their group (``clusters.method = "segments"``) over the
    evaluation's ``segment_features``, over ``["language"]`` and over no feature (one
    group: global popularity); a group's list is its own holder share (``shrinkage`` 0,
    ``popularity_blend`` 1). Groups smaller than ``clusters.min_cluster_size`` are merged
    (k-anonymity), so on such logs the list is a near copy of the baseline, not the same.
    """
    groups = [list(base.evaluation.segment_features), ["language"], []]
    return [{"clusters.method": "segments", "clusters.features": features,
             "candidates.shrinkage": 0.0, "candidates.popularity_blend": 1.0}
            for features in groups]


@dataclass(frozen=True)
class TrialResult:
    """One trial: its overrides, its config and its validation recall table."""

    trial: int
    overrides: dict[str, Any]
    config: Stage1Config
    evaluation: dict[str, Any]

    @property
    def score(self) -> float:
        """Recall@k of the cluster lists on the validation window."""
        return float(self.evaluation["recall"]["cluster_lists"])

    @property
    def factorisation_sound(self) -> bool:
        """Each user's own factorisation top-k recalls at least global popularity."""
        recall = self.evaluation["recall"]
        return bool(recall["own_factorisation_top_k"] >= recall["global_popularity"])


@dataclass(frozen=True)
class TuneResult:
    """Every trial and the chosen one."""

    trials: list[TrialResult]
    best: TrialResult
    split: dict[str, Any]


def _draw(space: Mapping[str, Sequence[Any]], rng: np.random.Generator) -> dict[str, Any]:
    return {key: values[int(rng.integers(len(values)))] for key, values in space.items()}


def _with(config: Stage1Config, overrides: Mapping[str, Any]) -> Stage1Config:
    raw = config.model_dump()
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    return Stage1Config.from_dict(raw, "tune")


def tune_stage1(
    dataset: Dataset,
    base: Stage1Config,
    n_trials: int,
    seed: int,
    *,
    space: Mapping[str, Sequence[Any]] | None = None,
    show_progress: bool = False,
    max_cached_fits: int = 4,
    popularity_trials: bool = True,
) -> TuneResult:
    """Search configs on the validation split; return every trial and the best.

    Parameters
    ----------
    dataset : data.Dataset
    base : Stage1Config
        Trial 0, and every key the search does not touch.
    n_trials : int
        Trials drawn (>= 1), trial 0 included; the popularity trials come on top.
    seed : int
        Seeds the draws (the fits keep ``base.seed``).
    space : mapping, optional
        ``section.key`` → values to draw from (default :data:`SEARCH_SPACE`).
    show_progress : bool
    max_cached_fits : int
        Factorisations kept for reuse (each is ``(n_users + n_packages) × d`` floats).
    popularity_trials : bool
        Add the trials of :func:`popularity_overrides` (they reuse trial 0's fit).

    Raises
    ------
    ValueError
        If ``n_trials < 1``, a searched key is unknown, or the validation window of the
        dataset holds no evaluation user.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials} should be >= 1")
    space = dict(SEARCH_SPACE if space is None else space)
    known = {f"{s}.{k}" for s, body in base.model_dump().items() if isinstance(body, dict)
             for k in body}
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) in the search space: {unknown}")
    rng = np.random.default_rng(seed)
    draws: list[dict[str, Any]] = [{}]
    seen = {_key(base)}
    attempts = 0
    while len(draws) < n_trials and attempts < 100 * n_trials:
        attempts += 1
        overrides = _draw(space, rng)
        config = _with(base, overrides)
        if _key(config) not in seen:  # no trial repeats another
            seen.add(_key(config))
            draws.append(overrides)
    if popularity_trials:
        for overrides in popularity_overrides(base):
            if _key(_with(base, overrides)) not in seen:
                seen.add(_key(_with(base, overrides)))
                draws.append(overrides)
    data = load_stage1_data(dataset, base, "validation", evaluate=True)
    holdout = data.matrix.holdout
    if holdout is None or len(holdout.rows) == 0:
        raise ValueError(f"{dataset.root}: no validation device has a new package in the "
                         "validation window; nothing to tune on")
    cache: OrderedDict[str, FactorModel] = OrderedDict()
    trials: list[TrialResult] = []
    with progress("tuning stage 1", total=len(draws), show=show_progress) as bar, \
            faiss_threads(base.clusters.faiss_threads):
        for i, overrides in enumerate(draws):
            config = _with(base, overrides)
            # The popularity prior only ranks each user's own top-k: no new fit for it.
            als_key = config.als.model_copy(update={"popularity_prior": 0.0}).model_dump_json()
            factors = cache.get(als_key)
            if factors is None:
                factors = fit_factors(data.matrix.train, config.als, config.seed)
                cache[als_key] = factors
                while len(cache) > max_cached_fits:
                    cache.popitem(last=False)
            cache.move_to_end(als_key)
            fit = fit_stage1(data, config, factors=factors)
            evaluation = evaluate_stage1(data, fit, config)
            trials.append(TrialResult(i, overrides, config, evaluation))
            log.info("trial", trial=i, recall=evaluation["recall"]["cluster_lists"],
                     **{k.replace(".", "_"): v for k, v in overrides.items()})
            bar.advance()
    sound = [t for t in trials if t.factorisation_sound] or trials
    # Ties in the lists (trials that differ only in the own top-k's popularity prior)
    # go to the better own top-k, then to the earlier trial.
    best = max(sound, key=lambda t: (t.score, t.evaluation["recall"]["own_factorisation_top_k"],
                                     -t.trial))
    split = {**data.split.to_parameters(), "fit_end": data.matrix.fit_end,
             "window": list(holdout.window), "eval_users": len(holdout.rows)}
    return TuneResult(trials, best, split)


def _key(config: Stage1Config) -> str:
    return config.model_dump_json()
