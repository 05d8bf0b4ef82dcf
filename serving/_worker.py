"""gunicorn workers of ``stickers serve``: a buffering front in each worker, problem errors.

gunicorn's sync workers (and its threaded ones) read a request on the thread that then
runs the app: a client sending one byte per second holds that thread for as long as it
likes, and a few such clients take the service down (issue #19). gunicorn's docs say
sync workers need a buffering proxy in front. :class:`BufferedThreadWorker` is that
proxy inside the worker: its event loop (gunicorn's threaded worker's own selector)
reads every request — headers and whole body — without blocking, and only a complete
request is handed to a thread, which then parses it from memory. A slow or stalled
client costs a buffer and a file descriptor, never a thread; one that takes longer than
``read_timeout_s`` for its request gets 408 and is disconnected; a body over the limit is
refused with 413 before it is read.

Both workers answer gunicorn's own parse errors (malformed request line, header limits,
bad chunking…) as ``application/problem+json`` and log them without the client's address
(unless ``log_client_addresses``). What gunicorn does not let a worker rewrite — the
connection reset of a peer that vanished — has no response to rewrite.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import time
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn import sock as gunicorn_sock
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

__all__ = ["BufferedThreadWorker", "ProblemSyncWorker", "request_complete", "worker_class"]

# gunicorn's exceptions for requests it cannot parse → (status, reason slug, detail)
_CLIENT_ERRORS: list[tuple[str, int, str, str]] = [
    ("LimitRequestLine", 414, "uri_too_long", "the request line is longer than the limit"),
    ("LimitRequestHeaders", 431, "header_fields_too_large",
     "the request has too many header fields or one is too long"),
    ("ExpectationFailed", 417, "expectation_failed", "the Expect header is not supported"),
    ("UnsupportedTransferCoding", 501, "unsupported_transfer_coding",
     "the Transfer-Encoding is not supported (chunked is)"),
    ("ForbiddenProxyRequest", 403, "forbidden", "proxy requests are not accepted"),
    ("InvalidRequestLine", 400, "invalid_request_line", "the request line is malformed"),
    ("InvalidRequestMethod", 400, "invalid_method", "the request method is malformed"),
    ("InvalidHTTPVersion", 400, "invalid_http_version", "the HTTP version is not supported"),
    ("InvalidHeaderName", 400, "invalid_header", "a header field name is malformed"),
    ("InvalidHeader", 400, "invalid_header", "a header field is malformed"),
    ("ObsoleteFolding", 400, "invalid_header", "a header field uses obsolete line folding"),
    ("InvalidChunkSize", 400, "invalid_chunk", "a chunk size is malformed"),
    ("ChunkMissingTerminator", 400, "invalid_chunk", "a chunk is not terminated"),
    ("InvalidChunkExtension", 400, "invalid_chunk", "a chunk extension is malformed"),
    ("InvalidProxyLine", 400, "invalid_proxy_line", "the PROXY line is malformed"),
    ("InvalidSchemeHeaders", 400, "invalid_header", "the scheme headers contradict"),
    ("InvalidH2CPreface", 400, "invalid_request_line", "the HTTP/2 preface is malformed"),
]
_TITLES = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented"}


def _client_error(exc: BaseException) -> tuple[int, str, str] | None:
    if isinstance(exc, http_errors.InvalidResponseHeader | http_errors.InvalidResponseHeaderName):
        return None  # the application's fault: a 500
    for name, status, reason, detail in _CLIENT_ERRORS:
        cls = getattr(http_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status, reason, detail
    return None


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem-details response that closes the connection."""
    body = json.dumps({"type": f"/problems/{reason}", "title": _TITLES.get(status, "Error"),
                       "status": status, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {_TITLES.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class _ProblemErrors:
    """gunicorn's ``handle_error`` with problem+json bodies and no client address logged."""

    log: Any
    log_client_addresses = False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        known = _client_error(exc)
        where = f" from {addr[0]}" if self.log_client_addresses and addr else ""
        if known is None:
            self.log.exception("error handling a request%s (%s)", where, type(exc).__name__)
            known = (500, "internal_error", "the server failed to handle this request")
        else:
            self.log.info("refused a malformed request%s: %s %s", where, known[0],
                          type(exc).__name__)
        try:
            from gunicorn import util

            util.write_nonblock(client, problem_bytes(*known))
        except Exception:  # the peer is gone: nothing to answer
            self.log.debug("failed to send the error response")


class ProblemSyncWorker(_ProblemErrors, SyncWorker):
    """gunicorn's sync worker with problem+json errors (the pre-#19 worker model)."""


def request_complete(buffer: bytes | bytearray, *, max_header_bytes: int,
                     max_body_bytes: int) -> tuple[str, int]:
    """Whether ``buffer`` holds a whole HTTP/1.x request.

    Returns
    -------
    (state, n) : tuple
        ``("complete", 0)``; ``("incomplete", 0)``; ``("too_large", body_bytes)`` when
        the body is (announced or received) over ``max_body_bytes``; ``("parse", 0)`` when
        the parser should see it now (headers over ``max_header_bytes``, a framing it
        will refuse) — it then fails on what is buffered, without waiting.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return ("parse", 0) if len(buffer) > max_header_bytes else ("incomplete", 0)
    length: int | None = None
    chunked = False
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                return "parse", 0
            length = int(value)
        elif name == b"transfer-encoding":
            if value != b"chunked":
                return "parse", 0
            chunked = True
    start = end + 4
    if chunked:
        if length is not None:
            return "parse", 0
        return _chunked_complete(buffer, start, max_body_bytes)
    if length is None or length == 0:
        return "complete", 0
    if length > max_body_bytes:
        return "too_large", length
    return ("complete", 0) if len(buffer) - start >= length else ("incomplete", 0)


def _chunked_complete(buffer: bytes | bytearray, pos: int, max_body_bytes: int
                      ) -> tuple[str, int]:
    data = 0
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return ("parse", 0) if len(buffer) - pos > 1024 else ("incomplete", 0)
        size_field = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            return "parse", 0
        if size == 0:
            rest = line_end + 2
            if buffer[rest:rest + 2] == b"\r\n" or buffer.find(b"\r\n\r\n", rest) >= 0:
                return "complete", 0
            return ("parse", 0) if len(buffer) - rest > 8192 else ("incomplete", 0)
        data += size
        if data > max_body_bytes:
            return "too_large", data
        pos = line_end + 2 + size + 2
        if pos > len(buffer):
            return "incomplete", 0


class BufferedThreadWorker(_ProblemErrors, ThreadWorker):
    """gunicorn's threaded worker whose event loop buffers whole requests (see module doc).

    Class attributes ``read_timeout_s``, ``max_body_bytes`` and ``log_client_addresses``
    are set by :func:`worker_class`.
    """

    read_timeout_s = 30.0
    max_body_bytes = 4 * 1024 * 1024

    def init_process(self) -> None:
        self.buffering: dict[Any, float] = {}  # connection -> read deadline (monotonic)
        cfg = self.cfg
        self.max_header_bytes = (cfg.limit_request_line + 2 + cfg.limit_request_fields
                                 * (cfg.limit_request_field_size + 2) + 2)
        sockets: list[Any] = self.sockets
        if cfg.reuse_port and sockets:
            # With reuse_port gunicorn binds this worker's own listening socket before the
            # app loads: the kernel would queue a share of new connections on a worker
            # that spends seconds loading its models (at start, or after a restart while
            # its siblings serve). Close it now and listen once the app is loaded (run).
            gunicorn_sock.close_sockets(sockets, unlink=False)
            self.sockets: list[Any] = []
            self._listen_when_loaded = True
        super().init_process()

    def run(self) -> None:
        """gunicorn's loop, after binding this worker's own socket if it listens late."""
        if getattr(self, "_listen_when_loaded", False):
            self.sockets = gunicorn_sock.create_sockets(self.cfg, self.log)
            for listener in self.sockets:
                util.close_on_exec(listener)
        super().run()

    def enqueue_req(self, conn: Any) -> None:
        """Hand a buffered request to a thread; anything else is buffered first."""
        if getattr(conn, "buffered", False) or self.cfg.is_ssl:
            conn.buffered = False
            super().enqueue_req(conn)
            return
        pending = b"" if conn.parser is None else conn.parser.unreader.take_buffered()
        conn.inbox = bytearray(pending)
        conn.sock.setblocking(False)
        if not self._maybe_dispatch(conn):
            self.buffering[conn] = time.monotonic() + self.read_timeout_s
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self._on_readable, conn))

    def _on_readable(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away mid-request
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()
            return
        conn.inbox += data
        self._maybe_dispatch(conn)

    def _maybe_dispatch(self, conn: Any) -> bool:
        """Dispatch (or refuse) ``conn``'s request if it is complete; True if it left
        (and is buffered no more). The request is looked at once per read."""
        if not conn.inbox:
            return False
        state, size = request_complete(conn.inbox, max_header_bytes=self.max_header_bytes,
                                       max_body_bytes=self.max_body_bytes)
        if state == "incomplete":
            return False
        self._forget(conn)  # a no-op unless it was waiting in the poller
        if state == "too_large":
            self._refuse(conn, 413, "payload_too_large",
                         f"request body of {size} bytes or more is larger than the limit of "
                         f"{self.max_body_bytes} bytes")
            return True
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.inbox))
        conn.inbox = bytearray()
        conn.data_ready = True
        conn.buffered = True
        self.enqueue_req(conn)
        return True

    def _forget(self, conn: Any) -> None:
        if self.buffering.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _refuse(self, conn: Any, status: int, reason: str, detail: str) -> None:
        """Answer from the event loop (non-blocking, best effort) and close."""
        with contextlib.suppress(OSError):
            conn.sock.send(problem_bytes(status, reason, detail))
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also end the requests that took longer than ``read_timeout_s`` (408)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.buffering.items()):
            if deadline > now:
                break  # insertion order is deadline order (one timeout for all)
            self._forget(conn)
            self._refuse(conn, 408, "request_timeout",
                         f"the request was not complete within {self.read_timeout_s:g} s")


def worker_class(kind: str, *, read_timeout_s: float, max_body_bytes: int,
                 log_client_addresses: bool) -> type:
    """The gunicorn worker class of a ``worker_class`` setting, with its settings bound."""
    if kind == "sync":
        return type("ServingSyncWorker", (ProblemSyncWorker,),
                    {"log_client_addresses": log_client_addresses})
    return type("ServingBufferedWorker", (BufferedThreadWorker,),
                {"read_timeout_s": read_timeout_s, "max_body_bytes": max_body_bytes,
                 "log_client_addresses": log_client_addresses})
