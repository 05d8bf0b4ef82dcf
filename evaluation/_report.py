"""``stickers report ab``: load the artifacts, replay, analyse, render and publish the report.

Output (``var/reports/ab/<version>/``, a ``report`` artifact): ``report.html``
(self-contained), ``report.json`` (every number; non-finite values are ``null``) and
``summary.md`` (the short summary the CLI prints).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from candidate_gen import Stage1Artifact
from data import ArtifactError, new_version, publish_artifact, time_split
from evaluation._analysis import analyse, terciles
from evaluation._baselines import segment_popularity_scores, sticker_label_table
from evaluation._config import ReportConfig
from evaluation._errors import EvaluationError
from evaluation._metrics import metric_definitions
from evaluation._privacy import load_frontier, privacy_summary
from evaluation._render import figures, render_html, render_markdown
from evaluation._replay import (
    Arm,
    control_arm,
    device_counts_arm,
    package_popularity,
    personalized_embeddings,
    popularity_arm,
    recents_arm,
    replay,
    reranker_arm,
    row_arm,
    sample_held_out,
    segment_popularity_arm,
)
from reranker import RankingContext, RerankerArtifact, RowConfig, RowReplay, initial_parameters

__all__ = ["DEFINITIONS", "build_ab_report", "json_ready", "publish_report", "render_report"]

DEFINITIONS: tuple[str, ...] = (
    "Keystrokes are the successive prefixes (by character) of the text typed when the sticker "
    "was sent; every arm scores the same candidates and keyword features on each keystroke.",
    "Row: the top k candidates (by the arm's score, ties in stage-1 order) that have a sticker "
    "to show; a candidate shows its first sticker carrying its best-matching label.",
    metric_definitions() + " A sent sticker no candidate shows (stage 1 did not shortlist "
    "its package, or the package shows another sticker for this text) is a miss everywhere.",
    "Baselines (no federated training): recents = the person's own earlier-sent stickers "
    "whose labels match the text, by recency-weighted send count (half-life "
    "`half_life_days`), not limited to stage 1; device_counts = the stage-1 candidates, "
    "matched first, by the device's recency-weighted sends of each package, showing its "
    "most-sent matching sticker of it, then stage-1 order; segment_popularity = matched "
    "candidates by pre-split server-log weight in the person's language × region × age, "
    "then language; popularity = by global pre-split weight; fold_in_only = the initial "
    "shared weights with the phone's own personalisation. A device knows all of its own "
    "earlier sends (held-out ones before the replayed session included); owned = every "
    "sticker of a package the device holds at that moment that matches the text, sent ones "
    "first (by recency-weighted count), then by how recently the package arrived; "
    "owned_by_match = the same stickers by match strength first (a whole keyword at the "
    "end before one being typed), that order breaking ties; the "
    "server only "
    "its log before the split.",
    "Headline: the treatment against the strongest baseline (highest mean hit@k on this "
    "sample), paired on the same users and keystrokes; stage-1 order is shown beside it. "
    "Ceiling: share of sessions whose sent sticker was among the arm's candidates at send "
    "time (no ordering can hit more). Sent before / new to the device: whether the device had "
    "sent that sticker / a sticker of that package before the session.",
    "Split: one time for the whole pipeline (the dataset's `test_start`); validation devices "
    "(used for tuning and the per-round metric) are never in the sample.",
    "Keystrokes to hit: characters typed when the row first showed the sent sticker; "
    "'when hit' averages sessions where it appeared, 'never hit' is the share where it "
    "never did, 'capped' counts a never-hit session as len(text)+1.",
    "Coverage: distinct stickers (packages) shown in any row of the arm / catalogue size.",
    "A/B: users are split 50/50 by sha256(salt, user id); A users are scored by stage 1 "
    "only, B users by the federated reranker with their on-device embedding (fold-in of "
    "pre-split history). Means are per session (ratio of sums over users).",
    "Intervals: percentile user-level bootstrap (users resampled with all their sessions; "
    "paired: the same users for both arms). p: permutation of users between arms (A/B) or "
    "sign flips of each user's difference (paired). MDE: (z(1-α/2)+z(power)) × delta-method "
    "SE of the difference, relative to A. A/A: the two hash groups both under A; a "
    "significant A/A difference flags a chance imbalance of the split, which the randomised "
    "estimate carries and the paired estimate does not.",
    "Segments: the user's language; cluster size = terciles of users per stage-1 cluster "
    "(clusters as units); activity = terciles of pre-split sessions per device. The worst "
    "segment (≥ 20 users) has the lowest paired uplift.",
)


def json_ready(obj: Any) -> Any:
    """Plain JSON types; NaN and ±inf become ``None``."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _load_treatment(var: Path, version: str) -> RerankerArtifact:
    try:
        return RerankerArtifact.load(var, version)
    except ArtifactError as exc:
        raise EvaluationError(
            f"no treatment reranker ({exc}); publish one with `stickers federated train "
            "--task reranker` or pass --treatment VERSION") from exc


def _load_central(var: Path, version: str, stage1: Stage1Artifact
                  ) -> tuple[RerankerArtifact | None, str]:
    if version == "none":
        return None, "not requested"
    try:
        central = RerankerArtifact.load(var, version, kind_dir="reranker_central")
    except ArtifactError as exc:
        if version != "latest":
            raise EvaluationError(f"--central {version}: {exc}") from exc
        return None, ("no central reference under var/reranker_central "
                      "(run `stickers reranker train-central`)")
    if central.stage1_version != stage1.version:
        return None, (f"central reference {central.version} was trained on stage 1 "
                      f"{central.stage1_version}, not {stage1.version}: skipped")
    return central, ""


def _segments(context: RankingContext, user_ids: np.ndarray, history: np.ndarray
              ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    users = context.dataset.table("users").select("user_id", "language")
    lang = (pl.DataFrame({"user_id": user_ids.astype(np.int32)})
            .join(users, on="user_id", how="left")["language"].fill_null("unknown").to_list())
    languages = sorted(set(lang))
    index = {x: i for i, x in enumerate(languages)}
    sizes = context.stage1.user_clusters.group_by("cluster_id").len()
    size_of = np.zeros(context.n_clusters, np.float64)
    size_of[sizes["cluster_id"].to_numpy()] = sizes["len"].to_numpy()
    cluster = np.asarray(context.stage1.cluster_of(user_ids), np.int64)
    size_group, size_labels = terciles(size_of[cluster], "users", reference=size_of)
    activity, activity_labels = terciles(history, "sessions")
    return ({"language": np.array([index[x] for x in lang], np.int64),
             "cluster_size": size_group, "activity": activity},
            {"language": languages, "cluster_size": size_labels, "activity": activity_labels})


def build_ab_report(var: str | Path, *, stage1: str = "latest", treatment: str = "latest",
                    central: str = "latest", sweep: str = "latest",
                    config: ReportConfig | None = None,
                    show_progress: bool = True) -> dict[str, Any]:
    """Replay held-out sessions under every arm and compute every number of the report.

    Parameters
    ----------
    var : str or Path
        Artifact root.
    stage1, treatment : str
        Versions (or ``latest``); the treatment must be trained on that stage-1 version.
    central : str
        Version of ``var/reranker_central`` (``latest``: used if present; ``none``: skip).
    sweep : str
        Version or directory of a federated sweep (``latest``: used if present; ``none``).
    config : ReportConfig, optional
    show_progress : bool

    Returns
    -------
    dict
        The report JSON (non-finite numbers already ``None``).

    Raises
    ------
    EvaluationError
        Missing treatment, incompatible artifacts, or no held-out sessions.
    """
    var = Path(var)
    config = config or ReportConfig()
    s1 = Stage1Artifact.load(var, stage1)
    model = _load_treatment(var, treatment)
    if model.stage1_version != s1.version:
        raise EvaluationError(
            f"treatment {model.version} was trained on stage 1 {model.stage1_version!r}, but "
            f"--stage1 {stage1} is {s1.version!r}; pass --stage1 {model.stage1_version}")
    reference, central_note = _load_central(var, central, s1)
    context = RankingContext.build(s1)
    if model.layout.package_level != context.layout:
        raise EvaluationError(f"treatment layout {model.layout} does not match stage 1's "
                              f"{context.layout}")
    split = time_split(context.dataset)
    split_ts = split.test_start
    trained_to = model.info.get("split_ts")
    if trained_to is not None and float(trained_to) > split_ts + 1.0:
        raise EvaluationError(
            f"treatment {model.version} trained on sessions up to "
            f"{datetime.fromtimestamp(float(trained_to), UTC).isoformat()}, after the "
            f"dataset's split {datetime.fromtimestamp(split_ts, UTC).isoformat()}: its "
            "held-out figures would be leaked; retrain it on this dataset's split")
    dataset_users = context.dataset.table("users")["user_id"].to_numpy()
    validation = dataset_users[split.is_validation_device(dataset_users)]
    rng = np.random.default_rng(config.seed)
    sample = sample_held_out(context, split_ts, config.devices, rng, exclude_users=validation)
    history = sample.device_history(context, config.half_life_days)
    owned = sample.device_history(context, config.half_life_days, with_holdings=True)
    sticker_labels = sticker_label_table(context.dataset.table("stickers"))
    row: RowReplay | None = None
    personalized: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def model_arm(name: str, artifact: RerankerArtifact, weights: np.ndarray | None = None,
                  explore_slots: int = 0) -> Arm:
        # a sticker-row model replays its own candidates; a package model scores the
        # cluster's packages
        nonlocal row
        theta = artifact.weights if weights is None else weights
        if artifact.layout.n_history_features:
            if row is None:
                row = RowReplay(context, sample.user_ids, sample.history_logs, split_ts,
                                sample.device, sample.ts, sample.sent_sticker,
                                RowConfig(**artifact.info.get("row", {})))
            done = personalized.get(id(theta))  # the explore arm reuses the treatment's
            if done is None or done[0] is not theta:
                done = personalized[id(theta)] = (theta, row.personalize(theta))
            return row_arm(name, row, theta, artifact.layout, done[1],
                           explore_slots=explore_slots, k=config.k)
        return reranker_arm(name, context, theta,
                            personalized_embeddings(context, sample, theta))

    arms: list[Arm] = [
        control_arm(context),
        model_arm("treatment", model),
        recents_arm(history, sticker_labels),
        recents_arm(owned, sticker_labels, name="owned"),
        recents_arm(owned, sticker_labels, name="owned_by_match", by_match=True),
        device_counts_arm(context, history, sticker_labels),
        segment_popularity_arm(context, segment_popularity_scores(context, sample.user_ids,
                                                                  split_ts)),
        popularity_arm(context, package_popularity(context, split_ts)),
        # the treatment's own model and candidates at its initial shared weights: what the
        # phone's personalisation gives without any federated training
        model_arm("fold_in_only", model, initial_parameters(model.layout)),
    ]
    if model.layout.n_history_features:
        # what one exploration slot costs and gains (right after the treatment: the row
        # replay scores each batch once for both)
        arms.insert(2, model_arm("treatment_explore", model, explore_slots=1))
    if reference is not None:
        arms.append(model_arm("central", reference))
    result = replay(context, sample, arms, config.k, chunk=config.chunk_keystrokes,
                    show_progress=show_progress)
    segments, labels = _segments(context, sample.user_ids, sample.history)
    catalogue = (context.dataset.table("stickers").height,
                 context.dataset.table("packages").height)
    report = analyse(result, sample, segments, labels, config, catalogue,
                     seen_sticker=history.seen_sticker, seen_package=history.seen_package)
    task = str(model.manifest.parameters.get("task", "reranker"))
    report.update(
        report="ab", version=new_version(), created_at=datetime.now(UTC).isoformat(),
        config=config.model_dump(mode="json"),
        inputs={"var": str(var), "stage1": s1.version, "dataset": str(context.dataset.root),
                "treatment": model.version, "treatment_dir": str(model.directory),
                "central": reference.version if reference is not None else None,
                "central_note": central_note,
                "split_time": datetime.fromtimestamp(split_ts, UTC).isoformat(),
                "validation_start": datetime.fromtimestamp(split.validation_start,
                                                           UTC).isoformat(),
                "validation_devices_excluded": int(validation.size)},
        privacy=privacy_summary(model.privacy),
        frontier=load_frontier(var, sweep, task=task, k=config.k,
                               reference_uplift=config.reference_uplift),
        definitions=list(DEFINITIONS),
    )
    return dict(json_ready(report))


def render_report(report: dict[str, Any]) -> tuple[str, str]:
    """(HTML page, Markdown summary) of a report JSON."""
    return render_html(report, figures(report)), render_markdown(report)


def publish_report(var: str | Path, report: dict[str, Any]) -> Path:
    """Render and publish ``var/reports/ab/<version>/`` atomically; returns the directory."""
    destination = Path(var) / "reports" / "ab" / report["version"]
    report = {**report, "output": str(destination / "report.html")}
    page, summary = render_report(report)
    m = report["headline_metric"]
    with publish_artifact(destination, kind="report",
                          parameters={"report": "ab", "config": report["config"],
                                      "inputs": report["inputs"]},
                          input_fingerprint=str(report["inputs"]["treatment"])) as writer:
        writer.write_json("report.json", report)
        (writer.path / "report.html").write_text(page, encoding="utf-8")
        (writer.path / "summary.md").write_text(summary, encoding="utf-8")
        writer.metrics = {"metric": m, "uplift": report["ab"][m]["uplift"],
                          "ci_low": report["ab"][m]["ci_low"],
                          "ci_high": report["ab"][m]["ci_high"],
                          "p_value": report["ab"][m]["p_value"],
                          "epsilon": report["privacy"]["epsilon"]}
    return destination
