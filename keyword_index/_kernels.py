"""Compiled (numba) per-keystroke kernel of the candidate featurizer.

This module imports numba, which takes ~0.4 s: the package imports it lazily, when a
:class:`~keyword_index.CandidateFeaturizer` is constructed (see :func:`load`), never
at ``import keyword_index``. The kernel is compiled on its first call and cached on
disk (``@njit(cache=True)``, in ``__pycache__`` next to this file, or under
``NUMBA_CACHE_DIR``); the constructor makes that first call (:func:`warm_up`) so that
no keystroke pays for compilation. A process compiles once (a few seconds, the first
time on a machine) and later processes load the cached machine code (well under a
second).

The tables are packed as described in :mod:`keyword_index._layout`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from keyword_index._layout import CANDIDATE_HEADER

__all__ = ["features_kernel", "load", "warm_up"]


@njit(cache=True, nogil=True, error_model="numpy")
def features_kernel(labels: npt.NDArray[np.int32], strengths: npt.NDArray[np.float32],
                    kinds: npt.NDArray[np.int8], ints: npt.NDArray[np.int32],
                    floats: npt.NDArray[np.float32], out: npt.NDArray[np.float32],
                    out_stickers: npt.NDArray[np.int32]) -> int:  # pragma: no cover
    """Keyword features of ``n`` candidates for one match (see ``FEATURE_NAMES``).

    Parameters
    ----------
    labels, strengths, kinds : ndarray, shape (m,)
        The match (``m >= 1``).
    ints : ndarray of int32, shape (3 + n + n_labels + 1 + 3 n_pairs,)
        Integer tables of the candidate set (see :mod:`keyword_index._layout`).
    floats : ndarray of float32, shape (n_labels n + 2 n stride,)
        Cosines and count features of the candidate set.
    out : ndarray of float32, shape (n, 7)
        Filled with the features.
    out_stickers : ndarray of int32, shape (n,)
        Filled with the sticker to show.

    Returns
    -------
    int
        -1, or the position in the match of a label outside ``[0, n_labels)`` (then the
        outputs are not filled).
    """
    n = np.int64(ints[0])
    n_labels = np.int64(ints[1])
    stride = np.int64(ints[2])
    first = ints[CANDIDATE_HEADER:CANDIDATE_HEADER + n]
    offsets = ints[CANDIDATE_HEADER + n:CANDIDATE_HEADER + n + n_labels + 1]
    base = CANDIDATE_HEADER + n + n_labels + 1
    cosines = floats[:n_labels * n].reshape((n_labels, n))
    log1p_count = floats[n_labels * n:n_labels * n + n * stride]
    share = floats[n_labels * n + n * stride:n_labels * n + 2 * n * stride]
    m = labels.shape[0]
    # Scratch in the output while walking the labels: out[c, 0] is the best strength so
    # far (-inf: none), out[c, 1] its kind, out[c, 4] the number of matching stickers.
    for c in range(n):
        out[c, 0] = -np.inf
        out[c, 1] = 0.0
        out[c, 4] = 0.0
    cosine = np.zeros(n, np.float64)
    total = 0.0
    for j in range(m):
        label = labels[j]
        if label < 0 or label >= n_labels:
            return j
        s = strengths[j]
        total += s
        row = cosines[label]
        s64 = np.float64(s)
        for c in range(n):
            cosine[c] += s64 * row[c]
        for r in range(offsets[label], offsets[label + 1]):
            at = base + 3 * r
            c = ints[at]
            out[c, 4] += ints[at + 1]
            # The strongest carried label; on a tie, the first in the match.
            if s > out[c, 0]:
                out[c, 0] = s
                out[c, 1] = kinds[j]
                out_stickers[c] = ints[at + 2]
    for c in range(n):
        kind = np.int64(out[c, 1])
        out[c, 1] = 0.0
        out[c, 2] = 0.0
        out[c, 3] = 0.0
        if out[c, 0] == -np.inf:  # carries no matched label
            out[c, 0] = 0.0
            out_stickers[c] = first[c]
        elif 1 <= kind <= 3:
            out[c, kind] = 1.0
        at = c * stride + min(np.int64(out[c, 4]), stride - 1)
        out[c, 4] = log1p_count[at]
        out[c, 5] = share[at]
        out[c, 6] = cosine[c] / total
    return -1


def warm_up() -> None:
    """Call every kernel once with the argument types of the per-keystroke path, so
    that it is compiled (or loaded from numba's cache) before the first keystroke."""
    # One matched label 0 (exact); one candidate carrying it on one sticker.
    labels = np.zeros(1, np.int32)
    strengths = np.ones(1, np.float32)
    kinds = np.ones(1, np.int8)  # MatchKind.EXACT
    ints = np.array([1, 1, 2, 0, 0, 1, 0, 1, 0], np.int32)
    floats = np.array([1.0, 0.0, 0.69, 0.0, 1.0], np.float32)
    for array in (ints, floats):
        array.flags.writeable = False
    features_kernel(labels, strengths, kinds, ints, floats, np.empty((1, 7), np.float32),
                    np.empty(1, np.int32))


_WARM = False


def load() -> None:
    """Make sure the kernels are ready (idempotent; see the module docstring)."""
    global _WARM
    if not _WARM:
        warm_up()
        _WARM = True
