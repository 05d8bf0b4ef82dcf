"""Compiled (numba) selection of the suggestion row from one keystroke's scores.

The row is the ``limit`` best candidates that show a sticker, best first, ties in
candidate order: what ``(-scores).argsort(kind="stable")`` followed by dropping
candidates without a sticker gives. With ~100 candidates and a row of ~8 that is one
pass with an insertion into the short row, a few microseconds in one compiled call
where the numpy expression costs ~25 µs of dispatch on a server's cold caches.

Like :mod:`keyword_index._kernels`, this module imports numba: the package imports it
lazily (:class:`~reranker.Suggester` does, when constructed; numba is loaded by then
for the keyword featurizer anyway). Compiled on first use, then loaded from numba's
on-disk cache (``@njit(cache=True)``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = ["load", "push_top", "top_candidates"]


@njit(cache=True, nogil=True)
def push_top(scores, i: int, index, m: int, limit: int) -> int:  # pragma: no cover
    """Candidate ``i`` into the row ``index[:m]`` (best first, ties in candidate order).

    ``index`` holds candidate indices into ``scores``, sorted by falling score; candidates
    are pushed in candidate order, so an equal score ranks after the ones already there
    and is dropped when the row is full. Returns the row's new length (``<= limit``).
    """
    s = scores[i]
    if m == limit and not s > scores[index[m - 1]]:
        return m  # an equal score later in candidate order ranks after the row
    j = m if m < limit else limit - 1
    while j > 0 and s > scores[index[j - 1]]:
        index[j] = index[j - 1]
        j -= 1
    index[j] = i
    return m + 1 if m < limit else m


@njit(cache=True, nogil=True)
def top_candidates(scores: npt.NDArray[np.float32], shown: npt.NDArray[np.int32],
                   candidate_ids: npt.NDArray[np.int32], limit: int,
                   out_stickers: npt.NDArray[np.int64], out_packages: npt.NDArray[np.int64],
                   out_scores: npt.NDArray[np.float64]) -> int:  # pragma: no cover
    """Write the row into the ``out_*`` arrays; return its length ``m <= limit``.

    Parameters
    ----------
    scores : ndarray of float32, shape (n,)
        Candidate scores (finite; NaN would never enter the row).
    shown : ndarray of int32, shape (>= n,)
        The sticker each candidate shows; ``< 0``: none, the candidate is skipped.
    candidate_ids : ndarray of int32, shape (>= n,)
        Package id of each candidate.
    limit : int
        Row length wanted (``1 <= limit <= len(out_*)``).
    out_stickers, out_packages : ndarray of int64, shape (>= limit,)
    out_scores : ndarray of float64, shape (>= limit,)
        The row, best first: ``[:m]`` is written.
    """
    index = np.empty(limit, np.int64)
    m = 0
    for i in range(scores.shape[0]):
        if shown[i] >= 0:
            m = push_top(scores, i, index, m, limit)
    for j in range(m):
        i = index[j]
        out_stickers[j] = shown[i]
        out_packages[j] = candidate_ids[i]
        out_scores[j] = scores[i]
    return m


_WARM = False


def load() -> None:
    """Compile :func:`top_candidates` (or load it from numba's cache) once per process,
    with the argument types of the keystroke path, so no request pays for it."""
    global _WARM
    if not _WARM:
        one = np.zeros(1, np.int32)
        top_candidates(np.zeros(1, np.float32), one, one, 1, np.empty(1, np.int64),
                       np.empty(1, np.int64), np.empty(1, np.float64))
        _WARM = True
