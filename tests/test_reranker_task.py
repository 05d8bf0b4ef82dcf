"""On-device training, the federated task, suggestions and the device bundle (tiny world)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest

import data
from candidate_gen import Stage1Artifact
from federated import FederatedTask, LocalResult
from keyword_index import KeywordIndex
from reranker import (
    BUNDLE_BUDGET_BYTES,
    OnnxScorer,
    RankingContext,
    RerankerArtifact,
    RerankerInputError,
    RerankerTask,
    RerankerTaskConfig,
    Suggester,
    UnknownClusterError,
    UnknownLanguageError,
    build_sessions,
    score_impressions,
)
from reranker.model import score_candidates
from reranker.row import hits_at


@pytest.fixture(scope="module")
def context(tiny_var: Path) -> RankingContext:
    return RankingContext.build(Stage1Artifact.load(tiny_var))


def _one_character_log(ctx: RankingContext, cluster: int) -> tuple[pl.DataFrame, set[int], int]:
    """A device whose every sent sticker belongs to one character (creator) of its cluster.

    Picks the creator of the cluster's lowest-ranked candidates, so stage 1 alone does not
    put it first. Returns the log, that character's candidate packages and a user id.
    """
    packages = ctx.dataset.table("packages")
    ids = ctx.candidate_ids[cluster][ctx.candidate_mask[cluster]]
    creator_of = dict(packages.select("package_id", "creator_id").iter_rows())
    creator = creator_of[int(ids[-1])]
    chosen = {int(p) for p in ids if creator_of[int(p)] == creator}
    user = int(ctx.stage1.user_clusters.filter(pl.col("cluster_id") == cluster)["user_id"][0])
    stickers = ctx.dataset.table("stickers").filter(pl.col("package_id").is_in(sorted(chosen)))
    keywords = ctx.dataset.table("keywords").filter(pl.col("language") == "en")
    words = dict(keywords.group_by("label_id").agg(pl.col("keyword").first()).iter_rows())
    rows = []
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    for i, (sticker, package, labels) in enumerate(
            stickers.select("sticker_id", "package_id", "label_ids").iter_rows()):
        label = next((x for x in labels if x in words), None)
        if label is None:
            continue
        rows.append({"session_id": i, "user_id": user, "ts": t0 + timedelta(hours=i),
                     "language": "en", "text": words[label], "sticker_id": sticker,
                     "package_id": package})
    log = pl.DataFrame(rows * 3).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("session_id"),
        (pl.col("ts") + pl.duration(days=pl.int_range(pl.len()) // len(rows) * 30)).alias("ts"))
    return data.validate_frame(log.cast(data.SCHEMAS["device_logs"]), "device_logs"), chosen, user


def test_device_learns_its_favourite_character(context: RankingContext) -> None:
    cluster = 0
    log, chosen, _ = _one_character_log(context, cluster)
    sessions = build_sessions(context, log, show_progress=False)
    task = RerankerTask(context, sessions, RerankerTaskConfig(split_quantile=0.99, steps=30))
    theta = task.initial_parameters()
    n = int(context.candidate_mask[cluster].sum())
    ids = context.candidate_ids[cluster, :n]
    neutral = np.zeros((n, task.layout.n_keyword_features), np.float32)  # nothing typed yet

    def top(theta_: np.ndarray, u: np.ndarray) -> int:
        scores = score_candidates(theta_, task.layout, u, context.candidate_factors[cluster, :n],
                                  neutral, context.prior[:n])
        return int(ids[int(np.argmax(scores))])

    fresh_u = task.user_embeddings(np.array([0]))[0]
    assert top(theta, fresh_u) not in chosen  # a fresh device follows stage 1
    result = task.local_train(theta, np.array([0]), np.random.default_rng(0))
    assert result.n_examples[0] > 0
    local_theta = theta + result.deltas[0]
    trained_u = task.user_state[0]
    assert task.has_state[0] and np.linalg.norm(trained_u) > 0
    assert top(local_theta, trained_u) in chosen  # ...the trained one ranks its character first


def test_upload_carries_no_user_embedding(context: RankingContext) -> None:
    log, _, _ = _one_character_log(context, 1)
    task = RerankerTask(context, build_sessions(context, log, show_progress=False),
                        RerankerTaskConfig(split_quantile=0.99))
    result = task.local_train(task.initial_parameters(), np.array([0]), np.random.default_rng(0))
    assert isinstance(result, LocalResult)
    assert set(vars(result)) == {"deltas", "n_examples", "loss"}
    u = task.user_state[0]
    d = u.size
    assert np.linalg.norm(u) > 0
    for row in result.deltas:
        windows = np.lib.stride_tricks.sliding_window_view(row, d)
        assert not np.any(np.all(np.isclose(windows, u, atol=1e-6), axis=1))


def test_task_implements_the_platform_interface(tiny_var: Path,
                                                context: RankingContext) -> None:
    sessions = build_sessions(context, context.dataset.table("device_logs"),
                              show_progress=False)
    task = RerankerTask(context, sessions, RerankerTaskConfig(eval_devices=200))
    assert isinstance(task, FederatedTask)
    assert task.n_devices == sessions.n_devices > 100
    theta = task.initial_parameters()
    metrics = task.evaluate(theta)
    assert 0 <= metrics["hit@5"] <= metrics["reachable"] <= 1
    assert metrics["eval_sessions"] > 0
    # retention: everything older than the cut-off is deleted and never trained on
    deleted = task.forget_before(-1e12)
    assert deleted == 0
    deleted = task.forget_before(0.0)
    assert deleted == int((sessions.ts < task.split_ts).sum())
    result = task.local_train(theta, np.arange(50), np.random.default_rng(0))
    assert (result.n_examples == 0).all() and not result.deltas.any()


def test_hits_at_counts_ties_in_candidate_order() -> None:
    scores = np.array([[3.0, 1.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    pos = np.array([2, 0])
    ok = np.array([True, True])
    assert hits_at(scores, pos, ok, 2).tolist() == [False, False]
    assert hits_at(scores, pos, ok, 3).tolist() == [True, False]
    assert hits_at(scores, np.array([-1, 3]), ok, 1).tolist() == [False, True]
    assert hits_at(scores, pos, np.array([False, True]), 4).tolist() == [False, True]


def test_vectorised_scores_match_per_impression_scores(context: RankingContext) -> None:
    rng = np.random.default_rng(3)
    layout = context.layout
    theta = rng.normal(size=layout.n_parameters).astype(np.float32)
    n = context.candidate_ids.shape[1]
    users = rng.normal(size=(2, layout.n_factors)).astype(np.float32)
    cand = context.candidate_factors[[0, 1]]
    kw = rng.random((2, n, layout.n_keyword_features)).astype(np.float32)
    got = score_impressions(theta, layout, users, cand, kw, context.prior,
                            np.ones((2, n), bool))
    for s in range(2):
        np.testing.assert_allclose(
            got[s], score_candidates(theta, layout, users[s], cand[s], kw[s], context.prior),
            rtol=1e-4, atol=1e-4)


def test_suggester_and_bundle(tiny_var: Path) -> None:
    suggester = Suggester.load(tiny_var)
    assert suggester.reranker_version == "initial"
    rows = suggester.suggest(language="ja", text="ありがとう", cluster_id=0, limit=5)
    assert 1 <= len(rows) <= 5
    assert all(r.sticker_id >= 0 and r.labels and r.character for r in rows)
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    with pytest.raises(UnknownLanguageError, match="language 'xx' has no keyword index"):
        suggester.suggest(language="xx", text="a", cluster_id=0)
    with pytest.raises(UnknownClusterError,
                       match=r"cluster_id=999 is not a cluster of stage-1 version \S+; it has "
                       r"clusters 0\.\.\d+"):
        suggester.suggest(language="en", text="a", cluster_id=999)
    for reason, language, cluster_id in (("unknown_language", "xx", 0),
                                         ("unknown_cluster", "en", 999)):
        with pytest.raises(RerankerInputError) as caught:  # what serving translates
            suggester.suggest(language=language, text="a", cluster_id=cluster_id)
        assert caught.value.reason == reason
    with pytest.raises(RerankerInputError, match="limit=0"):
        suggester.suggest(language="en", text="a", cluster_id=0, limit=0)
    with pytest.raises(RerankerInputError, match="user_embedding has shape"):
        suggester.suggest(language="en", text="a", cluster_id=0, user_embedding=np.ones(3))
    files = suggester.bundle(0, "th")
    assert sum(len(v) for v in files.values()) <= BUNDLE_BUDGET_BYTES
    onnx.checker.check_model(onnx.load_from_string(files["model.onnx"]))
    npz = np.load(io.BytesIO(files["candidates.npz"]))
    assert npz["factors"].shape == (int(suggester.context.candidate_mask[0].sum()),
                                    suggester.n_factors)
    assert KeywordIndex.from_bytes(files["keywords-th.kwi"]).match("ขอบคุณ").label_ids.size
    assert json.loads(files["bundle.json"])["cluster_id"] == 0
    # the bundle's pieces reproduce the server's scores on the device
    scorer = OnnxScorer(files["model.onnx"])
    feats, _ = suggester.context.keystroke_features(0, "th", "ขอบคุณ")
    n = npz["factors"].shape[0]
    h = np.zeros((n, scorer.layout.n_history_features), np.float32)
    phone = scorer.score_row(np.zeros(suggester.n_factors, np.float32),
                             npz["factors"].astype(np.float32), feats[:n], npz["prior"], h)
    server = scorer.score_row(np.zeros(suggester.n_factors, np.float32),
                              suggester.context.candidate_factors[0, :n], feats[:n],
                              suggester.context.prior[:n], h)
    assert np.argmax(phone) == np.argmax(server)


def test_reranker_artifact_refuses_corruption(tiny_var: Path, tmp_path: Path,
                                              context: RankingContext) -> None:
    log, _, _ = _one_character_log(context, 0)
    task = RerankerTask(context, build_sessions(context, log, show_progress=False))
    dest = tmp_path / "reranker" / "v1"
    with data.publish_artifact(dest, kind="reranker", parameters={}) as w:
        task.export(task.initial_parameters(), w.path)
        np.save(w.path / "global_weights.npy", task.initial_parameters())
    art = RerankerArtifact.load(tmp_path)
    assert art.version == "v1" and art.stage1_version == context.stage1.version
    assert art.layout == context.layout
    (dest / "model.onnx").write_bytes(b"x" + (dest / "model.onnx").read_bytes()[1:])
    with pytest.raises(data.ArtifactError, match=r"checksum mismatch for 'model\.onnx'"):
        RerankerArtifact.load(tmp_path)
