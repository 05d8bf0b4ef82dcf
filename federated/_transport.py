"""The device client's one small transport module: JSON over HTTP with retries and timeouts.

Standard library only (``http.client``), one keep-alive connection per transport. A
request is retried on connection errors, timeouts and 5xx answers with exponential
backoff (bounded attempts); a 4xx answer is returned to the caller as a
:class:`TransportError` with the server's problem details, never retried.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from federated._errors import FederatedError

__all__ = ["HttpResponse", "HttpTransport", "TransportError"]


class TransportError(FederatedError):
    """A request failed for good: a 4xx answer, or retries exhausted.

    Attributes
    ----------
    status : int or None
        HTTP status (None: no answer at all).
    reason : str
        The problem's type slug (``token_replayed`` ...), or ``unreachable``.
    """

    def __init__(self, status: int | None, reason: str, detail: str) -> None:
        super().__init__(f"{status or 'no answer'} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class HttpResponse:
    """A 2xx/3xx answer: status, headers (lower-case names), the parsed JSON body (None
    when the answer is not JSON) and the raw bytes."""

    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


class HttpTransport:
    """JSON requests to one server.

    Parameters
    ----------
    base_url : str
        ``http://host:port``.
    timeout_s : float
        Per-request socket timeout.
    attempts : int
        Tries per request (1 = no retry).
    backoff_s : float
        First retry delay; doubled each retry, with jitter.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, attempts: int = 4,
                 backoff_s: float = 0.2) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url={base_url!r} should look like http://host:port")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._conn: http.client.HTTPConnection | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        """Close the keep-alive connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None) -> HttpResponse:
        """Send one JSON request, retrying transient failures.

        Raises
        ------
        TransportError
            On a 4xx answer or when every attempt failed.
        """
        data = None if body is None else json.dumps(body).encode()
        head = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            head["Content-Type"] = "application/json"
        last = "no attempt"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port,
                                                            timeout=self.timeout_s)
                self._conn.request(method, path, body=data, headers=head)
                response = self._conn.getresponse()
                raw = response.read()
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                self.close()
                last = f"{type(exc).__name__}: {exc}"
                continue
            self.bytes_sent += len(data or b"") + len(path) + 64
            self.bytes_received += len(raw)
            status = response.status
            parsed: Any = None
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
            if status >= 500:
                last = f"{status} {_slug(parsed)}"
                continue
            if status >= 400:
                detail = parsed.get("detail", "") if isinstance(parsed, dict) else ""
                raise TransportError(status, _slug(parsed), detail)
            return HttpResponse(status, {k.lower(): v for k, v in response.getheaders()},
                                parsed, raw)
        raise TransportError(None if not last[:3].isdigit() else int(last[:3]),
                             "unreachable", f"{method} {path} failed {self.attempts} times "
                             f"(last: {last})")


def _slug(problem: Any) -> str:
    if isinstance(problem, dict) and isinstance(problem.get("type"), str):
        return str(problem["type"]).rpartition("/")[2]
    return "error"
