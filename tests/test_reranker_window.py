"""The reranker task's split: one time for the pipeline, tuning on validation only (#13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import data
from candidate_gen import Stage1Artifact
from reranker import RankingContext, RerankerTask, RerankerTaskConfig, build_sessions
from reranker.row import SessionTable


@pytest.fixture(scope="module")
def sessions_and_context(tiny_var: Path) -> tuple[RankingContext, SessionTable]:
    context = RankingContext.build(Stage1Artifact.load(tiny_var))
    return context, build_sessions(context, context.dataset.table("device_logs"),
                                   show_progress=False)


def _used(task: RerankerTask, devices: np.ndarray, train: bool) -> np.ndarray:
    idx, _ = task._sessions_of(devices, train=train)
    return np.asarray(task.sessions.ts[idx])


def test_reported_task_trains_before_test_start_and_evaluates_validation_devices(
        sessions_and_context: tuple[RankingContext, SessionTable]) -> None:
    context, sessions = sessions_and_context
    split = data.time_split(context.dataset)
    task = RerankerTask(context, sessions, RerankerTaskConfig())
    assert task.split_ts == split.test_start
    everyone = np.arange(task.n_devices)
    assert (_used(task, everyone, train=True) < split.test_start).all()
    assert task.eval_devices.size > 0
    users = task.sessions.user_ids[task.eval_devices]
    assert split.is_validation_device(users).all()


def test_tuning_window_never_sees_a_session_at_or_after_test_start(
        sessions_and_context: tuple[RankingContext, SessionTable]) -> None:
    context, sessions = sessions_and_context
    split = data.time_split(context.dataset)
    task = RerankerTask(context, sessions, RerankerTaskConfig(window="validation"))
    assert task.split_ts == split.validation_start
    everyone = np.arange(task.n_devices)
    train_ts = _used(task, everyone, train=True)
    held_ts = _used(task, everyone, train=False)
    assert train_ts.size and held_ts.size
    assert (train_ts < split.validation_start).all()
    assert ((held_ts >= split.validation_start) & (held_ts < split.test_start)).all()
    # the full log does have sessions after test_start: the window is what hides them
    logs = context.dataset.table("device_logs")
    assert (logs["ts"].cast(pl.Int64).to_numpy() / 1000.0 >= split.test_start).any()
    # training from it returns deltas only from pre-validation sessions (shape check + finite)
    # the per-round metric counts exactly the eval devices' validation-window sessions
    theta = task.initial_parameters()
    expected = _used(task, task.eval_devices, train=False).size
    assert task.evaluate(theta)["eval_sessions"] == expected
