"""The crash harness of device runs: ``kill -9`` a server's process group mid-round, restart.

:class:`ServerSupervisor` runs a server command in its own session (process group), so
``kill -9`` reaches the master and every worker at once, as a machine losing power or
the OOM killer would. :func:`kill_and_restart` waits until a given round is open in a
given protocol stage (``GET /v1/secure/rounds/{r}``), kills the group with SIGKILL,
waits, and starts the same command again on the same files. The CLI's ``device
supervise`` command runs both around a device run (see the README's device section).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ServerSupervisor", "kill_and_restart"]


def _get(url: str, timeout_s: float = 5.0) -> Any:
    """The JSON body of a GET, or None (no answer, an error status, not JSON)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


class ServerSupervisor:
    """A server command in its own process group.

    Parameters
    ----------
    argv : sequence of str
        The command (e.g. the CLI's ``serve --port P --workers 2``).
    env : mapping, optional
        Extra environment variables (e.g. the secure-rounds config file).
    log_path : Path, optional
        Where its stdout and stderr go (appended; default: discarded).
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        if not argv:
            raise ValueError("argv should name a command")
        self.argv = list(argv)
        self.env = dict(env or {})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The process group's id (its leader's pid) while running."""
        return None if self.process is None else self.process.pid

    def start(self) -> int:
        """Start the command in a new session; returns its pid."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"already running (pid {self.process.pid})")
        out = (open(self.log_path, "ab") if self.log_path is not None  # noqa: SIM115
               else subprocess.DEVNULL)
        try:
            self.process = subprocess.Popen(self.argv, env={**os.environ, **self.env},
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            if self.log_path is not None:
                out.close()  # type: ignore[union-attr]
        self.starts += 1
        return self.process.pid

    def wait_ready(self, url: str, path: str = "/v1/secure/model", timeout_s: float = 120.0
                   ) -> None:
        """Block until ``url + path`` answers with JSON.

        Raises
        ------
        RuntimeError
            The command exited, or no answer within ``timeout_s``.
        """
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited before answering "
                                   f"(log: {self.log_path})")
            if _get(url + path, 2.0) is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{url}{path} did not answer within {timeout_s:.0f} s")

    def kill9(self) -> None:
        """SIGKILL the whole process group (master and workers) and reap the leader."""
        if self.process is None:
            raise RuntimeError("not started")
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the group (a clean shutdown); SIGKILL if it has not ended in time."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def kill_and_restart(supervisor: ServerSupervisor, url: str, round_: int, stage: str, *,
                     restart_after_s: float = 5.0, timeout_s: float = 3600.0,
                     poll_s: float = 0.25, ready_timeout_s: float = 180.0,
                     should_stop: Callable[[], bool] = lambda: False
                     ) -> dict[str, Any] | None:
    """Wait until round ``round_`` is open in ``stage``, kill -9 the server's group,
    wait ``restart_after_s``, start it again and wait until it answers.

    Returns
    -------
    dict or None
        ``round``, ``stage`` (as seen just before the kill), ``killed_at`` and
        ``restarted_at`` (Unix time), ``old_pid``, ``new_pid``; None when
        ``should_stop()`` turned true or ``timeout_s`` passed first (nothing killed).
    """
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up and not should_stop():
        info = _get(f"{url}/v1/secure/rounds/{round_}", 2.0)
        if isinstance(info, dict) and info.get("status") == "open" \
                and info.get("stage") == stage:
            old = supervisor.pid
            killed_at = time.time()
            supervisor.kill9()
            time.sleep(restart_after_s)
            new = supervisor.start()
            supervisor.wait_ready(url, timeout_s=ready_timeout_s)
            return {"round": round_, "stage": stage, "killed_at": killed_at,
                    "restarted_at": time.time(), "old_pid": old, "new_pid": new}
        time.sleep(poll_s)
    return None
