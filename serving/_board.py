"""The version board: gunicorn workers agree on the served model versions.

Each worker loads new versions on its own (its registry's polling thread), but none
serves them until every live worker has them loaded: a worker announces the versions it
holds ready in ``ready-<pid>``; when all live workers announce the same, one of them
writes ``served`` (an atomic rename); every worker checks ``served`` (one ``stat``) at the
start of each request and swaps to the announced set when it changes. So a client never
gets an older version after a newer one from another worker, and a worker that cannot
load a version (corrupt, out of memory) holds every worker on the previous one.

The board is a directory created empty by ``stickers serve`` for each server run
(``STICKERS_SERVE_BOARD``); without it (one process: tests, ``--debug``) the registry
swaps on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

__all__ = ["BOARD_ENV", "VersionBoard", "models_key", "pid_alive"]

BOARD_ENV = "STICKERS_SERVE_BOARD"
_SERVED = "served"
_READY = "ready-"


def models_key(stage1: str, rerankers: dict[str, str]) -> str:
    """The board's name of a model set: its stage-1 version and its reranker aliases."""
    return json.dumps({"stage1": stage1, "rerankers": rerankers}, sort_keys=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VersionBoard:
    """One worker's view of the board directory.

    Parameters
    ----------
    directory : Path
        The run's board directory (shared by the workers).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._served = self.directory / _SERVED
        self._seen: tuple[int, int] | None = None

    def served(self) -> str | None:
        """The key every worker serves (None before the first agreement)."""
        try:
            return self._served.read_text()
        except FileNotFoundError:
            return None

    def changed(self) -> bool:
        """Whether ``served`` was rewritten since the last call (one ``stat``)."""
        try:
            st = os.stat(self._served)
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def announce(self, key: str) -> None:
        """Say that this worker holds ``key`` loaded and ready."""
        _write(self.directory / f"{_READY}{os.getpid()}", key)

    def agreed(self) -> str | None:
        """The key all live workers announce, if they agree (files of dead ones dropped)."""
        keys = set()
        for path in self.directory.glob(f"{_READY}*"):
            pid = path.name.removeprefix(_READY)
            if not pid.isdigit():
                continue
            if not pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            with contextlib.suppress(FileNotFoundError):
                keys.add(path.read_text())
        return keys.pop() if len(keys) == 1 else None

    def publish(self, key: str) -> None:
        """Make ``key`` the served set of every worker."""
        if self.served() != key:
            _write(self._served, key)
