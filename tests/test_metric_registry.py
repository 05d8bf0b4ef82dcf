"""A metric is declared once (issue #14 item 6): ``evaluation.metrics.METRICS``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import evaluation._metrics as metrics_module
from evaluation import DEFINITIONS, METRICS, Metric
from evaluation.metrics import metric_definitions, metric_names, session_metrics

if TYPE_CHECKING:  # imported by the fixture, on use, as before
    from reranker import RowTask

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


# ------------------------------------------------------- the reranker's per-round metrics


@pytest.fixture(scope="module")
def row_task(tiny_var: Path) -> RowTask:
    from federated import TaskContext
    from reranker import make_row_task

    return make_row_task(TaskContext(var=tiny_var, seed=0, options={}))


def _theta(task: RowTask, scale: float) -> np.ndarray:
    theta = np.asarray(task.initial_parameters(), np.float32)
    noise = np.random.default_rng(7).standard_normal(theta.size).astype(np.float32)
    return theta + scale * noise


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_per_round_validation_gives_the_registry_metrics_with_the_same_numbers(
        row_task: RowTask, scale: float) -> None:
    """The row task's per-round hit@k, hit@1 and mrr come from METRICS; they equal the
    formulas it used before (ties in candidate order), to the last bit, and the report's
    other metric (ndcg@k) is there too."""
    from reranker.row import row_hits, row_scores, walk_impressions

    task = row_task
    k = task.config.top_k
    devices = task.eval_devices[: task.config.device_batch]  # one batch, as evaluate walks
    theta = _theta(task, scale)
    result = task.evaluate_sessions(theta, devices, task.eval_window)
    imp = walk_impressions(task.sessions, task.catalog, task.config.row, devices,
                           task.eval_window, task.alive, task.config.row.cap,
                           segment=task.segment_popularity)
    scores = row_scores(theta, task.layout, task.personalize(theta, devices), imp,
                        task.catalog.pk_factor)
    _, rank = row_hits(scores, imp, k)
    n = imp.n_impressions
    assert n > 50 and result["eval_sessions"] == n
    ok = rank >= 0
    assert result[f"hit@{k}"] == float((ok & (rank < k)).sum()) / n
    assert result["hit@1"] == float((rank == 0).sum()) / n
    mrr = np.where(ok, 1.0 / (np.maximum(rank, 0) + 1), 0.0)
    assert result["mrr"] == float(mrr.sum()) / n
    assert result[f"ndcg@{k}"] == float(session_metrics(rank, k)[f"ndcg@{k}"].sum()) / n
    assert list(result)[:4] == metric_names(k)


def test_a_new_metric_reaches_per_round_validation(row_task: RowTask,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # "shown": the sent sticker is anywhere in the ordering, i.e. among the candidates,
    # which the task also reports on its own as the displayable ceiling; "missed": not in
    # the row, the complement of the headline
    shown = Metric("shown", lambda rank, k: (rank >= 0).astype(np.float64),
                   "shown: the sent sticker is anywhere in the ordering.")
    missed = Metric("missed@{k}", lambda rank, k: 1.0 - (rank >= 0) * (rank < k),
                    "missed@k: the sent sticker is not in the row.")
    monkeypatch.setattr(metrics_module, "METRICS", (*METRICS, shown, missed))
    task = row_task
    k = task.config.top_k
    result = task.evaluate_sessions(_theta(task, 0.5), task.eval_devices[:200],
                                    task.eval_window)
    assert result["shown"] == result["ceiling"] > 0
    assert 0 < result[f"missed@{k}"] < 1
    assert result[f"missed@{k}"] == pytest.approx(1 - result[f"hit@{k}"])
