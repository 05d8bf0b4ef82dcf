"""An on-device task is one file in the task package (issue #14): no entry point, no list.

A module of ``tasks`` (:data:`federated.TASK_PACKAGE`) registers its factory with
``@federated.register_task(NAME)``; the platform imports every module of the package when a
task is looked up, so the CLI and :func:`federated.load_task` find it without any other
edit. Entry points of ``sticker_suggest.federated_tasks`` still work for tasks of other
installed distributions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import federated
import federated._task as task_module
import tasks
from data import read_manifest, resolve_artifact
from data.cli import main
from federated import SyntheticRegressionTask, TaskContext, TaskNotFoundError, load_task

DROPPED = '''
from federated import SyntheticRegressionTask, TaskContext, register_task


class TinyRegression(SyntheticRegressionTask):
    name = "tiny_regression"


@register_task("tiny_regression")
def make(context: TaskContext) -> TinyRegression:
    return TinyRegression(n_devices=40, n_features=4, seed=context.seed)
'''


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A copy of the task registry, so a test's registrations do not outlive it (the
    registry is a private module's dict: the only place to isolate it)."""
    monkeypatch.setattr(task_module, "_REGISTRY", dict(task_module._REGISTRY))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(f"{federated.TASK_PACKAGE}."):
            del sys.modules[name]


@pytest.fixture()
def dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: None) -> Path:
    """A new task file in the task package: a folder added to its search path holds it, as
    a file added to ``tasks/`` would (the repository stays untouched)."""
    folder = tmp_path / "more_tasks"
    folder.mkdir()
    (folder / "tiny_regression.py").write_text(DROPPED)
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(folder)])
    return folder


def test_a_task_file_dropped_into_the_package_is_found(dropped: Path, tmp_path: Path) -> None:
    assert "tiny_regression" in federated.available_tasks()
    assert "tiny_regression" in federated.project_tasks()
    assert "tasks.tiny_regression" in federated.discover_tasks()
    task = load_task("tiny_regression", TaskContext(var=tmp_path, seed=3))
    assert isinstance(task, SyntheticRegressionTask)
    assert (task.name, task.n_devices) == ("tiny_regression", 40)

    runner = CliRunner()
    listed = runner.invoke(main, ["federated", "tasks"])
    assert listed.exit_code == 0, listed.output
    assert "tiny_regression" in listed.output.split()
    var = tmp_path / "var"
    var.mkdir()
    started = runner.invoke(main, ["--var", str(var), "-q", "device", "start-model",
                                   "--task", "tiny_regression"])
    assert started.exit_code == 0, started.output
    manifest = read_manifest(resolve_artifact(var / "tiny_regression", "latest"),
                             verify=True, kind="tiny_regression")
    assert manifest.parameters["n_parameters"] == task.n_parameters
    # two project tasks now: --task can no longer default to the only one
    unnamed = runner.invoke(main, ["--var", str(var), "-q", "federated", "train"])
    assert unnamed.exit_code == 2
    assert "--task is required" in unnamed.output and "tiny_regression" in unnamed.output


def test_the_project_task_comes_from_the_task_package_not_an_entry_point(
        registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # no entry point at all (a fresh install has none for it; an old one may)
    monkeypatch.setattr(task_module, "entry_points", lambda group: [])
    assert federated.project_tasks() == ["reranker"]
    assert "tasks.reranker" in federated.discover_tasks()
    assert federated.available_tasks() == ["reranker", "synthetic"]


def test_a_missing_task_package_is_no_task() -> None:
    assert federated.discover_tasks("no_such_task_package_here") == []


def test_an_unknown_task_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(TaskNotFoundError, match=r"no federated task named 'nope'; "
                       r"known tasks: reranker, synthetic"):
        load_task("nope", TaskContext(var=tmp_path))
    for command in (["device", "start-model", "--task", "nope"],
                    ["federated", "train", "--task", "nope"]):
        result = CliRunner().invoke(main, ["--var", str(tmp_path), "-q", *command])
        assert result.exit_code == 2, (command, result.output)
        assert "known tasks: reranker, synthetic" in result.output, command
