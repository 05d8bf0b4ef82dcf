"""The serialised form of protocol messages and states: JSON with typed escapes.

Bytes become ``{"$b": base64}``, numpy arrays ``{"$a": base64, "dtype", "shape"}``,
dicts with integer keys ``{"$d": [[key, value], ...]}``; everything else is plain
JSON. Small, dependency-free and exact (arrays and integers round-trip bit for bit).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

__all__ = ["dumps", "loads"]


def _encode(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"$b": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, np.ndarray):
        return {"$a": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode("ascii"),
                "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"$d": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "$b" in obj:
            return base64.b64decode(obj["$b"])
        if "$a" in obj:
            flat = np.frombuffer(base64.b64decode(obj["$a"]), dtype=np.dtype(obj["dtype"]))
            return flat.reshape(obj["shape"]).copy()
        if "$d" in obj:
            return {_decode(k): _decode(v) for k, v in obj["$d"]}
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` (dicts, lists, bytes, ints, arrays...) to UTF-8 JSON bytes."""
    return json.dumps(_encode(obj), separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`.

    Raises
    ------
    ValueError
        If ``data`` is not valid serialised JSON.
    """
    try:
        return _decode(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a serialised message: {exc}") from exc
