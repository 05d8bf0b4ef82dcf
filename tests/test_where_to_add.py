"""The README's "Where to add things" matches the code (issue #14): its examples run.

Each example is the whole change for a strategy, an on-device task, an HTTP endpoint and a
report metric; these tests take them from the README itself and show each is picked up
with nothing else edited.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import evaluation._metrics as metrics_module
import federated
import federated._strategy as strategy_module
import federated._task as task_module
import tasks
from evaluation import metrics
from federated import FederatedConfig, build_strategy
from federated.strategies import available_strategies

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Where to add things")
    return text[start: text.index("\n## ", start + 1)]


def _examples() -> dict[str, str]:
    """The section's python blocks, keyed by the file their first comment names."""
    blocks = re.findall(r"```python\n(.*?)```", _section(), re.S)
    named = {}
    for block in blocks:
        first = re.match(r"# (\S+)", block)
        assert first, f"a python block of the section names no file: {block[:60]!r}"
        named[first.group(1).rstrip(":")] = block
    return named


def test_every_path_the_section_names_exists() -> None:
    paths = set(re.findall(r"`((?:[a-z_]+/)+(?:[a-z_]+\.py)?)`", _section()))
    assert {"federated/strategies/", "tasks/", "serving/", "serving/_openapi.py",
            "serving/_app.py", "evaluation/_metrics.py", "tasks/reranker.py"} <= paths
    for path in paths:
        assert (ROOT / path).exists(), path
    examples = set(_examples())
    assert examples == {"federated/strategies/median.py", "tasks/tiny_regression.py",
                        "serving/_api.py", "evaluation/_metrics.py"}
    for path in ("federated/strategies/median.py", "tasks/tiny_regression.py"):  # new files
        assert (ROOT / path).parent.is_dir() and not (ROOT / path).exists()
    for path in ("serving/_api.py", "evaluation/_metrics.py"):  # edits
        assert (ROOT / path).is_file()



def test_the_strategy_example_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategy_module, "_REGISTRY", dict(strategy_module._REGISTRY))
    exec(_examples()["federated/strategies/median.py"], {"__name__": "median_example"})
    assert "median" in available_strategies()
    # dotted keys travel as **values, which load types Any
    values: dict[str, Any] = {"strategy.name": "median", "secure_aggregation.enabled": False,
                              "privacy.target_epsilon": None, "privacy.noise_multiplier": 0.0}
    config = FederatedConfig.load(None, **values)
    strategy = build_strategy(config, 3)
    while hasattr(strategy, "inner"):
        strategy = strategy.inner
    deltas = np.array([[1, 0, 0], [2, 5, 0], [9, 0, 1]], np.float32)
    out = strategy.aggregate(np.zeros(3, np.float32), deltas, np.ones(3, np.int64))
    np.testing.assert_array_equal(out.parameters, [2, 0, 0])


@pytest.fixture()
def task_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(task_module, "_REGISTRY", dict(task_module._REGISTRY))
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(tmp_path)])
    yield tmp_path
    sys.modules.pop("tasks.tiny_regression", None)


def test_the_task_example_is_picked_up(task_folder: Path) -> None:
    (task_folder / "tiny_regression.py").write_text(_examples()["tasks/tiny_regression.py"])
    task = federated.load_task("tiny_regression", federated.TaskContext(var=task_folder))
    assert (task.name, task.n_devices) == ("tiny_regression", 40)


def test_the_endpoint_example_uses_what_its_module_defines() -> None:
    example = ast.parse(_examples()["serving/_api.py"])
    module = ast.parse((ROOT / "serving" / "_api.py").read_text())
    defined = {n.id for n in ast.walk(module) if isinstance(n, ast.Name)} | {
        alias.asname or alias.name for n in ast.walk(module)
        if isinstance(n, ast.ImportFrom) for alias in n.names}
    fragment = next(f for f in module.body if isinstance(f, ast.FunctionDef)
                    and any("documents" in ast.unparse(d) for d in f.decorator_list))
    assert ast.unparse(fragment.decorator_list[0]) == "documents(api)"
    local = {n.id for n in ast.walk(fragment) if isinstance(n, ast.Name)
             and isinstance(n.ctx, ast.Store)}
    assert {"paths", "bad"} <= local
    used = {n.id for n in ast.walk(example) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)}
    assert used <= defined | {"languages", "sorted"}, used - defined


def test_the_metric_example_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _examples()["evaluation/_metrics.py"].split("\n", 1)[1].strip().rstrip(",")
    metric = eval(entry, dict(vars(metrics_module)))  # the namespace of the file it goes in
    monkeypatch.setattr(metrics_module, "METRICS", (*metrics.METRICS, metric))
    values = metrics.session_metrics(np.array([0, 2, 3, -1]), 5)
    np.testing.assert_array_equal(values["hit@3"], [1.0, 1.0, 0.0, 0.0])
    assert metric.definition in metrics.metric_definitions()
