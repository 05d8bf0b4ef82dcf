"""Issue #19: gunicorn workers agree on the served version.

Two workers poll the registry every 0.2 s; a new reranker version is promoted while a
client sends suggest requests on fresh connections (so they land on both workers): the
versions it sees never go back (old, old, new, new — never new then old), and both
workers end on the new one.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_serving_support import (
    build_var,
    fake_reranker_loader,
    fake_suggester_loader,
    publish_fake_reranker,
    start_server,
)

import data
from serving import ModelRegistry, promote
from serving.versions import ModelSet, VersionBoard

BODY = json.dumps({"language": "en", "text": "hi", "cluster_id": 0}).encode()


def suggest_version(url: str) -> tuple[str, int]:
    request = urllib.request.Request(f"{url}/v1/suggest", data=BODY, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["versions"]["reranker"], response.status


def _served(registry: ModelRegistry) -> ModelSet:
    """The registry's served set; it has one once its first refresh has loaded."""
    current = registry.current
    assert current is not None, "the registry has served nothing yet"
    return current


def test_board_agreement_needs_every_live_worker(tmp_path: Path) -> None:
    import os
    board = VersionBoard(tmp_path)
    board.announce("a")
    (tmp_path / "ready-999999999").write_text("b")  # a dead worker's file: dropped
    assert board.agreed() == "a" and not (tmp_path / "ready-999999999").exists()
    (tmp_path / f"ready-{os.getppid()}").write_text("b")  # a live worker on another set
    assert board.agreed() is None
    assert not board.changed()
    board.publish("a")
    assert board.changed() and not board.changed() and board.served() == "a"


def test_polling_outlives_an_unexpected_error(tiny_world: Path, tmp_path: Path) -> None:
    """A load that fails with an error outside the expected ones (here a RuntimeError, as
    onnxruntime raises) is retried at the next check: before the fix it ended the polling
    thread, so the worker — and through the board every worker — never moved on."""
    var = build_var(tiny_world, tmp_path / "var")
    calls: list[str | None] = []

    def flaky_loader(var: Path, **kwargs: Any) -> Any:
        calls.append(kwargs["reranker_version"])
        if len(calls) == 2:  # the first load of the new version
            raise RuntimeError("onnxruntime: simulated failure")
        return fake_suggester_loader(var, **kwargs)

    board = VersionBoard(tmp_path / "board")
    registry = ModelRegistry(var, "latest", ["latest"], suggester_loader=flaky_loader,
                             # a structural double of RerankerArtifact (test_serving_support)
                             reranker_loader=fake_reranker_loader,  # type: ignore[arg-type]
                             board=board)
    registry.refresh()
    registry.start_polling(0.05)
    try:
        new = publish_fake_reranker(var, tag="new").name
        promote(var, "reranker", new)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _served(registry).reranker_version(
                "latest") != new:
            time.sleep(0.05)
    finally:
        registry.stop_polling()
    assert calls[1:3] == [new, new], "the failed load should have been retried"
    assert _served(registry).reranker_version("latest") == new
    assert board.served() == _served(registry).key


@pytest.mark.slow
def test_workers_never_serve_an_older_version_after_a_newer(tiny_world: Path,
                                                            tmp_path: Path) -> None:
    var = build_var(tiny_world, tmp_path / "var")
    old = data.resolve_artifact(var / "reranker", "latest").name
    server = start_server(var, workers=2, reload_interval_s=0.2)
    try:
        seen: list[str] = []
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            # An error is recorded, not raised: a client thread that died silently used to
            # look like workers that never agreed (seen stops growing).
            while not stop.is_set():
                try:
                    version, status = suggest_version(server.url)
                except OSError as exc:
                    errors.append(repr(exc))
                    if len(errors) > 20:
                        return
                    continue
                assert status == 200
                seen.append(version)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1.0)
        new = publish_fake_reranker(var, tag="new").name
        promote(var, "reranker", new)
        # Each worker polls every 0.2 s; agreement takes one load per worker. 20 s leaves
        # a loaded 2-core machine a wide margin.
        deadline = time.monotonic() + 20
        while (time.monotonic() < deadline and thread.is_alive()
               and seen[-20:] != [new] * 20):
            time.sleep(0.2)
        stop.set()
        thread.join(timeout=10)
    finally:
        server.stop()
    assert len(errors) <= 20, f"the client kept failing: {errors[:3]}"
    assert seen[0] == old and seen[-1] == new
    first_new = seen.index(new)
    assert set(seen[first_new:]) == {new}, "a worker served the old version after the new"
    assert len(seen) > 50
