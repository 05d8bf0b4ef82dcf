"""The A/B report: replay on hand-made sessions, rendering tied to the JSON, end to end (#8)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import data
from candidate_gen import Stage1Artifact
from data.cli import CLIContext
from evaluation import (
    EvaluationError,
    ReportConfig,
    format_value,
    json_ready,
    load_frontier,
    privacy_summary,
    render_report,
    resolve_pointer,
)
from evaluation.arms import (
    Arm,
    HeldOutSample,
    KeystrokeBatch,
    ReplayResult,
    analyse,
    control_arm,
    replay,
    sample_held_out,
)
from evaluation.cli import report as report_group
from evaluation.metrics import sent_rank
from evaluation.stats import terciles
from reranker import RankingContext

PRIVACY = {
    "enabled": True, "delta": 1e-6, "noise_multiplier": 0.5, "clip_norm": 1.0,
    "sampling_rate": 0.01, "rounds": 100,
    "epsilon": {"local": 26.4, "device_local": 93.8, "shuffle": 93.8, "secure_sum": 0.076},
    "budget": {"kind": "secure_sum", "target_epsilon": 8.0},
    "guarantees": {"secure_sum": {"assumption": "ASSUMES secure aggregation"}},
}
SWEEP = [
    {"noise_multiplier": 0.5, "epsilon": {"local": 26.0, "secure_sum": 0.08}, "delta": 1e-6,
     "metrics": {"hit@5": 0.022, "hit@5_stage1_order": 0.020}},
    {"noise_multiplier": 2.0, "epsilon": {"local": 4.0, "secure_sum": 0.01}, "delta": 1e-6,
     "metrics": {"hit@5": 0.0205, "hit@5_stage1_order": 0.020}},
    {"noise_multiplier": None, "epsilon": None, "delta": None,
     "metrics": {"hit@5": 0.023, "hit@5_stage1_order": 0.020}},
]


class _Page(HTMLParser):
    """Collects <img> sources and the text of every element with a data-key."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.numbers: list[tuple[str, str, str]] = []
        self.worst_rows = 0
        self._open: list[tuple[str, str]] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "tr" and a.get("class") == "worst":
            self.worst_rows += 1
        if "data-key" in a:
            self._open.append((a["data-key"] or "", a.get("data-fmt") or ""))
            self._text = []

    def handle_data(self, text: str) -> None:
        self._text.append(text)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            key, fmt = self._open.pop()
            self.numbers.append((key, fmt, "".join(self._text)))


def _publish_sweep(var: Path, points: list[dict[str, Any]] | None = None) -> None:
    with data.publish_artifact(var / "federated" / "sweeps" / "reranker" / "v1",
                               kind="federated-sweep", parameters={"task": "reranker"}) as w:
        w.write_json("sweep.json", SWEEP if points is None else points)


def _synthetic_report(tmp_path: Path, seed: int = 0, same_arms: bool = False
                      ) -> dict[str, Any]:
    """analyse() on random per-session outcomes of 80 users (no world needed)."""
    rng = np.random.default_rng(seed)
    n_users = 80
    per_user = rng.integers(1, 5, n_users)
    device = np.repeat(np.arange(n_users), per_user)
    s = device.size
    sample = HeldOutSample(
        user_ids=np.arange(1000, 1000 + n_users, dtype=np.int32),
        embeddings=np.zeros((n_users, 2), np.float32), history=rng.integers(0, 30, n_users),
        device=device, cluster=np.zeros(s, np.int64), language=["en"] * s, text=["hi"] * s,
        sent_sticker=np.zeros(s, np.int32), sent_package=np.zeros(s, np.int32), split_ts=0.0)
    arms = ["control", "treatment", "popularity"]
    result = ReplayResult(
        k=5, arms=arms, rank={a: rng.integers(-1, 8, s) for a in arms},
        first_hit={a: rng.integers(-1, 6, s) for a in arms}, text_length=np.full(s, 6),
        reachable=rng.random(s) < 0.5,
        stickers_shown={a: rng.random(50) < 0.3 for a in arms},
        packages_shown={a: rng.random(10) < 0.5 for a in arms}, n_keystrokes=6 * s)
    if same_arms:
        result.rank["treatment"] = result.rank["control"]
    activity, labels = terciles(sample.history, "sessions")
    segments = {"language": rng.integers(0, 2, n_users), "activity": activity}
    config = ReportConfig(n_bootstrap=200, n_permutations=200, segment_bootstrap=100)
    out = analyse(result, sample, segments, {"language": ["en", "ja"], "activity": labels},
                  config, (50, 10))
    _publish_sweep(tmp_path)
    out.update(version="test", created_at="now", config=config.model_dump(mode="json"),
               inputs={"stage1": "s1", "treatment": "t1"}, privacy=privacy_summary(PRIVACY),
               frontier=load_frontier(tmp_path, "latest", task="reranker", k=5,
                                      reference_uplift=0.056),
               definitions=["a definition"])
    return dict(json_ready(out))


def _check_page(page: str, report: dict[str, Any]) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    assert parsed.images and all(src.startswith("data:image/png;base64,") and len(src) > 1000
                                 for src in parsed.images)
    assert len(parsed.numbers) > 50
    for key, fmt, text in parsed.numbers:
        assert text == format_value(resolve_pointer(report, key), fmt), key
    return parsed


def test_report_renders_and_every_number_is_the_json(tmp_path: Path) -> None:
    report = _synthetic_report(tmp_path)
    json.loads(json.dumps(report, allow_nan=False))  # strict JSON: no NaN or inf
    page, summary = render_report(report)
    parsed = _check_page(page, report)
    assert len(parsed.images) == 4
    keys = {key for key, _, _ in parsed.numbers}
    assert {"/ab/hit@5/uplift", "/ab/hit@5/ci_low", "/ab/hit@5/ci_high", "/ab/hit@5/p_value",
            "/ab/hit@5/mde", "/privacy/headline_epsilon", "/privacy/delta",
            "/privacy/epsilon/local", "/frontier/points/0/uplift", "/aa/uplift",
            "/aa/p_value"} <= keys
    assert parsed.worst_rows == 1
    ab = report["ab"]["hit@5"]
    assert format_value(ab["uplift"], "signed_pct") in summary
    assert format_value(ab["ci_low"], "signed_pct") in summary
    assert "ε (device_local) = 93.8" in summary  # secure_sum unmet: not the headline
    # every arm but the strongest baseline is compared with it, paired on the same users
    strongest = report["strongest_baseline"]
    assert strongest == "popularity"  # the only baseline arm of this synthetic replay
    assert set(report["arms_vs_strongest"]) == {"control", "treatment"}
    for arm, cmp in report["arms_vs_strongest"].items():
        assert cmp["mean_a"] == pytest.approx(report["arms"][strongest]["hit@5"])
        assert cmp["mean_b"] == pytest.approx(report["arms"][arm]["hit@5"])
        assert f"/arms_vs_strongest/{arm}/uplift" in keys
    same = report["vs_strongest"]["hit@5"]  # the headline: the same point estimate
    assert report["arms_vs_strongest"]["treatment"]["uplift"] == pytest.approx(same["uplift"])


def test_identical_arms_report_no_paired_uplift_and_ab_equals_aa(tmp_path: Path) -> None:
    report = _synthetic_report(tmp_path, same_arms=True)
    paired = report["paired"]["treatment"]["hit@5"]
    assert paired["uplift"] == 0.0 and paired["ci_low"] <= 0.0 <= paired["ci_high"]
    # with B scored like A, the randomised comparison is exactly the A/A check
    assert report["ab"]["hit@5"]["uplift"] == report["aa"]["uplift"]
    assert report["ab"]["hit@5"]["ci_low"] <= 0.0 <= report["ab"]["hit@5"]["ci_high"]


def test_frontier_uplift_and_missing_sweep(tmp_path: Path) -> None:
    _publish_sweep(tmp_path)
    frontier = load_frontier(tmp_path, "latest", task="reranker", k=5, reference_uplift=0.056)
    assert frontier["available"] and frontier["version"] == "v1"
    assert [p["uplift"] for p in frontier["points"]] == pytest.approx([0.1, 0.025, 0.15])
    assert frontier["non_private_uplift"] == pytest.approx(0.15)
    # a sweep from before the per-round baselines: the reference is stage-1 order, said so
    assert frontier["reference"] == "stage1_order"
    assert {p["reference"] for p in frontier["points"]} == {"stage1_order"}
    empty = load_frontier(tmp_path / "nowhere", "latest", task="reranker", k=5,
                          reference_uplift=0.056)
    assert not empty["available"] and "stickers federated sweep" in empty["note"]
    with pytest.raises(EvaluationError, match="--sweep v9"):
        load_frontier(tmp_path, "v9", task="reranker", k=5, reference_uplift=0.056)


def test_frontier_is_measured_against_the_strongest_no_model_row(tmp_path: Path) -> None:
    """Each sweep point's uplift is over the best no-model row of its own per-round
    metric (named per point), not over stage-1 order."""
    points: list[dict[str, Any]] = [
        {"noise_multiplier": 1.0, "epsilon": {"secure_sum": 2.0}, "delta": 1e-6,
         "metrics": {"hit@5": 0.25, "hit@5_stage1_order": 0.02, "hit@5_recents": 0.08,
                     "hit@5_owned_by_match": 0.20, "hit@5_owned_by_match_new_package": 0.3,
                     "hit@5_strongest_baseline": 0.20, "hit@5_minus_strongest": 0.05}},
        {"noise_multiplier": None, "epsilon": None, "delta": None,
         "metrics": {"hit@5": 0.24, "hit@5_stage1_order": 0.02, "hit@5_fold_in_only": 0.16,
                     "hit@5_owned_by_match": 0.15, "hit@5_strongest_baseline": 0.16}},
    ]
    _publish_sweep(tmp_path, points)
    frontier = load_frontier(tmp_path, "latest", task="reranker", k=5, reference_uplift=0.056)
    assert frontier["reference"] == "strongest"
    assert [p["uplift"] for p in frontier["points"]] == pytest.approx([0.25, 0.5])
    assert [p["reference"] for p in frontier["points"]] == ["owned_by_match", "fold_in_only"]
    assert [p["hit_control"] for p in frontier["points"]] == pytest.approx([0.20, 0.16])


def test_privacy_summary_of_a_model_without_dp() -> None:
    summary = privacy_summary({"enabled": False, "epsilon": None, "note": "central"})
    assert not summary["available"] and summary["epsilon"] == {} and summary["note"] == "central"
    summary = privacy_summary(PRIVACY)
    # no assumption_met fields: only local and device_local hold; local is per upload
    assert summary["headline_kind"] == "device_local" and summary["headline_epsilon"] == 93.8
    assert summary["kinds"] == ["device_local", "local", "shuffle", "secure_sum"]
    assert summary["labels"]["secure_sum"] == ("if secure aggregation and a secret sampling "
                                               "coin were in place")
    assert summary["assumptions"]["secure_sum"].startswith("if secure aggregation and")
    met = {**PRIVACY, "guarantees": {"secure_sum": {"assumption_met": True}}}
    assert privacy_summary(met)["headline_kind"] == "secure_sum"


# ---------------------------------------------------------------- on the tiny world
@pytest.fixture(scope="module")
def context(tiny_var: Path) -> RankingContext:
    return RankingContext.build(Stage1Artifact.load(tiny_var))


def _hand_made_sample(context: RankingContext) -> HeldOutSample:
    """Two devices, one session each, typing a keyword of a sticker of candidate 3.

    The sent sticker is the one candidate 3 shows for the full text.
    """
    stickers = context.dataset.table("stickers")
    keywords = context.dataset.table("keywords").filter(pl.col("language") == "en")
    words = dict(keywords.group_by("label_id").agg(pl.col("keyword").first()).iter_rows())
    texts, sent, packages = [], [], []
    for cluster in (0, 1):
        package = int(context.candidate_ids[cluster, 3])
        labels = stickers.filter(pl.col("package_id") == package)["label_ids"].explode()
        text = next(words[x] for x in labels.to_list() if x in words)
        _, shown = context.keystroke_features(cluster, "en", text)
        texts.append(text)
        sent.append(int(shown[3]))
        packages.append(package)
    return HeldOutSample(
        user_ids=np.array([0, 1], np.int32),
        embeddings=np.zeros((2, context.layout.n_factors), np.float32),
        history=np.array([0, 0]), device=np.array([0, 1]), cluster=np.array([0, 1]),
        language=["en", "en"], text=texts, sent_sticker=np.array(sent, np.int32),
        sent_package=np.array(packages, np.int32), split_ts=0.0)


def test_replay_on_hand_made_sessions_matches_keystroke_by_keystroke(
        context: RankingContext) -> None:
    sample = _hand_made_sample(context)

    # an oracle that always puts candidate 3 (the sent package) first
    def oracle(batch: KeystrokeBatch) -> tuple[np.ndarray, np.ndarray]:
        scores = np.where(context.candidate_mask[batch.cluster], 0.0, -np.inf)
        scores[:, 3] = 1.0
        return scores, batch.shown

    arms = [control_arm(context), Arm("oracle", "oracle", oracle)]
    result = replay(context, sample, arms, 5, chunk=3, show_progress=False)
    again = replay(context, sample, arms, 5, chunk=4096, show_progress=False)
    for s, text in enumerate(sample.text):
        expected_first = -1
        for i in range(1, len(text) + 1):
            feats, shown = context.keystroke_features(int(sample.cluster[s]), "en", text[:i])
            if shown[3] == sample.sent_sticker[s] and expected_first < 0:
                expected_first = i
        assert result.rank["oracle"][s] == 0
        assert result.first_hit["oracle"][s] == expected_first
        batch = KeystrokeBatch(keyword=feats[None], shown=shown[None],
                               cluster=sample.cluster[s:s + 1], device=np.array([0]),
                               session=np.array([s]), signature=np.array([0]),
                               label_keys=np.zeros(0, np.int64), n_label_slots=1)
        control, items = arms[0].score(batch)
        assert result.rank["control"][s] == sent_rank(control, items,
                                                      sample.sent_sticker[s:s + 1])[0]
    assert result.reachable.all()
    assert result.n_keystrokes == sum(len(t) for t in sample.text)
    for arm in ("control", "oracle"):
        np.testing.assert_array_equal(result.rank[arm], again.rank[arm])
        np.testing.assert_array_equal(result.first_hit[arm], again.first_hit[arm])
        assert result.stickers_shown[arm].any()
    assert result.stickers_shown["oracle"][sample.sent_sticker].all()


@pytest.mark.slow
def test_report_end_to_end_on_the_tiny_world(tiny_var: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from federated import TaskContext
    from reranker import make_task

    var = tmp_path / "var"
    shutil.copytree(tiny_var / "stage1", var / "stage1")  # its manifest points at the world
    runner = CliRunner()
    cli = CLIContext(var=var, quiet=True)
    missing = runner.invoke(report_group, ["ab"], obj=cli)
    assert isinstance(missing.exception, EvaluationError)
    assert "no treatment reranker" in str(missing.exception)

    task = make_task(TaskContext(var=var, seed=0, options={}))
    theta = task.train_central(epochs=1, rng=np.random.default_rng(0))
    for kind_dir, privacy in (("reranker", PRIVACY), ("reranker_central", {"enabled": False})):
        with data.publish_artifact(var / kind_dir / "v1", kind="reranker", parameters={}) as w:
            task.export(theta, w.path)
            np.save(w.path / "global_weights.npy", theta)
            w.write_json("privacy.json", privacy)
    _publish_sweep(var)

    result = runner.invoke(report_group, ["ab", "--devices", "150", "--bootstrap", "200"],
                           obj=cli, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    directory = data.resolve_artifact(var / "reports" / "ab")
    manifest = data.read_manifest(directory, kind="report")
    assert {"report.html", "report.json", "summary.md"} <= set(manifest.files)
    report = json.loads((directory / "report.json").read_text())
    assert result.output == (directory / "summary.md").read_text()
    assert set(report["arms"]) == {"control", "treatment", "popularity", "central", "recents",
                                   "owned", "owned_by_match", "device_counts",
                                   "segment_popularity", "fold_in_only", "treatment_explore"}
    baselines = report["baselines"]
    assert set(baselines) == {"recents", "owned", "owned_by_match", "device_counts",
                              "segment_popularity", "popularity", "fold_in_only"}
    # the same candidates in two orders: the same ceiling
    assert report["arms"]["owned_by_match"]["ceiling"] == report["arms"]["owned"]["ceiling"]
    # the owned row holds every recents candidate (sent stickers come first in it)
    assert report["arms"]["owned"]["ceiling"] >= report["arms"]["recents"]["ceiling"]
    strongest = report["strongest_baseline"]
    assert report["arms"][strongest]["hit@5"] == max(report["arms"][a]["hit@5"]
                                                     for a in baselines)
    vs = report["vs_strongest"]["hit@5"]
    assert vs["mean_a"] == pytest.approx(report["arms"][strongest]["hit@5"])
    assert vs["mean_b"] == pytest.approx(report["arms"]["treatment"]["hit@5"])
    # a row can only hit a sticker it could show: hit@5 never exceeds the ceiling
    for arm in report["arms"].values():
        assert arm["hit@5"] <= arm["ceiling"] + 1e-12
    split = report["history_split"]
    assert (split["package_sent_before"]["sessions"] + split["package_new_to_device"]["sessions"]
            == report["sample"]["sessions"])
    assert report["inputs"]["validation_devices_excluded"] > 0
    assert report["sample"]["devices"] == 150
    assert report["sample"]["users_a"] + report["sample"]["users_b"] == 150
    ab = report["ab"]["hit@5"]
    assert ab["ci_low"] is None or ab["ci_low"] <= ab["ci_high"]
    # the central and treatment arms share their weights here: identical rankings
    assert report["arms"]["central"]["hit@5"] == report["arms"]["treatment"]["hit@5"]
    paired = report["paired"]["central"]["hit@5"]
    assert paired["difference"] == report["paired"]["treatment"]["hit@5"]["difference"]
    assert report["privacy"]["headline_epsilon"] == 93.8  # device_local: secure_sum unmet
    assert report["frontier"]["available"]
    assert set(report["segments"]) == {"language", "cluster_size", "activity"}
    _check_page((directory / "report.html").read_text(), report)
    assert f"vs the strongest baseline ({strongest}), hit@5" in result.output
    assert "ε (device_local) = 93.8" in result.output  # secure_sum unmet: not the headline


def test_held_out_sample_never_holds_a_validation_device(context: RankingContext) -> None:
    split = data.time_split(context.dataset)
    users = context.dataset.table("users")["user_id"].to_numpy()
    validation = users[split.is_validation_device(users)]
    assert validation.size > 0
    sample = sample_held_out(context, split.test_start, 10_000, np.random.default_rng(0),
                             exclude_users=validation)
    assert not np.isin(sample.user_ids, validation).any()
    assert (sample.ts >= split.test_start).all()
    # history is strictly before the split; held-out sessions keep device-then-time order
    hist_ts = sample.history_logs["ts"].cast(pl.Int64).to_numpy() / 1000.0
    assert (hist_ts < split.test_start).all()
    order = np.lexsort((sample.ts, sample.device))
    np.testing.assert_array_equal(order, np.arange(sample.n_sessions))


def test_report_table_lists_every_arm_of_several_reports(tmp_path: Path) -> None:
    from click.testing import CliRunner

    def fake(hits: dict[str, float], strongest: str) -> dict[str, Any]:
        return {"report": "ab", "headline_metric": "hit@5",
                "arms": {a: {"hit@5": h} for a, h in hits.items()},
                "strongest_baseline": strongest,
                "vs_strongest": {"hit@5": {"uplift": 0.1, "ci_low": -0.05, "ci_high": 0.25}}}

    for name, hits in (("baseline", {"control": 0.02, "treatment": 0.05, "recents": 0.04}),
                       ("favourites_off", {"control": 0.03, "recents": 0.01})):
        d = tmp_path / name / "reports" / "ab" / "v1"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps(fake(hits, "recents")))
    out = CliRunner().invoke(report_group, ["table", str(tmp_path / "baseline/reports/ab/v1"),
                                            str(tmp_path / "favourites_off/reports/ab/v1")])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "| world | control | treatment | recents | strongest baseline | " \
                       "treatment vs it |"
    assert lines[2].startswith("| baseline | 2.00% | 5.00% | 4.00% | recents | +10.0")
    assert lines[3].startswith("| favourites_off | 3.00% | — | 1.00% | recents |")
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    refused = CliRunner().invoke(report_group, ["table", str(bad)])
    assert refused.exit_code != 0 and "not an A/B report.json" in str(refused.exception)
