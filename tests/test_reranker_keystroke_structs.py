"""The keystroke with two structs (#19, speed) computes what the many-argument call did.

A server's keystroke calls :func:`reranker._row_kernels.keystroke_rows` with the
catalogue view and the thread's scratch held in two numba ``structref`` structs, so
numba's dispatch unboxes a handful of arguments instead of ~54. These tests hold the row
it gives to the row of the call it replaced (:func:`keystroke` with every array passed,
then the exploration slot in numpy), bit for bit, and check that a second process loads
the compiled struct kernels from numba's disk cache instead of compiling them at start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from candidate_gen import Stage1Artifact
from data import Manifest
from reranker import (
    DeviceHistory,
    ParameterLayout,
    RankingContext,
    RerankerArtifact,
    Suggester,
    export_onnx,
)
from reranker._suggest import _RowInputs, _RowScratch
from reranker.row import HISTORY_FEATURE_NAMES

H = len(HISTORY_FEATURE_NAMES)
DAY = 86_400.0


@pytest.fixture(scope="module")
def context(tiny_var: Path) -> RankingContext:
    return RankingContext.build(Stage1Artifact.load(tiny_var))


def _suggester(context: RankingContext, tmp: Path, seed: int, row: dict[str, Any]
               ) -> Suggester:
    """A compiled-keystroke suggester with random weights and the row settings ``row``."""
    layout = ParameterLayout(context.layout.n_factors, context.layout.n_keyword_features, H)
    theta = (np.random.default_rng(seed).normal(size=layout.n_parameters) * 0.5
             ).astype(np.float32)
    manifest = Manifest(path=tmp / "manifest.json", kind="reranker", version="test",
                        created_at="", parameters={}, input_fingerprint="", metrics={},
                        files={})
    artifact = RerankerArtifact(
        directory=tmp, manifest=manifest,
        model_bytes=export_onnx(theta, layout).SerializeToString(), sha256="",
        weights=theta, layout=layout,
        info={"stage1_version": context.stage1.version, "row": row}, privacy={})
    return Suggester(context, artifact)


def _many_argument_row(suggester: Suggester, scratch: _RowScratch, language: str, text: str,
                       cluster: int, user: np.ndarray | None, limit: int,
                       history: DeviceHistory | dict[str, Any] | None, now: float
                       ) -> tuple[tuple[list[int], list[int], list[float]], bool]:
    """The row as ``Suggester.rank_row`` computed it before the structs: ``keystroke``
    with its ~54 arguments, ``.tolist()``, then the exploration slot in numpy. Also
    whether the slot changed the row."""
    cat, cfg, form = suggester.catalog, suggester.row_config, suggester._form
    assert cat is not None and form is not None
    match = suggester.context.index_for(cluster, language).match(text)
    if history is None:
        state = suggester._empty
        t = now
        inputs = _RowInputs.of_view(state.catalog_view(cluster, 0.0), state, cat)
        fallback = inputs.fallback if len(match) == 0 else np.zeros(0, np.int32)
    else:
        state = (history if isinstance(history, DeviceHistory)
                 else DeviceHistory.from_summary(cat, history, cfg))
        if isinstance(history, dict):
            inputs = _RowInputs.of_catalog(cat, cluster, state, now, suggester._first_sticker)
        else:
            inputs = _RowInputs.of_view(state.catalog_view(cluster, now), state, cat)
        t = now
        fallback = np.zeros(0, np.int32)
        if len(match) == 0:
            recent = (inputs.view.recent_stickers(t - cfg.protect_s)
                      if inputs.view is not None
                      else state.recent_stickers(t).astype(np.int32))
            fallback = np.concatenate([recent, inputs.fallback])
    query = (form.query(np.zeros(suggester.n_factors)) if user is None
             else form.query(user))
    out = (np.empty(50, np.int64), np.empty(50, np.int64), np.empty(50, np.float64))
    n, m = suggester._keystroke(  # reranker._row_kernels.keystroke
        match.label_ids, match.strengths, match.kinds, *inputs.arrays, state.subscriber,
        t - cfg.protect_s, fallback, cfg.cap, *scratch.assembly, scratch.o_st, scratch.o_pk,
        query, form.a, form.b, form.e, scratch.pk_mark, scratch.pk_part, scratch.o_score,
        inputs.sticker_ids, inputs.package_ids, limit, *out)
    if n == 0:
        return ([], [], []), False
    scores = scratch.o_score[:n]
    stickers, pkgs, row_scores = out[0][:m].tolist(), out[1][:m].tolist(), out[2][:m].tolist()
    explored = False
    if cfg.explore_slots and m:
        shown = inputs.sticker_ids[scratch.o_st[:n]]
        packages = inputs.package_ids[scratch.o_pk[:n]]
        new = inputs.v_pk[scratch.o_pk[:n], 3] > 0
        in_row = np.isin(shown, stickers)
        if not new[in_row].any() and new.any():
            explored = True
            extra = np.flatnonzero(new)
            extra = extra[np.argsort(-scores[extra], kind="stable")][
                : min(cfg.explore_slots, limit)]
            keep = max(m - extra.size, 0) if m == limit else m
            stickers = stickers[:keep] + shown[extra].tolist()
            pkgs = pkgs[:keep] + packages[extra].tolist()
            row_scores = row_scores[:keep] + scores[extra].astype(float).tolist()
    return (stickers, pkgs, row_scores), explored


@pytest.mark.parametrize(("seed", "row"), [
    (0, {}),
    (1, {"explore_slots": 1, "cap": 25}),
    (4, {"explore_slots": 2, "cap": 8, "protect_days": 60.0}),
])
def test_struct_keystroke_equals_the_many_argument_call(
        context: RankingContext, tmp_path: Path, seed: int, row: dict[str, Any]) -> None:
    """Server (no history; with and without an embedding), thin client (a history
    summary) and phone (a device's compact view, followed across sends and a purchase):
    every row identical, scores bit for bit."""
    rng = np.random.default_rng(seed)
    suggester = _suggester(context, tmp_path, seed, row)
    cat = suggester.catalog
    assert cat is not None
    reference = _RowScratch(suggester.scorer, cat, suggester.row_config, suggester._zeros)
    user = rng.normal(size=suggester.n_factors).astype(np.float32)
    device = DeviceHistory(cat, suggester.row_config, subscriber=bool(seed % 2))
    logs = context.dataset.table("device_logs")
    texts = logs.filter(logs["language"].is_in(context.languages)).head(300)
    n_rows = n_explored = 0
    for step in range(60):
        now = (10.0 + step) * DAY
        cluster = int(rng.integers(context.n_clusters))
        entry = texts.row(int(rng.integers(texts.height)), named=True)
        language = entry["language"]
        text = "" if step % 7 == 0 else entry["text"][: 1 + int(rng.integers(
            max(len(entry["text"]), 1)))]
        limit = int(rng.integers(1, 13))
        sent = int(cat.sticker_ids[int(rng.integers(cat.n_stickers))])
        for history in (None, device.summary(), device):
            for personal in (None, user):
                got = suggester.rank_row(language=language, text=text, cluster_id=cluster,
                                         user_embedding=personal, limit=limit,
                                         history=history,
                                         now=now if history is not None else None)
                want, explored = _many_argument_row(
                    suggester, reference, language, text, cluster, personal, limit, history,
                    now if history is not None else 0.0)
                assert tuple(got) == want, (step, type(history).__name__, text)
                n_rows += bool(want[0])
                n_explored += explored
                if history is device and got.sticker_ids and step % 2:
                    sent = got.sticker_ids[0]  # a sticker the row showed (the row fills
                    # with the device's own packages: the exploration slot applies)
        # the phone's state moves on: the struct of its compact view must follow
        device.record_send(sent, now)
        if step % 9 == 4:
            device.acquire(int(cat.package_ids[int(rng.integers(cat.n_packages))]))
        if step == 30:  # from here on most packages are held: rows without a new one
            for p in range(0, cat.n_packages, 4):
                for q in range(p + 1, min(p + 4, cat.n_packages)):
                    device.acquire(int(cat.package_ids[q]))
    assert n_rows > 100
    if row.get("explore_slots"):
        assert n_explored > 0  # the exploration branch was taken and agreed


def test_personal_query_buffer_follows_the_embedding(context: RankingContext,
                                                     tmp_path: Path) -> None:
    """The struct holds the thread's query buffer: a new embedding must be seen (the
    buffer is written in place, not replaced), and the zero-embedding row restored."""
    suggester = _suggester(context, tmp_path, 5, {})
    rng = np.random.default_rng(5)
    entry = context.dataset.table("device_logs").filter(
        context.dataset.table("device_logs")["language"].is_in(context.languages)).row(
        0, named=True)
    args = {"language": entry["language"], "text": "", "cluster_id": 0, "limit": 8}
    plain = suggester.rank_row(**args)
    rows = []
    for _ in range(3):
        user = (rng.normal(size=suggester.n_factors) * 3).astype(np.float32)
        rows.append(suggester.rank_row(**args, user_embedding=user))
        assert rows[-1].scores != plain.scores
    assert rows[0].scores != rows[1].scores != rows[2].scores
    assert suggester.rank_row(**args) == plain


_CACHE_PROBE = textwrap.dedent("""
    import json, sys
    from numba.core import event

    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            f = ev.data["dispatcher"].py_func
            compiled.append(f"{f.__module__}.{f.__qualname__}")

        def on_end(self, ev):
            pass

    event.register("numba:compile", Listener())
    import numpy as np
    from reranker import DeviceHistory, Suggester

    s = Suggester.load(sys.argv[1], reranker_version=None)
    lang = s.languages[0]
    s.rank(language=lang, text="", cluster_id=0, limit=5)
    s.rank(language=lang, text="t", cluster_id=1, limit=5,
           user_embedding=np.ones(s.n_factors, np.float32))
    device = DeviceHistory(s.catalog, s.row_config)
    device.record_send(int(s.catalog.sticker_ids[0]), 100.0)
    s.rank(language=lang, text="", cluster_id=0, limit=5, history=device.summary(), now=200.0)
    s.keyboard(0, lang, history=device).rank("t", now=200.0)
    print(json.dumps(compiled))
""")


def test_a_second_process_loads_the_struct_kernels_from_the_cache(tiny_var: Path) -> None:
    """Server start must not compile: the structs' constructors and the struct keystroke
    are cached on disk (``cache=True``; a jitclass could not be, numba #6522)."""
    def probe() -> list[str]:
        done = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(tiny_var)],
                              capture_output=True, text=True, timeout=600, check=True)
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    probe()  # compiles whatever is not cached yet (e.g. after an edit of the kernels)
    again = [name for name in probe() if name.startswith("reranker.")]
    assert again == [], f"compiled again in a new process: {again}"
