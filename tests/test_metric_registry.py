"""A metric is declared once (issue #14 item 6): ``evaluation.metrics.METRICS``."""

from __future__ import annotations

import numpy as np
import pytest

import evaluation._metrics as metrics_module
from evaluation import DEFINITIONS, METRICS, Metric
from evaluation.metrics import metric_definitions, metric_names, session_metrics

RANK = np.array([0, 1, 4, -1])  # first, second, fifth, not shown


def test_the_declared_metrics_with_hand_computed_values() -> None:
    # the built-in four lead, in display order; a new METRICS entry adds its key after them
    assert metric_names(2)[:4] == ["hit@2", "hit@1", "mrr", "ndcg@2"]
    assert metric_names(1)[:3] == ["hit@1", "mrr", "ndcg@1"]  # hit@1 once
    values = session_metrics(RANK, 2)
    assert list(values) == metric_names(2)
    np.testing.assert_array_equal(values["hit@2"], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(values["hit@1"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(values["mrr"], [1.0, 0.5, 0.2, 0.0])
    np.testing.assert_allclose(values["ndcg@2"], [1.0, 1 / np.log2(3), 0.0, 0.0])
    assert all(v.dtype == np.float64 for v in values.values())


def test_every_definition_is_in_the_report() -> None:
    text = " ".join(DEFINITIONS)
    assert metric_definitions() in text
    for metric in METRICS:
        assert metric.definition in text


def test_a_new_metric_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = Metric("shown", lambda rank, k: (rank >= 0).astype(np.float64),
                   "shown: the sent sticker is anywhere in the ordering.")
    monkeypatch.setattr(metrics_module, "METRICS", (*METRICS, shown))
    assert metric_names(3)[-1] == "shown"
    np.testing.assert_array_equal(session_metrics(RANK, 3)["shown"], [1.0, 1.0, 1.0, 0.0])
    assert metric_definitions().endswith(shown.definition)
