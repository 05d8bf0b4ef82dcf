"""The keyboard app on the device client (#18): its own store, rows computed on the device.

Each device's private log, holdings, counts and personal embedding live in its own SQLite
file; the row at each send is computed from that file alone and equals the in-process
row for the same state; local training reads its examples from the file (and equals the
task's ``local_train`` when the file holds the same sends); the held-out devices' own
hit@5 equals ``RowTask.evaluate_sessions`` on the same sessions; over HTTP, nothing of
the store appears in any request.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from werkzeug.serving import make_server

from federated import TaskContext
from federated.device import DeviceClient, DeviceStore, HttpResponse, HttpTransport
from federated.secagg import modular_sum
from reranker import RowTask, fold_in, make_row_task
from reranker.row import row_scores, walk_impressions
from serving import create_app


@pytest.fixture(scope="module")
def task(tiny_var: Path) -> RowTask:
    return make_row_task(TaskContext(var=tiny_var, seed=0, options={}))


@pytest.fixture(scope="module")
def bundle_url(tiny_var: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server of the tiny world (bundles, suggest), over HTTP."""
    var = tmp_path_factory.mktemp("bundle-var") / "var"
    shutil.copytree(tiny_var, var)
    app = create_app({"var": var, "reload_interval_s": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _app(task: RowTask, dv: int, path: Path, url: str, **span: float) -> Any:
    """Device ``dv``'s keyboard with its cluster's bundle downloaded from ``url``."""
    app = task.device_app(dv, path, **span)
    transport = HttpTransport(url, timeout_s=20)
    app.sync(transport)
    transport.close()
    return app


def _theta(task: RowTask, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = np.asarray(task.initial_parameters(), np.float32)
    return (theta + 0.3 * rng.standard_normal(theta.size)).astype(np.float32)


def _typing_device(task: RowTask) -> int:
    """A training device with sends before and inside [validation_start, test_start)."""
    s, start, end = task.sessions, task.split.validation_start, task.split_ts
    for dv in range(task.n_devices):
        ts = s.ts[s.dev_ptr[dv]: s.dev_ptr[dv + 1]]
        if (not task.validation[dv] and (ts < start).sum() >= 3
                and ((ts >= start) & (ts < end)).sum() >= 3):
            return dv
    raise AssertionError("the tiny world has no such device")


def _sends(task: RowTask, dv: int, lo: float, hi: float) -> list[tuple[float, int, int]]:
    s, cat = task.sessions, task.catalog
    out = []
    for j in range(int(s.dev_ptr[dv]), int(s.dev_ptr[dv + 1])):
        if lo <= s.ts[j] < hi:
            st, pk = int(s.sticker[j]), int(s.package[j])
            out.append((float(s.ts[j]), int(cat.sticker_ids[st]) if st >= 0 else -1,
                        int(cat.package_ids[pk]) if pk >= 0 else -1))
    return out


def test_the_store_holds_exactly_the_sends_the_device_made(task: RowTask, tmp_path: Path,
                                                           bundle_url: str) -> None:
    dv = _typing_device(task)
    start, end = task.split.validation_start, task.split_ts
    app = _app(task, dv, tmp_path / "d.sqlite3", bundle_url)
    store = app.store
    past = _sends(task, dv, -np.inf, start)
    assert [(x.ts, x.sticker_id, x.package_id) for x in store.sends()] == past
    assert store.rows() == []  # installing logs the past; no row was shown yet
    users = task.context.dataset.table("users")
    language = users["language"].to_list()[users["user_id"].to_list().index(
        int(task.sessions.user_ids[dv]))]
    assert language in task.context.languages
    assert store.get("language") == language.encode()  # the keyboard's own language
    theta = _theta(task)
    first = app.use(0, 2, theta, 7)
    mid = start + (end - start) / 2
    assert first == len(_sends(task, dv, start, mid))
    second = app.use(1, 2, theta, 8)
    typed = _sends(task, dv, start, end)
    assert first + second == len(typed) >= 3
    logged = store.sends()
    assert [(x.ts, x.sticker_id, x.package_id) for x in logged] == past + typed
    rows = store.rows()
    assert len(rows) == len(typed)
    assert [v for _, v, _, _ in rows] == [7] * first + [8] * second
    assert all(shown.size == task.config.top_k for _, _, shown, _ in rows)
    for (_, _, shown, hit), (_, sticker, _) in zip(rows, typed, strict=True):
        assert hit == (sticker in shown.tolist())
    # the on-device counts: one per send, by sticker
    by_hand = Counter(st for _, st, _ in past + typed)
    assert {st: n for st, (n, _) in store.counts().items()} == dict(by_hand)
    # a third step types nothing new; a reopened store resumes after its last send
    assert app.use(1, 2, theta, 8) == 0
    app.close()
    again = _app(task, dv, tmp_path / "d.sqlite3", bundle_url)
    assert len(again.store.sends()) == len(past) + len(typed)
    assert again.use(1, 2, theta, 9) == 0
    again.close()


def test_the_row_computed_on_the_device_equals_the_in_process_row(task: RowTask,
                                                                  tmp_path: Path,
                                                                  bundle_url: str) -> None:
    dv = _typing_device(task)
    start, end = task.split.validation_start, task.split_ts
    theta = _theta(task)
    app = _app(task, dv, tmp_path / "d.sqlite3", bundle_url)
    app.use(0, 1, theta, 1)
    device_rows = [shown for _, _, shown, _ in app.store.rows()]
    app.close()
    # in process: the task's own arrays, the same sends, the same embedding (the fold-in
    # of the sends before the span), the same weights
    s = task.sessions
    idx = np.arange(s.dev_ptr[dv], s.dev_ptr[dv + 1])
    emit = np.zeros(s.n_sessions, bool)
    emit[idx[(s.ts[idx] >= start) & (s.ts[idx] < end)]] = True
    imp = walk_impressions(s, task.catalog, task.config.row, np.array([dv]), emit,
                           np.ones(s.n_sessions, bool), task.config.row.cap)
    before = idx[s.ts[idx] < start]
    users = fold_in(np.zeros(before.size, np.int64), s.sent_row[before], 1, task._factors,
                    task._gram, task._reg, task._alpha)
    scores = row_scores(theta, task.layout, users, imp, task.catalog.pk_factor)
    expected = []
    for e in range(imp.n_impressions):
        lo, hi = imp.ptr[e], imp.ptr[e + 1]
        top = np.argsort(-scores[lo:hi], kind="stable")[: task.config.top_k]
        expected.append(task.catalog.sticker_ids[imp.sticker[lo:hi][top]])
    assert len(device_rows) == len(expected) >= 3
    for got, want in zip(device_rows, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # not a constant row: the scores order the candidates
    assert len({tuple(r.tolist()) for r in device_rows}) > 1


def test_local_training_reads_the_store(task: RowTask, tmp_path: Path, bundle_url: str
                                        ) -> None:
    dv = _typing_device(task)
    theta = _theta(task, 5)
    # the store holds every send before the end of training: the same examples as the
    # task's in-process local training of that device
    app = _app(task, dv, tmp_path / "d.sqlite3", bundle_url, start_s=task.split_ts)
    delta = app.train(theta)
    stored = app.store.get("embedding")
    state = task.device_state()
    try:
        result = task.local_train(theta, np.array([dv]), np.random.default_rng(0))
        assert delta is not None and int(result.n_examples[0]) > 0
        np.testing.assert_allclose(delta, result.deltas[0], rtol=0, atol=1e-6)
        assert stored is not None
        np.testing.assert_allclose(np.frombuffer(stored, "<f4"), task.user_state[dv],
                                   rtol=0, atol=1e-6)
    finally:
        task.load_device_state(state)
    # the next training starts from the stored embedding, not the fold-in again
    np.testing.assert_array_equal(app.embedding()[0], np.frombuffer(stored, "<f4"))
    app.close()
    # an empty store (everything after the span start) has nothing to train on
    s = task.sessions
    first = float(s.ts[s.dev_ptr[dv]])
    empty = _app(task, dv, tmp_path / "e.sqlite3", bundle_url, start_s=first)
    assert empty.store.sends() == [] and empty.train(theta) is None
    empty.close()
    held = int(np.flatnonzero(task.validation)[0])
    held_app = _app(task, held, tmp_path / "h.sqlite3", bundle_url)
    assert held_app.train(theta) is None  # held-out devices never train
    held_app.close()


def test_hit_at_5_of_the_devices_own_keyboards_equals_evaluate(task: RowTask,
                                                               tmp_path: Path,
                                                               bundle_url: str) -> None:
    theta = _theta(task, 11)
    held = np.unique(task.sessions.device[task.eval_window])[:40]
    hits = impressions = 0.0
    for dv in held.tolist():
        app = _app(task, dv, tmp_path / f"{dv}.sqlite3", bundle_url)
        counts = app.evaluate(theta, 1)
        hits += counts.get("hits", 0.0)
        impressions += counts.get("impressions", 0.0)
        assert app.store.rows() == []  # evaluating shows nothing and stores nothing
        app.close()
    metrics = task.evaluate_sessions(theta, held, task.eval_window)
    assert impressions == metrics["eval_sessions"] > 0
    assert hits / impressions == pytest.approx(metrics["hit@5"], abs=1e-12)
    training = _app(task, _typing_device(task), tmp_path / "t.sqlite3", bundle_url)
    assert training.evaluate(theta, 1) == {}
    training.close()


# ---------------------------------------------------------------------------- over HTTP


class _Recording(HttpTransport):
    """The real transport, keeping every request it sends."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=20)
        self.sent: list[tuple[str, str, dict[str, str], Any]] = []

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None) -> HttpResponse:
        self.sent.append((method, path, dict(headers or {}), body))
        return super().request(method, path, body, headers=headers)


@pytest.fixture
def keyboard_server(tiny_var: Path, task: RowTask, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    var = tmp_path / "var"
    shutil.copytree(tiny_var, var)
    cfg = {"enabled": True, "model": "zeros", "n_parameters": task.n_parameters,
           "checkin_s": 30.0, "stage_s": 30.0, "min_clients": 4, "max_clients": 5,
           "tick_interval_s": 0.1, "max_stage_extensions": 3, "noise_multiplier": 0.5,
           "n_max": 100, "tokens_per_day": 5}
    (tmp_path / "secure.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("STICKERS_SECURE_CONFIG", str(tmp_path / "secure.json"))
    app = create_app({"var": var, "reload_interval_s": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", var
    finally:
        server.shutdown()
        app.extensions["sticker_secure_rounds"].close()


def test_a_keyboard_round_over_http_sends_nothing_of_its_store(
        task: RowTask, keyboard_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = keyboard_server
    trainers = [dv for dv in range(task.n_devices) if not task.validation[dv]]
    apps: list[Any] = []
    clients: list[DeviceClient] = []
    for dv in trainers:
        if len(apps) == 5:
            break
        probe = _app(task, dv, tmp_path / f"probe{dv}.sqlite3", url)
        learns = probe.train(task.initial_parameters()) is not None
        probe.close()
        if not learns:  # nothing to learn from: it would sit the round out
            continue
        app = task.device_app(dv, tmp_path / f"d{dv}.sqlite3")
        transport = _Recording(url)
        client = DeviceClient(transport, DeviceStore(app.store.path), app.train)
        client.enrol()
        client.refill_tokens(1)
        version, params = client.sync_model()
        app.sync(transport)
        app.use(0, 1, params, version)
        apps.append(app)
        clients.append(client)
    assert len(apps) == 5
    assert all(app.store.get("embedding") is None for app in apps)
    # the bundle came once; within a day no request, after it a 304 (ETag)
    transport0 = clients[0].transport
    assert isinstance(transport0, _Recording)
    assert apps[0].store.get("bundle_etag") and apps[0].bundle_bytes > 0
    sent = len(transport0.sent)
    apps[0].sync(transport0)
    assert len(transport0.sent) == sent
    apps[0].clock = lambda: 2e10
    apps[0].sync(transport0)
    assert len(transport0.sent) == sent + 1
    assert transport0.sent[-1][2]["If-None-Match"] == (apps[0].store.get("bundle_etag")
                                                       or b"").decode()
    assert apps[0].bundle_bytes == len(apps[0].store.get("bundle") or b"")
    results: list[Any] = [None] * len(clients)

    def go(i: int) -> None:
        results[i] = clients[i].participate(deadline_s=120)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(r.status == "completed" for r in results), [r.detail for r in results]
    # the server's sum is the sum of the devices' reports
    round_ = results[0].round
    body = HttpTransport(url).request("GET", f"/v1/secure/rounds/{round_}").body
    for _ in range(100):
        if body["status"] != "open":
            break
        threading.Event().wait(0.2)
        body = HttpTransport(url).request("GET", f"/v1/secure/rounds/{round_}").body
    assert body["status"] == "aggregated"
    total = np.frombuffer(base64.b64decode(body["outcome"]["sum"]), "<u4")
    np.testing.assert_array_equal(total, modular_sum(np.stack([r.report for r in results]),
                                                     32))
    # nothing of the store in any request: bodies carry only the protocol's fields, and
    # none holds the embedding, a send's time or the store's bytes
    for app, client in zip(apps, clients, strict=True):
        recorded = client.transport
        assert isinstance(recorded, _Recording)
        embedding = app.store.get("embedding")
        assert embedding  # trained during the round, kept on the device
        secrets = [base64.b64encode(embedding).decode(), embedding.hex()]
        secrets += [repr(x.ts) for x in app.store.sends()]
        bundle_path = (f"/v1/clusters/{app.cluster}/bundle?language="
                       f"{(app.store.get('language') or b'').decode()}")
        assert [p for _, p, _, _ in recorded.sent if "/bundle" in p][:1] == [bundle_path]
        for _, path, headers, request_body in recorded.sent:
            assert path.startswith(("/v1/secure/", "/v1/clusters/"))
            if request_body is not None:
                assert set(request_body) <= {"blinded", "token", "message"}, request_body
            text = json.dumps([path, headers, request_body])
            for secret in secrets:
                assert secret not in text
        app.close()
        client.store.close()


def test_a_population_of_keyboards_over_http(task: RowTask, keyboard_server: tuple[str, Path],
                                             tmp_path: Path) -> None:
    """``run_population`` with the task's device app: every device types its sends into its
    own store between rounds, trains from it, and the held-out ones measure themselves."""
    from federated.device import run_population

    url, _ = keyboard_server
    n = 40
    metrics: dict[str, dict[str, float]] = {}
    records = run_population(url, task, n=n, rounds=2, workdir=tmp_path / "devices",
                             drop_after_share=0.0, drop_after_mask=0.0, seed=4,
                             poll_interval_s=0.2, round_timeout_s=120,
                             app_metrics=metrics)
    assert len(records) == 2
    for r in records:
        assert r.status == "aggregated" and r.exact_sum is True, r
        # devices with nothing to train on sit out; everyone else in the cohort
        # (max_clients 5) or refused because it was full
        assert r.no_data >= 1 and r.participants == 5
    starts = task.split.validation_start
    typed = 0
    for i in range(n):
        path = tmp_path / "devices" / f"device-{i:05d}.sqlite3"
        app = task.device_app(i, path)
        sends = app.store.sends()
        assert [(x.ts, x.sticker_id) for x in sends] == [
            (ts, st) for ts, st, _ in _sends(task, i, -np.inf,
                                             task.split_ts if not task.validation[i] else starts)]
        typed += len(app.store.rows())
        app.close()
    assert typed == sum(r.app_uses for r in records) > 0
    # the held-out keyboards measured the same sessions before and after
    assert metrics["before"]["impressions"] == metrics["after"]["impressions"] > 0


# ------------------------------------------------------- the bundle, the keystroke path


@pytest.fixture
def published_server(tiny_var: Path, task: RowTask, tmp_path: Path
                     ) -> Iterator[tuple[str, Path, np.ndarray]]:
    """A real server whose live reranker has weights ``theta`` (a sticker-row model)."""
    from federated import VersionRecords, publish_version

    var = tmp_path / "var"
    shutil.copytree(tiny_var, var)
    theta = _theta(task, 17)
    publish_version(var / "reranker", theta, lambda d: task.export(theta, d),
                    VersionRecords(parameters={}), kind="reranker")
    app = create_app({"var": var, "reload_interval_s": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", var, theta
    finally:
        server.shutdown()


def test_the_device_row_is_the_servers_suggest_row(
        task: RowTask, published_server: tuple[str, Path, np.ndarray], tmp_path: Path) -> None:
    """The keyboard ranks with its bundle's tables and the server's keystroke code: for
    the same text, embedding, history and weights, its row is ``POST /v1/suggest``'s (the
    thin-client option carrying the device's history summary), sticker for sticker."""
    url, _, theta = published_server
    dv = _typing_device(task)
    app = _app(task, dv, tmp_path / "d.sqlite3", url)
    app.use(0, 1, theta, 1)  # the device types its sends: a history with own packages
    state = app.history()
    user = app.embedding()[0]
    suggester = app.suggester(theta, 1)
    # the device's catalogue is its cluster's packages and its own, not the catalogue's
    assert suggester.catalog is not None
    assert suggester.catalog.n_packages < task.catalog.n_packages
    own = set(state.catalog.package_ids[state.held | (state.pk_last > -1e299)].tolist())
    listed = set(app.tables().bundle.candidate_ids.tolist())
    assert own - listed  # a package only the phone has takes part
    now = float(state.total[1]) + 3600.0
    summary = state.summary()
    history = {"stickers": [{"sticker_id": s, "count": c, "last_sent_at": t}
                            for s, c, t in summary["stickers"]],
               "held_packages": summary["held"], "subscriber": summary["subscriber"],
               "now": now}
    logs = task.context.dataset.table("device_logs")
    texts = logs.filter(logs["language"] == app.language)["text"].head(60).to_list()
    client = HttpTransport(url, timeout_s=20)
    compared = nonempty = 0
    for text in ["", *texts[:30], *(t[: max(1, len(t) // 2)] for t in texts[30:])]:
        got = suggester.rank_row(language=app.language, text=text, cluster_id=app.cluster,
                                 user_embedding=user, limit=5, history=state, now=now)
        answer = client.request("POST", "/v1/suggest", {
            "language": app.language, "text": text, "cluster_id": app.cluster,
            "user_embedding": user.tolist(), "limit": 5, "history": history})
        assert answer.status == 200, answer.body
        served = answer.body["stickers"]
        assert list(got.sticker_ids) == [x["sticker_id"] for x in served], text
        np.testing.assert_allclose(got.scores, [x["score"] for x in served], rtol=1e-6,
                                   atol=1e-6)
        compared += 1
        nonempty += bool(served)
    assert compared == 61 and nonempty > 30
    # the server's live version is what the device downloaded: the same weights
    assert answer.body["versions"]["reranker"] == app.tables().bundle.reranker_version
    client.close()
    app.close()


def test_a_device_with_only_its_bundle_and_store_works(
        task: RowTask, published_server: tuple[str, Path, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After the bundle download the keyboard needs no catalogue: with the server's files
    deleted and every catalogue and stage-1 reader failing, it types, ranks, trains and
    evaluates from its store, its bundle and the weights; the rows are those it computes
    with the catalogue present."""
    import candidate_gen
    import data
    import reranker

    url, var, theta = published_server
    dv = _typing_device(task)
    held = int(np.flatnonzero(task.validation)[0])
    apps = {name: _app(task, d, tmp_path / f"{name}.sqlite3", url)
            for name, d in (("a", dv), ("b", dv), ("held", held))}
    apps["a"].use(0, 2, theta, 1)  # with the catalogue readers intact

    def no_catalogue(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the device read the catalogue")

    shutil.rmtree(var / "stage1")
    shutil.rmtree(var / "data", ignore_errors=True)
    for target, name in ((data.Dataset, "table"), (data, "open_dataset"),
                         (candidate_gen.Stage1Artifact, "load"),
                         (reranker.RankingContext, "build")):
        monkeypatch.setattr(target, name, no_catalogue)
    apps["b"].use(0, 2, theta, 1)
    apps["a"].use(1, 2, theta, 1)
    apps["b"].use(1, 2, theta, 1)
    assert apps["a"].store.rows() and [
        (s, v, r.tolist(), h) for s, v, r, h in apps["a"].store.rows()] == [
        (s, v, r.tolist(), h) for s, v, r, h in apps["b"].store.rows()]
    assert apps["b"].train(theta) is not None
    assert apps["held"].evaluate(theta, 1)["impressions"] > 0
    for app in apps.values():
        app.close()


def test_the_store_keeps_the_match_not_the_text(task: RowTask, tmp_path: Path,
                                                bundle_url: str) -> None:
    """Each send's match is the keyword index's match of the typed text, computed on the
    device; no typed text is anywhere in the store's file; every keystroke was ranked."""
    dv = _typing_device(task)
    app = _app(task, dv, tmp_path / "d.sqlite3", bundle_url)
    typed = [x for x in app._user.sends if x.ts < task.split_ts]
    before = len(app.store.sends())
    app.use(0, 1, _theta(task), 1)
    assert app.keystrokes == sum(max(len(x.text), 1) for x in typed) > len(typed)
    index = task.context.indexes[app.language]
    for x, logged in zip(typed, app.store.sends()[before:], strict=True):
        want = index.match(x.text)
        np.testing.assert_array_equal(logged.labels, want.label_ids)
        np.testing.assert_array_equal(logged.strengths, want.strengths)
        np.testing.assert_array_equal(logged.kinds, want.kinds)
    app.close()
    raw = (tmp_path / "d.sqlite3").read_bytes()
    texts = {x.text for x in typed if len(x.text.encode()) >= 4}
    assert texts and not [t for t in texts if t.encode() in raw]


def test_bundles_are_verified_and_parsed_once_per_bytes(bundle_url: str) -> None:
    """Two clusters' bundles share the parsed factors and keyword index (the same bytes);
    a corrupted file is refused."""
    import io
    import zipfile

    from reranker import RerankerInputError
    from reranker.keyboard import read_bundle

    client = HttpTransport(bundle_url, timeout_s=20)
    raws = [client.request("GET", f"/v1/clusters/{c}/bundle?language=en").raw for c in (0, 1)]
    client.close()
    a, b = (read_bundle(raw) for raw in raws)
    assert (a.cluster_id, b.cluster_id) == (0, 1) and a.etag != b.etag
    assert a.factors is b.factors and a.index is b.index and a.gram is b.gram
    assert read_bundle(raws[0]) is a
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raws[0])) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b" " if item.filename == "bundle.json" else data)
    with pytest.raises(RerankerInputError, match="sha256"):
        read_bundle(out.getvalue())
