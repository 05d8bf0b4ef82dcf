"""Running the app under gunicorn (production) from ``stickers serve``.

gunicorn is embedded as a custom application (its documented ``BaseApplication`` API), so
the resolved :class:`ServingConfig` reaches every worker without a config file. Workers
build their own app after the fork (no preload), each with its own registry thread. For
``/metrics`` to cover all workers, prometheus_client's multiprocess mode is switched on in
the master before any worker creates a metric.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from data import StickerSuggestError
from serving._board import BOARD_ENV
from serving._config import ServingConfig
from serving._metrics import MULTIPROC_ENV
from serving._worker import worker_class

__all__ = ["GunicornServer", "PortInUseError", "check_port_free", "enable_multiprocess_metrics"]


_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)


def _process_id() -> int:
    """This process's id, read once per fork rather than by a system call per sample."""
    return _pid


def enable_multiprocess_metrics(directory: Path) -> None:
    """Use ``directory`` (emptied) for multiprocess metrics in this process and its children.

    prometheus_client asks for the process id on every increment (to notice a fork);
    here it gets the id remembered at the last fork instead of a ``getpid`` system call,
    which is the same number.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    from prometheus_client import values

    # The value class is chosen when prometheus_client is imported; choose again now.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)


def _post_worker_init(worker: Any) -> None:
    from serving._state import freeze_heap  # the app's module, imported by the worker

    freeze_heap()  # the app and its models, out of the garbage collector's sight


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)


class PortInUseError(StickerSuggestError):
    """The port ``stickers serve`` should listen on is taken by another socket."""


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` if ``host:port`` already has a socket bound.

    With ``reuse_port`` the workers bind ``SO_REUSEPORT`` sockets, and Linux lets another
    process of the same user do the same: a second server (or a stale one) started on the
    port would silently share its connections instead of failing to bind. A plain bind
    (without ``SO_REUSEPORT``) fails on any socket bound to the port, so the master tries
    one before any worker starts and names the problem.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as gunicorn binds: connections of an earlier server left in TIME_WAIT do not
        # count, a socket bound to the port (listening) does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"cannot serve on {host}:{port}: {exc.strerror or exc} "
                                 "(another server, or one still stopping, has the port; "
                                 "stop it or choose another port)") from exc


class GunicornServer(BaseApplication):
    """gunicorn serving ``create_app(config)`` with the config's bind, worker model, workers
    and threads (see :mod:`serving._worker`)."""

    def __init__(self, config: ServingConfig, extra: dict[str, Any] | None = None, *,
                 app_factory: Callable[[], Any] | None = None) -> None:
        self.serving_config = config
        self.app_factory = app_factory
        front_limit = max(config.max_request_bytes, config.max_update_bytes)
        # the workers' version board: created empty for this run, removed at exit
        board = tempfile.mkdtemp(prefix="stickers-board-")
        os.environ[BOARD_ENV] = board
        self.options: dict[str, Any] = {
            "bind": f"{config.host}:{config.port}",
            "workers": config.workers,
            "worker_class": worker_class(config.worker_class,
                                         read_timeout_s=config.read_timeout_s,
                                         max_body_bytes=front_limit,
                                         log_client_addresses=config.log_client_addresses),
            "threads": config.threads if config.worker_class == "buffered" else 1,
            "worker_connections": config.max_connections,
            # buffered workers each bind their own SO_REUSEPORT socket (gunicorn creates
            # them in each worker): the kernel hashes new connections over them instead
            # of the first worker awake taking a whole burst (see ServingConfig.reuse_port)
            "reuse_port": (config.reuse_port and config.worker_class == "buffered"
                           and config.workers > 1 and config.port != 0
                           and hasattr(socket, "SO_REUSEPORT")),
            "timeout": config.timeout_s,
            "preload_app": False,
            "child_exit": _child_exit,
            "post_worker_init": _post_worker_init,
            "on_exit": lambda server: shutil.rmtree(board, ignore_errors=True),
            "accesslog": None,  # an access log line would be harmless, but off by default
            "proc_name": "stickers-serve",
            # gunicorn >= 24 opens a control socket in $HOME shared by every server of
            # the user; serving does not use it, and two servers would fight over it.
            "control_socket_disable": True,
            **(extra or {}),
        }
        super().__init__()

    def run(self) -> None:
        """Serve until stopped (first: the port must be free, see :func:`check_port_free`)."""
        if self.options.get("reuse_port"):
            check_port_free(self.serving_config.host, self.serving_config.port)
        super().run()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        if self.app_factory is not None:
            return self.app_factory()
        from serving._app import create_app

        return create_app(self.serving_config)
