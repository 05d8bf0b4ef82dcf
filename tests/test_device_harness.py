"""The crash harness (#18): kill -9 a server's whole process group at a round's stage, restart."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from federated._device_harness import ServerSupervisor, _get, kill_and_restart

# a real server process with a worker child, answering the two GETs the harness reads
_SERVER = textwrap.dedent("""
    import json, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    port, pids = int(sys.argv[1]), sys.argv[2]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pids, "a") as out:
        out.write(f"{worker.pid}\\n")
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            stage = "share" if time.monotonic() - started < 1.0 else "mask"
            body = {"/v1/secure/model": {"model_version": 0},
                    "/v1/secure/rounds/2": {"round": 2, "status": "open", "stage": stage},
                    }.get(self.path)
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def test_kill9_reaches_the_whole_group_and_the_server_comes_back(tmp_path: Path) -> None:
    script, pids = tmp_path / "server.py", tmp_path / "pids"
    script.write_text(_SERVER)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    supervisor = ServerSupervisor([sys.executable, str(script), str(port), str(pids)],
                                  log_path=tmp_path / "server.log")
    supervisor.start()
    try:
        supervisor.wait_ready(url)
        first_worker = int(pids.read_text().split()[0])
        assert _alive(first_worker)
        started = time.monotonic()
        event = kill_and_restart(supervisor, url, 2, "mask", restart_after_s=0.2,
                                 poll_s=0.05, ready_timeout_s=30)
        assert event is not None
        # not before the round reached the stage asked for (it shows "share" for 1 s)
        assert time.monotonic() - started >= 1.0
        assert event["round"] == 2 and event["stage"] == "mask"
        assert event["old_pid"] != event["new_pid"] == supervisor.pid
        assert event["restarted_at"] - event["killed_at"] >= 0.2
        # SIGKILL went to the group: the first server's worker is gone too
        for _ in range(50):
            if not _alive(first_worker):
                break
            time.sleep(0.1)
        assert not _alive(first_worker)
        assert _get(url + "/v1/secure/model") == {"model_version": 0}
        assert supervisor.starts == 2
        # a stop request while waiting kills nothing
        assert kill_and_restart(supervisor, url, 7, "mask", should_stop=lambda: True) is None
        assert supervisor.starts == 2
    finally:
        supervisor.stop()
    workers = [int(x) for x in pids.read_text().split()]
    assert len(workers) == 2
    time.sleep(0.5)
    assert not any(_alive(w) for w in workers)  # a clean stop ends the group too
    with pytest.raises(RuntimeError):
        ServerSupervisor([sys.executable, "-c", "pass"]).kill9()
