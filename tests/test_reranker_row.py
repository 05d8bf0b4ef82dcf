"""The suggestion row: the compiled top-k selection against numpy's stable argsort."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reranker.model import top_candidates


def _reference(scores: np.ndarray, shown: np.ndarray, ids: np.ndarray,
               limit: int) -> tuple[list[int], list[int], list[float]]:
    """What the row means: stable sort by score descending, drop stickerless candidates."""
    order = (-scores).argsort(kind="stable")
    order = order[shown[order] >= 0][:limit]
    return shown[order].tolist(), ids[order].tolist(), scores[order].astype(float).tolist()


def _kernel(scores: np.ndarray, shown: np.ndarray, ids: np.ndarray,
            limit: int) -> tuple[list[int], list[int], list[float]]:
    out = (np.full(50, -7, np.int64), np.full(50, -7, np.int64), np.full(50, np.nan))
    m = top_candidates(scores, shown, ids, limit, *out)
    assert (out[0][m:] == -7).all()  # nothing written past the row
    return out[0][:m].tolist(), out[1][:m].tolist(), out[2][:m].tolist()


def test_row_by_hand() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, 5.0, 3.0], np.float32)
    shown = np.array([10, 11, 12, 13, -1, 15], np.int32)  # candidate 4 has no sticker
    ids = np.array([100, 101, 102, 103, 104, 105], np.int32)
    # 5.0 is skipped; the three 3.0 ties keep candidate order; then 2.0
    assert _kernel(scores, shown, ids, 4) == ([11, 12, 15, 13], [101, 102, 105, 103],
                                              [3.0, 3.0, 3.0, 2.0])
    assert _kernel(scores, shown, ids, 2) == ([11, 12], [101, 102], [3.0, 3.0])
    assert _kernel(scores, shown, ids, 50)[0] == [11, 12, 15, 13, 10]  # shorter than limit
    assert _kernel(scores, np.full(6, -1, np.int32), ids, 3) == ([], [], [])


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(-3, 3), min_size=0, max_size=120),
       missing=st.lists(st.booleans(), min_size=120, max_size=120),
       limit=st.integers(1, 50))
def test_row_equals_stable_argsort(values: list[int], missing: list[bool], limit: int) -> None:
    # few distinct values: many ties, the case a selection most easily gets wrong
    n = len(values)
    scores = (np.array(values, np.float32) / 4).astype(np.float32)
    shown = np.where(np.array(missing[:n], bool), -1, np.arange(n) + 1000).astype(np.int32)
    ids = np.arange(n, dtype=np.int32) * 3
    assert _kernel(scores, shown, ids, limit) == _reference(scores, shown, ids, limit)


def test_import_does_not_load_numba() -> None:
    code = "import sys, reranker, serving; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
