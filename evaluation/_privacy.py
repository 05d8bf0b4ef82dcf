"""The treatment's privacy statement and the privacy–utility frontier of a federated sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from data import ArtifactError, read_manifest, resolve_artifact
from evaluation._errors import EvaluationError
from federated import guarantees_headline_first, privacy_headline

__all__ = ["EPSILON_KINDS", "load_frontier", "privacy_summary"]

EPSILON_KINDS: tuple[str, ...] = ("local", "device_local", "shuffle", "secure_sum",
                                  "device_sum")
"""Guarantee kinds of ``privacy.json``, weakest trust assumption first."""


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def privacy_summary(privacy: dict[str, Any]) -> dict[str, Any]:
    """ε of each kind, δ and the DP settings of a reranker's ``privacy.json``.

    ``headline_kind`` is :func:`federated.privacy_headline`'s kind: the strongest
    per-device guarantee whose assumption the code that trained the model meets (a record
    without ``assumption_met`` fields counts ``local`` and ``device_local`` as met).
    ``kinds`` and ``epsilon`` list the headline first, then the others; ``labels[kind]``
    says how each holds ("if secure aggregation were in place" for an unmet one) and
    ``assumptions[kind]`` starts with that label. A model trained without DP (or without
    a ``privacy.json``) has ``available`` false and no ε. ``corruption_rate`` and
    ``collusion`` state the collusion bound γ the secure kinds were charged under (a
    record from before γ was recorded: 0, every client's noise counted).
    """
    epsilon_raw = privacy.get("epsilon") or {}
    epsilon = ({kind: _number(v) for kind, v in epsilon_raw.items()}
               if isinstance(epsilon_raw, dict) else {})
    enabled = bool(privacy.get("enabled", bool(epsilon)))
    available = enabled and any(v is not None for v in epsilon.values())
    budget = privacy.get("budget") or {}
    recorded = privacy.get("guarantees") or {}
    guarantees = {kind: {**(recorded.get(kind) or {}), "epsilon": epsilon[kind]}
                  for kind in epsilon}
    try:
        headline, _ = privacy_headline({**privacy, "guarantees": guarantees})
    except ValueError:
        headline = None
    ordered = guarantees_headline_first({"guarantees": guarantees,
                                         "headline": headline}) if guarantees else []
    kinds = [k for k, _, _ in ordered]
    labels = {k: label for k, _, label in ordered}
    return {
        "available": available,
        "enabled": enabled,
        "epsilon": {k: epsilon[k] for k in kinds},
        "kinds": kinds,
        "headline_kind": headline,
        "headline_epsilon": epsilon.get(headline) if headline else None,
        "assumption_met": {k: bool(g.get("assumption_met", k in ("local", "device_local")))
                           for k, g, _ in ordered},
        "labels": labels,
        "budget_kind": budget.get("kind"),
        "delta": _number(privacy.get("delta")),
        "noise_multiplier": _number(privacy.get("noise_multiplier")),
        "clip_norm": _number(privacy.get("clip_norm")),
        "sampling_rate": _number(privacy.get("sampling_rate")),
        "rounds": privacy.get("rounds"),
        "target_epsilon": _number(budget.get("target_epsilon")),
        "corruption_rate": privacy.get("corruption_rate", 0.0 if available else None),
        "collusion": privacy.get("collusion") or (
            "no collusion bound recorded: every client's noise was counted (gamma = 0)"
            if available else ""),
        "accountant": privacy.get("accountant"),
        "unit": privacy.get("unit"),
        "assumptions": {k: " — ".join(x for x in (labels[k], str(g.get("assumption", ""))) if x)
                        for k, g, _ in ordered},
        "note": privacy.get("note") or ("" if available else
                                        "the treatment states no (ε, δ): trained without DP"),
    }


def _resolve_sweep(var: Path, sweep: str, task: str) -> Path | None:
    if sweep == "none":
        return None
    given = Path(sweep)
    if (given / "sweep.json").is_file():
        return given
    kind_dir = var / "federated" / "sweeps" / task
    try:
        return resolve_artifact(kind_dir, sweep)
    except ArtifactError:
        if sweep == "latest":
            return None  # no sweep yet: the report says so instead of drawing one
        raise


def load_frontier(var: Path, sweep: str, *, task: str, k: int,
                  reference_uplift: float) -> dict[str, Any]:
    """Points (σ, ε of each kind, uplift) of a federated privacy–utility sweep.

    Each point's uplift is its validation ``hit@k`` over the strongest no-model row
    measured in the same sweep run on the same sessions (``hit@k_strongest_baseline``;
    its name in ``reference``) minus one; a sweep written before the per-round metric
    had baselines falls back to stage-1 order (``hit@k_stage1_order``), and the
    frontier's ``reference`` then says so. ``sweep`` is a version, a
    directory holding ``sweep.json``, ``latest`` (absent → ``available`` false) or
    ``none``.

    Raises
    ------
    EvaluationError
        If an explicitly named sweep cannot be read.
    """
    out: dict[str, Any] = {"available": False, "reference_uplift": reference_uplift,
                           "metric": f"hit@{k}", "points": [], "non_private_uplift": None,
                           "source": None, "version": None, "reference": "strongest"}
    try:
        directory = _resolve_sweep(var, sweep, task)
    except ArtifactError as exc:
        raise EvaluationError(f"--sweep {sweep}: {exc}") from exc
    if directory is None:
        out["note"] = (f"no privacy–utility sweep found under {var / 'federated' / 'sweeps' / task}"
                       " (run `stickers federated sweep`)" if sweep != "none"
                       else "sweep not requested")
        return out
    try:
        if (directory / "manifest.json").is_file():
            read_manifest(directory, kind="federated-sweep")
        points = json.loads((directory / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError, ArtifactError) as exc:
        raise EvaluationError(f"{directory}: cannot read the sweep ({exc})") from exc
    metric, strongest, control = f"hit@{k}", f"hit@{k}_strongest_baseline", f"hit@{k}_stage1_order"
    rows = []
    references = set()
    for p in points:
        metrics = p.get("metrics") or {}
        hit = _number(metrics.get(metric))
        if _number(metrics.get(strongest)) is not None:
            base = _number(metrics.get(strongest))
            names = [x[len(metric) + 1:] for x, v in metrics.items()
                     if x.startswith(metric + "_") and _number(v) == base
                     and not x.endswith(("_strongest_baseline", "_minus_strongest",
                                         "_new_package", "_explore", "_stage1_order"))]
            reference = names[0] if names else "strongest_baseline"
            references.add("strongest")
        else:
            base, reference = _number(metrics.get(control)), "stage1_order"
            references.add("stage1_order")
        uplift = hit / base - 1 if hit is not None and base else None
        eps = p.get("epsilon") or {}
        sigma = _number(p.get("noise_multiplier"))
        row = {"noise_multiplier": sigma,
               "epsilon": {kind: _number(v) for kind, v in eps.items()},
               "delta": _number(p.get("delta")), "hit": hit, "hit_control": base,
               "reference": reference, "uplift": uplift}
        if sigma is None:
            out["non_private_uplift"] = uplift
        rows.append(row)
    missing = sum(r["uplift"] is None for r in rows)
    out["reference"] = ("strongest" if references == {"strongest"} else "stage1_order")
    out.update(available=bool(rows) and missing < len(rows), points=rows,
               source=str(directory), version=directory.name,
               note=(f"{missing} point(s) lack {metric} or {control}" if missing else ""))
    return out
