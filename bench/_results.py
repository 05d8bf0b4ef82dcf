"""Writing benchmark results: a table on stdout and JSON under ``var/bench/``."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data import print_table, var_root

__all__ = ["bench_dir", "write_results"]


def bench_dir() -> Path:
    """``<var>/bench``, created if needed."""
    path = var_root() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                  meta: Mapping[str, Any]) -> Path:
    """Print ``rows`` as a table and write them with ``meta`` to ``var/bench/<name>.json``."""
    print_table(f"bench: {name}", columns, rows)
    payload = {
        "name": name,
        "created_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        **meta,
    }
    path = bench_dir() / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
