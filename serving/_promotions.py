"""Promotion history: which versions of a kind were ever made live, in order.

``<var>/<kind>/promotions.jsonl`` is an append-only log, one JSON object a line:
``{"action", "version", "previous", "at"}`` with action ``promote`` (an operator's
``stickers models promote``), ``publish`` (a server-side aggregation whose candidate the
promotion policy made live), ``rollback`` (back to ``version``), ``found`` (a version
that was live without a record, e.g. published by ``stickers federated train``; recorded
the first time a server serves it or an operator acts) or ``candidate`` (a version an
aggregation published and the policy's decision on it, with its figures: not a
promotion by itself, see :mod:`serving._promotion_policy`). It is the source of truth of
``models rollback`` (never to
a version that was not promoted) and of the registry's fallback when ``LATEST`` is
missing or corrupt. Changes of ``LATEST`` by serving go through :func:`latest_lock`, so a
promotion, a rollback and an aggregation's compare-and-swap do not interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data import ArtifactError, read_manifest

__all__ = ["HISTORY", "history", "latest_lock", "live_stack", "promoted_versions", "record",
           "verifies"]

HISTORY = "promotions.jsonl"
_PUSH = ("promote", "publish", "found")


def history(kind_dir: Path) -> list[dict[str, Any]]:
    """Every record, oldest first (a torn last line from a crash is skipped)."""
    path = Path(kind_dir) / HISTORY
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("version"), str):
                out.append(entry)
    return out


def record(kind_dir: Path, action: str, version: str, previous: str | None = None, *,
           details: dict[str, Any] | None = None) -> None:
    """Append one record durably (one ``write`` on an ``O_APPEND`` descriptor, fsynced).

    ``details`` (JSON values) are stored beside the standard fields, e.g. a promotion
    policy's decision on a ``candidate``.
    """
    line = json.dumps({**(details or {}), "action": action, "version": version,
                       "previous": previous, "at": time.time()}) + "\n"
    fd = os.open(Path(kind_dir) / HISTORY, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def live_stack(entries: list[dict[str, Any]]) -> list[str]:
    """The versions made live, replayed: promotions push, a rollback pops back to its target.

    The last element is the version the history says is live; a rollback goes to the one
    before it.
    """
    stack: list[str] = []
    for entry in entries:
        version = entry["version"]
        if entry.get("action") in _PUSH:
            if not stack or stack[-1] != version:
                stack.append(version)
        elif entry.get("action") == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
    return stack


def promoted_versions(kind_dir: Path) -> set[str]:
    """Every version that was ever made live."""
    return {e["version"] for e in history(kind_dir) if e.get("action") in (*_PUSH, "rollback")}


def verifies(kind_dir: Path, version: str, kind: str) -> str | None:
    """None if the version exists and every checksum matches, else the reason."""
    try:
        read_manifest(Path(kind_dir) / version, verify=True, kind=kind)
    except (ArtifactError, OSError, ValueError) as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def latest_lock(kind_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on the kind's ``LATEST`` pointer (``flock``)."""
    Path(kind_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(kind_dir) / ".latest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
