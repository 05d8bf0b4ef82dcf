"""Workers that boot at once open the same fresh SQLite stores without "database is locked".

Regression test of the bench's intermittent "warm-up ... Connection refused" (#19): two
gunicorn workers booting together both switched the fresh update store into WAL; SQLite
does not call the busy handler for that switch, so one worker's ``create_app`` raised
``database is locked`` (9 of 100 simultaneous pairs) and gunicorn halted the server after
the other worker had answered /readyz.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from serving._store import UpdateStore

TRIALS = 40
PROCESSES = 4


def _open(path: Path, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=30)
        with UpdateStore(path) as store:
            store.current_round()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs fork")
def test_simultaneous_first_opens_of_a_store_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for trial in range(TRIALS):
        path = tmp_path / f"t{trial}" / "serving" / "updates.sqlite"
        barrier = ctx.Barrier(PROCESSES)
        results = ctx.Queue()
        processes = [ctx.Process(target=_open, args=(path, barrier, results))
                     for _ in range(PROCESSES)]
        for p in processes:
            p.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for p in processes:
            p.join(timeout=60)
    failures = [o for o in outcomes if o != "ok"]
    assert not failures, f"{len(failures)} of {len(outcomes)} opens failed: {failures[:3]}"
