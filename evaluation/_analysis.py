"""From per-session replay outcomes to every number of the report.

The headline is the randomised A/B (users hashed into A or B, each arm's metric over
its own users); the paired view puts every user under every arm on the same sessions
(more power, no randomisation noise), and an A/A check compares the two hash groups both
under control: a significant A/A difference means the split itself is imbalanced and the
randomised uplift carries it. Segments split users by language, cluster size
and activity, each with the paired treatment-vs-control uplift, and the worst segment is
named: in the agnostic-federated-learning view (Mohri, Sivek & Suresh 2019) an average
gain must not hide a group whose experience collapses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation._config import ReportConfig
from evaluation._metrics import (
    catalogue_coverage,
    keystroke_summary,
    metric_names,
    session_metrics,
)
from evaluation._replay import ARM_LABELS, BASELINE_ARMS, HeldOutSample, ReplayResult
from evaluation._stats import assign_treatment, compare_independent, compare_paired

__all__ = ["analyse", "terciles"]

MIN_SEGMENT_USERS = 20
"""Segments with fewer users are reported but never named worst (too noisy)."""


def terciles(values: np.ndarray, unit: str, reference: np.ndarray | None = None
             ) -> tuple[np.ndarray, list[str]]:
    """Tercile (0, 1, 2) of each count and the segment labels with their bounds.

    Bounds are the 1/3 and 2/3 quantiles of ``reference`` (default: ``values``).
    """
    values = np.asarray(values, np.float64)
    ref = values if reference is None else np.asarray(reference, np.float64)
    lo, hi = np.quantile(ref, [1 / 3, 2 / 3]) if ref.size else (0.0, 0.0)
    group = np.where(values <= lo, 0, np.where(values <= hi, 1, 2))
    a, b = int(np.floor(lo)), int(np.floor(hi))  # the values are counts
    labels = [f"low (≤{a} {unit})", f"mid ({a + 1}–{b} {unit})", f"high (≥{b + 1} {unit})"]
    return group, labels


def _user_sums(device: np.ndarray, values: np.ndarray, n_users: int) -> np.ndarray:
    return np.bincount(device, weights=values, minlength=n_users)


def _mean(y: np.ndarray, n: np.ndarray) -> float:
    total = float(n.sum())
    return float(y.sum() / total) if total > 0 else float("nan")


def analyse(result: ReplayResult, sample: HeldOutSample, segments: dict[str, np.ndarray],
            segment_labels: dict[str, list[str]], config: ReportConfig,
            catalogue: tuple[int, int], *, seen_sticker: np.ndarray | None = None,
            seen_package: np.ndarray | None = None) -> dict[str, Any]:
    """Every number of the report (JSON-ready), except inputs, privacy and frontier.

    Parameters
    ----------
    result : ReplayResult
        Must contain the ``control`` and ``treatment`` arms.
    sample : HeldOutSample
    segments : dict of str to ndarray of int, shape (N,)
        Per segmentation (``language`` ...), each device's segment index.
    segment_labels : dict of str to list of str
        Names of the segment indices.
    config : ReportConfig
    catalogue : (int, int)
        Number of stickers and of packages in the catalogue (coverage denominators).
    seen_sticker, seen_package : ndarray of bool, shape (S,), optional
        The device had sent the session's sticker / its package before (new-vs-repeat).

    The headline (``vs_strongest``) compares the treatment, paired on the same users and
    keystrokes, with the strongest arm of :data:`BASELINE_ARMS` present (highest mean
    ``hit@k`` on this sample: choosing it here can only favour the baseline).
    """
    k = result.k
    names = metric_names(k)
    headline = names[0]
    n_users = sample.user_ids.size
    rng = np.random.default_rng(config.seed)
    sessions = np.bincount(sample.device, minlength=n_users).astype(np.float64)
    per_session = {arm: session_metrics(result.rank[arm], k) for arm in result.arms}
    sums = {arm: {m: _user_sums(sample.device, v, n_users) for m, v in per_session[arm].items()}
            for arm in result.arms}
    is_b = assign_treatment(sample.user_ids, config.salt)
    active = sessions > 0
    a_users, b_users = active & ~is_b, active & is_b
    stat: dict[str, Any] = {"n_resamples": config.n_bootstrap,
                            "n_permutations": config.n_permutations,
                            "alpha": config.alpha, "power": config.power}

    arms: dict[str, Any] = {}
    for arm in result.arms:
        arms[arm] = {"label": ARM_LABELS.get(arm, arm),
                     **{m: _mean(sums[arm][m], sessions) for m in names},
                     "keystrokes": keystroke_summary(result.first_hit[arm], result.text_length),
                     "coverage_stickers": catalogue_coverage(
                         np.flatnonzero(result.stickers_shown[arm]), catalogue[0]),
                     "coverage_packages": catalogue_coverage(
                         np.flatnonzero(result.packages_shown[arm]), catalogue[1]),
                     "stickers_shown": int(result.stickers_shown[arm].sum()),
                     "packages_shown": int(result.packages_shown[arm].sum()),
                     # the sent sticker was among the arm's candidates at send time
                     "ceiling": float(np.mean(result.rank[arm] >= 0))
                     if result.rank[arm].size else float("nan")}

    baselines = [a for a in BASELINE_ARMS if a in result.arms]
    strongest = (max(baselines, key=lambda a: (arms[a][headline], -baselines.index(a)))
                 if baselines else "control")
    vs_strongest = {m: compare_paired(m, sums[strongest][m][active],
                                      sums["treatment"][m][active], sessions[active],
                                      rng=rng, **stat).to_dict()
                    for m in names}
    # every arm against the strongest baseline on the headline metric, paired (the note's
    # table of arms): the strongest itself has no row
    arms_vs_strongest = {arm: compare_paired(headline, sums[strongest][headline][active],
                                             sums[arm][headline][active], sessions[active],
                                             rng=rng, **stat).to_dict()
                         for arm in result.arms if arm != strongest}
    vs_control = {m: compare_paired(m, sums["control"][m][active],
                                    sums["treatment"][m][active], sessions[active],
                                    rng=rng, **stat).to_dict()
                  for m in names}
    history_split: dict[str, Any] = {}
    if seen_package is not None and seen_sticker is not None:
        for key, mask in (("package_sent_before", seen_package),
                          ("package_new_to_device", ~seen_package),
                          ("sticker_sent_before", seen_sticker),
                          ("sticker_new_to_device", ~seen_sticker)):
            cell: dict[str, Any] = {"sessions": int(mask.sum()),
                                    "share": float(mask.mean()) if mask.size else float("nan")}
            for arm in result.arms:
                v = per_session[arm][headline][mask]
                cell[arm] = float(v.mean()) if v.size else float("nan")
            history_split[key] = cell

    ab = {m: compare_independent(m, sums["control"][m][a_users], sessions[a_users],
                                 sums["treatment"][m][b_users], sessions[b_users],
                                 rng=rng, **stat).to_dict()
          for m in names}
    # A/A: both hash groups under control. Offline every user's control outcome is known,
    # so the chance imbalance of the split (what the randomised estimate also carries) shows.
    aa = compare_independent(headline, sums["control"][headline][a_users], sessions[a_users],
                             sums["control"][headline][b_users], sessions[b_users], rng=rng,
                             **stat).to_dict()
    paired = {arm: {m: compare_paired(m, sums["control"][m][active], sums[arm][m][active],
                                      sessions[active], rng=rng, **stat).to_dict()
                    for m in names}
              for arm in result.arms if arm != "control"}

    seg_stat: dict[str, Any] = {**stat, "n_resamples": config.segment_bootstrap,
                "n_permutations": config.segment_bootstrap}
    seg_out: dict[str, list[dict[str, Any]]] = {}
    for name, group in segments.items():
        rows = []
        for g, label in enumerate(segment_labels[name]):
            users = active & (group == g)
            if users.sum() < 2:
                continue
            row: dict[str, Any] = {
                "segment": label, "users": int(users.sum()),
                "sessions": int(sessions[users].sum()),
                "hit": {arm: _mean(sums[arm][headline][users], sessions[users])
                        for arm in result.arms},
                "ab_control": _mean(sums["control"][headline][users & ~is_b],
                                    sessions[users & ~is_b]),
                "ab_treatment": _mean(sums["treatment"][headline][users & is_b],
                                      sessions[users & is_b]),
                "users_a": int((users & ~is_b).sum()), "users_b": int((users & is_b).sum()),
                "paired": compare_paired(headline, sums[strongest][headline][users],
                                         sums["treatment"][headline][users], sessions[users],
                                         rng=rng, **seg_stat).to_dict(),
            }
            rows.append(row)
        seg_out[name] = rows

    candidates = [(name, i, row) for name, rows in seg_out.items() for i, row in enumerate(rows)
                  if row["users"] >= MIN_SEGMENT_USERS]
    worst: dict[str, Any] = {}
    uplift_ok = [c for c in candidates if np.isfinite(c[2]["paired"]["uplift"])]
    if uplift_ok:
        name, i, row = min(uplift_ok, key=lambda c: c[2]["paired"]["uplift"])
        worst["by_uplift"] = {"segmentation": name, "index": i, "segment": row["segment"],
                              "uplift": row["paired"]["uplift"],
                              "ci_low": row["paired"]["ci_low"],
                              "ci_high": row["paired"]["ci_high"]}
    if candidates:
        name, i, row = min(candidates, key=lambda c: c[2]["hit"]["treatment"])
        worst["by_treatment_hit"] = {"segmentation": name, "index": i, "segment": row["segment"],
                                     "treatment": row["hit"]["treatment"],
                                     "control": row["hit"]["control"]}

    return {
        "k": k, "metrics": names, "headline_metric": headline,
        "sample": {"devices": int(n_users), "users_a": int(a_users.sum()),
                   "users_b": int(b_users.sum()), "sessions": int(sessions.sum()),
                   "sessions_a": int(sessions[a_users].sum()),
                   "sessions_b": int(sessions[b_users].sum()),
                   "keystrokes": int(result.n_keystrokes),
                   "reachable_share": float(result.reachable.mean())
                   if result.reachable.size else float("nan"),
                   "split_ts": sample.split_ts},
        "arms": arms, "ab": ab, "aa": aa,
        "split_imbalanced": bool(aa["p_value"] < config.alpha),
        "paired": paired, "segments": seg_out,
        "worst_segment": worst,
        "strongest_baseline": strongest, "baselines": baselines,
        "vs_strongest": vs_strongest, "vs_control": vs_control,
        "arms_vs_strongest": arms_vs_strongest,
        "history_split": history_split,
    }
