"""Issue #18 item 5: an aggregated round publishes a candidate; a policy promotes it.

With fake artifacts and a validation figure given per version: the candidate goes live
only when its figure does not drop below the live version's (beyond the tolerance) and its
base is still live; the ``operator`` policy leaves it for ``models promote``; every
decision is recorded in the promotion history with its figures, and a candidate that was
never promoted is never a rollback target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_serving_support import build_var, publish_fake_reranker

import data
from serving import promote, rollback
from serving.versions import decide_promotion, history, live_stack


@pytest.fixture()
def var(tiny_world: Path, tmp_path: Path) -> Path:
    root = build_var(tiny_world, tmp_path / "var")
    promote(root, "reranker", data.list_versions(root / "reranker")[0])
    return root


def latest(var: Path) -> str:
    return data.resolve_artifact(var / "reranker", "latest").name


def figures(values: dict[str, float]) -> tuple[Callable[[Path, str], float], list[str]]:
    calls: list[str] = []

    def evaluate(var: Path, version: str) -> float:
        calls.append(version)
        return values[version]

    return evaluate, calls


def test_validation_promotes_a_candidate_that_does_not_drop(var: Path) -> None:
    base = latest(var)
    candidate = publish_fake_reranker(var, tag="good", latest=False).name  # published, not promoted
    assert latest(var) == base
    evaluate, calls = figures({base: 0.79, candidate: 0.80})
    decision = decide_promotion(var, candidate, base, evaluate=evaluate)
    assert decision.promoted and sorted(calls) == sorted([base, candidate])
    assert latest(var) == candidate
    entries = history(var / "reranker")
    assert [e["action"] for e in entries[-2:]] == ["candidate", "publish"]
    assert entries[-2]["promoted"] is True and entries[-2]["candidate_figure"] == 0.80
    assert entries[-2]["live_figure"] == 0.79 and entries[-2]["policy"] == "validation"
    assert rollback(var, "reranker") == (candidate, base)


def test_validation_holds_a_candidate_whose_figure_drops(var: Path) -> None:
    base = latest(var)
    poisoned = publish_fake_reranker(var, tag="poisoned", latest=False).name
    evaluate, _ = figures({base: 0.79, poisoned: 0.0})
    decision = decide_promotion(var, poisoned, base, evaluate=evaluate)
    assert not decision.promoted and "below the live version's" in decision.reason
    assert latest(var) == base
    last = history(var / "reranker")[-1]
    assert (last["action"], last["version"], last["promoted"]) == ("candidate", poisoned, False)
    assert poisoned not in live_stack(history(var / "reranker"))
    # within the tolerance it would have gone live
    slight = publish_fake_reranker(var, tag="slight", latest=False).name
    evaluate, _ = figures({base: 0.79, slight: 0.77})
    assert decide_promotion(var, slight, base, evaluate=evaluate, tolerance=0.05).promoted
    assert latest(var) == slight


def test_operator_policy_and_a_moved_base_leave_latest_alone(var: Path) -> None:
    base = latest(var)
    candidate = publish_fake_reranker(var, tag="cand", latest=False).name
    evaluate, calls = figures({})
    decision = decide_promotion(var, candidate, base, policy="operator", evaluate=evaluate)
    assert not decision.promoted and "stickers models promote" in decision.reason
    assert calls == [] and latest(var) == base
    promote(var, "reranker", candidate)  # the operator's command, recorded as such
    assert [e["action"] for e in history(var / "reranker")[-2:]] == ["candidate", "promote"]
    other = publish_fake_reranker(var, tag="other", latest=False).name
    evaluate, calls = figures({other: 1.0, base: 0.0})
    moved = decide_promotion(var, other, base, evaluate=evaluate)  # base is no longer live
    assert not moved.promoted and calls == [] and latest(var) == candidate
    with pytest.raises(ValueError, match="policy"):
        decide_promotion(var, other, base, policy="always")  # type: ignore[arg-type]
