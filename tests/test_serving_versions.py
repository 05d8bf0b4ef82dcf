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

import pytest
from test_serving_support import build_var, publish_fake_reranker, start_server

import data
from serving import promote
from serving._board import VersionBoard

pytestmark = pytest.mark.slow

BODY = json.dumps({"language": "en", "text": "hi", "cluster_id": 0}).encode()


def suggest_version(url: str) -> tuple[str, int]:
    request = urllib.request.Request(f"{url}/v1/suggest", data=BODY, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["versions"]["reranker"], response.status


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


def test_workers_never_serve_an_older_version_after_a_newer(tiny_world: Path,
                                                            tmp_path: Path) -> None:
    var = build_var(tiny_world, tmp_path / "var")
    old = data.resolve_artifact(var / "reranker", "latest").name
    server = start_server(var, workers=2, reload_interval_s=0.2)
    try:
        seen: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                version, status = suggest_version(server.url)
                assert status == 200
                seen.append(version)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1.0)
        new = publish_fake_reranker(var, tag="new").name
        promote(var, "reranker", new)
        # generous: on a loaded 2-core machine one CI run saw no agreement within 20 s
        # (cause not yet found); the property checked below does not depend on it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen[-20:] != [new] * 20:
            time.sleep(0.2)
        stop.set()
        thread.join(timeout=10)
    finally:
        server.stop()
    assert seen[0] == old and seen[-1] == new
    first_new = seen.index(new)
    assert set(seen[first_new:]) == {new}, "a worker served the old version after the new"
    assert len(seen) > 50
