"""The privacy statement served with a reranker: the headline ε first, each with its assumption.

Reads a version's ``privacy.json`` in either form: with ``guarantees[kind].assumption_met``
and a top-level ``headline`` (what the federated platform writes since the privacy headline
of issue #13), or an older file with only ``epsilon: {kind: ε}`` / ``guarantees`` without
those fields. For older files the assumptions met by the code as built are the platform's
statement for them: ``local`` and ``device_local`` are met; ``shuffle`` and ``secure_sum``
(which need anonymous shuffling / secure aggregation) are not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MET_WITHOUT_FIELDS", "privacy_statement"]

MET_WITHOUT_FIELDS = {"local": True, "device_local": True, "shuffle": False,
                      "secure_sum": False}
"""``assumption_met`` of each kind for a ``privacy.json`` written before the field existed."""
_MISSING = {"shuffle": "anonymous shuffling", "secure_sum": "secure aggregation"}


def _finite(value: Any) -> float | None:
    """A finite float, or None (JSON has no infinity: an unbounded ε is reported as null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def privacy_statement(privacy: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"headline", "epsilon", "delta", "guarantees": [...]}`` for the model endpoint.

    ``guarantees`` lists every kind as ``{"kind", "epsilon", "delta", "assumption",
    "assumption_met", "label"}``, the headline first, then the other met kinds, then the
    unmet ones labelled "if <component> were in place". ``headline`` is the kind with the
    smallest ε among those whose assumption is met (the file's own ``headline`` when it
    names a met kind); ``epsilon``/``delta`` are the headline's (null without one).
    """
    privacy = privacy or {}
    delta = _finite(privacy.get("delta"))
    records: dict[str, dict[str, Any]] = {}
    guarantees = privacy.get("guarantees")
    if isinstance(guarantees, Mapping):
        for kind, g in guarantees.items():
            if isinstance(g, Mapping):
                records[str(kind)] = dict(g)
    epsilons = privacy.get("epsilon")
    if isinstance(epsilons, Mapping):
        for kind, eps in epsilons.items():
            records.setdefault(str(kind), {"epsilon": eps})
    rows: list[dict[str, Any]] = []
    for kind, g in records.items():
        met = g.get("assumption_met")
        if not isinstance(met, bool):
            met = MET_WITHOUT_FIELDS.get(kind, False)
        missing = _MISSING.get(kind, f"the {kind} assumption")
        rows.append({"kind": kind, "epsilon": _finite(g.get("epsilon")),
                     "delta": _finite(g.get("delta", delta)),
                     "assumption": g.get("assumption") if isinstance(g.get("assumption"), str)
                     else None,
                     "assumption_met": met,
                     "label": "holds for the code as built" if met
                     else f"if {missing} were in place"})
    met_rows = [r for r in rows if r["assumption_met"] and r["epsilon"] is not None]
    named = privacy.get("headline")
    headline = next((r for r in met_rows if r["kind"] == named), None) or min(
        met_rows, key=lambda r: float(r["epsilon"]), default=None)
    rows.sort(key=lambda r: (r is not headline, not r["assumption_met"],
                             math.inf if r["epsilon"] is None else r["epsilon"]))
    return {"headline": None if headline is None else headline["kind"],
            "epsilon": None if headline is None else headline["epsilon"],
            "delta": delta if headline is None else headline["delta"],
            "guarantees": rows}
