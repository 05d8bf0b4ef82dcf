"""`stickers reranker evaluate` states the ε whose assumption holds (issue #13 item 7)."""

from __future__ import annotations

from reranker.cli import epsilon_headline


def _record(secure_sum_met: bool) -> dict[str, object]:
    return {"delta": 1e-6, "guarantees": {
        "secure_sum": {"epsilon": 3.59, "delta": 1e-6, "assumption": "secure aggregation",
                       "assumption_met": secure_sum_met},
        "local": {"epsilon": 294.2, "delta": 1e-6, "assumption": "none",
                  "assumption_met": True},
        "device_local": {"epsilon": 3579.0, "delta": 1e-6, "assumption": "none",
                         "assumption_met": True}}}


def test_headline_is_the_strongest_met_guarantee() -> None:
    assert epsilon_headline(_record(True)) == "3.59 secure_sum (1e-06)"
    # the HTTP path's record: secure aggregation not in place, so the per-device bound
    assert epsilon_headline(_record(False)) == "3.58e+03 device_local (1e-06)"


def test_non_private_model_says_so() -> None:
    assert epsilon_headline({"enabled": False, "epsilon": None}) == "∞ (not private)"
