"""Compiled (numba) per-keystroke kernels of the keyword index and the featurizer.

This module imports numba, which takes ~0.4 s: the package imports it lazily, when a
:class:`~keyword_index.KeywordIndex` or a :class:`~keyword_index.CandidateFeaturizer` is
constructed (see :func:`load`), never at ``import keyword_index``. The kernels are
compiled on their first call and cached on disk (``@njit(cache=True)``, in
``__pycache__`` next to this file, or under ``NUMBA_CACHE_DIR``); constructors make that
first call (:func:`warm_up`) so that no keystroke pays for compilation. A process
compiles once (a few seconds, the first time on a machine) and later processes load
the cached machine code (well under a second).

The tables are packed as described in :mod:`keyword_index._layout`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from keyword_index._layout import (
    CANDIDATE_HEADER,
    HEADER_EDGES,
    HEADER_LABEL_BOUND,
    HEADER_NODES,
    HEADER_REFS,
    HEADER_WORD_STARTS,
    N_NODE_COLUMNS,
    NODE_DEPTH,
    NODE_EDGE_HI,
    NODE_EDGE_LO,
    NODE_ENTRY_HI,
    NODE_ENTRY_LO,
    NODE_FAIL,
    NODE_LABELS_HI,
    NODE_LABELS_LO,
    NODE_OUTPUT,
    TABLE_HEADER,
)

__all__ = ["features_kernel", "load", "match_kernel", "warm_up"]


@njit(cache=True, nogil=True)
def match_kernel(codes: npt.NDArray[np.uint32], starts: npt.NDArray[np.intp],
                 table: npt.NDArray[np.int32], values: npt.NDArray[np.float32],
                 out_labels: npt.NDArray[np.int32], out_strengths: npt.NDArray[np.float32],
                 out_kinds: npt.NDArray[np.int8]) -> int:  # pragma: no cover - compiled
    """Match a normalised text against one language's keyword automaton.

    Parameters
    ----------
    codes : ndarray of uint32, shape (n,)
        Code points of the normalised text (``n >= 1``).
    starts : ndarray of intp, shape (k,)
        Positions in ``[0, n)`` where a typed word starts (read only if the automaton
        asks keywords to start at a word start).
    table : ndarray of int32, shape (TABLE_HEADER + 9 n_nodes + 2 n_edges + n_refs,)
        The automaton (see :mod:`keyword_index._layout`).
    values : ndarray of float32, shape (n_refs + n_decay + 1,)
        Its prefix strengths and earlier-occurrence strengths.
    out_labels, out_strengths, out_kinds : ndarray, shape (capacity,)
        Filled with the match: prefix-entry labels first (in entry order, an occurrence
        replacing a prefix match it equals or beats), then labels found only by
        occurrences, in the order they were first found.

    Returns
    -------
    int
        The number ``m`` of matched labels. If ``m <= capacity`` the match is the first
        ``m`` elements of the outputs; otherwise they hold only its first ``capacity``.
    """
    n_nodes = np.int64(table[HEADER_NODES])
    n_edges = np.int64(table[HEADER_EDGES])
    n_refs = np.int64(table[HEADER_REFS])
    label_bound = np.int64(table[HEADER_LABEL_BOUND])
    at_edges = TABLE_HEADER + n_nodes * N_NODE_COLUMNS
    at_refs = at_edges + 2 * n_edges
    nodes = table[TABLE_HEADER:at_edges].reshape((n_nodes, N_NODE_COLUMNS))
    edges = table[at_edges:at_refs].reshape((n_edges, 2))
    labels = table[at_refs:at_refs + n_refs]
    strengths = values[:n_refs]
    decay = values[n_refs:]
    n = codes.shape[0]
    last = n - 1
    # One allocation for all scratch space (int32): per label its position in found_*
    # (a sparse set: read without initialising, valid if found_labels says so), the
    # found labels, kinds and strengths (as float32), the scan states, the word starts.
    scratch = np.empty(4 * label_bound + 2 * n + 1, np.int32)
    slot = scratch[:label_bound]
    found_labels = scratch[label_bound:2 * label_bound]
    found_kinds = scratch[2 * label_bound:3 * label_bound]  # 0 once taken by the entry
    found_strengths = scratch[3 * label_bound:4 * label_bound].view(np.float32)
    states = scratch[4 * label_bound:4 * label_bound + n]
    word_start = scratch[4 * label_bound + n:]
    if table[HEADER_WORD_STARTS]:
        word_start[:] = 0
        for s in starts:
            word_start[s] = 1
    else:
        word_start[:] = 1
    # Aho-Corasick scan: state after each character (the longest suffix typed so far that
    # is a keyword prefix).
    state = 0
    for i in range(n):
        c = np.int64(codes[i])
        while True:
            lo = nodes[state, NODE_EDGE_LO]
            hi = nodes[state, NODE_EDGE_HI]
            while lo < hi:  # binary search of the character among the children
                mid = (lo + hi) >> 1
                if edges[mid, 0] < c:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < nodes[state, NODE_EDGE_HI] and edges[lo, 0] == c:
                state = edges[lo, 1]
                break
            if state == 0:
                break
            state = nodes[state, NODE_FAIL]
        states[i] = state
    # The typed keyword prefix: the longest tail of the text that is one (at a word
    # start). The failure chain of the last state lists every tail that is a trie node,
    # longest first.
    entry_lo = 0
    entry_hi = 0
    tail = 0
    node = states[last]
    while node != 0:
        depth = nodes[node, NODE_DEPTH]
        if nodes[node, NODE_ENTRY_LO] >= 0 and word_start[n - depth] != 0:
            entry_lo = nodes[node, NODE_ENTRY_LO]
            entry_hi = nodes[node, NODE_ENTRY_HI]
            tail = depth
            break
        node = nodes[node, NODE_FAIL]
    # Whole-keyword occurrences, latest end first, then longest: an occurrence inside a
    # longer one seen before (or inside the typed prefix) is ignored unless it ends the text.
    n_found = 0
    min_start = n - tail if tail else n
    n_decay = decay.shape[0] - 1
    for end in range(last, -1, -1):
        node = nodes[states[end], NODE_OUTPUT]
        while node > 0:
            start = end - nodes[node, NODE_DEPTH] + 1
            following = nodes[nodes[node, NODE_FAIL], NODE_OUTPUT]
            if word_start[start] == 0:
                node = following
                continue
            if end == last:
                strength = np.float32(1.0)
                kind = 1
            elif min_start <= start:
                node = following
                continue
            else:
                d = last - end
                strength = decay[d] if d < n_decay else decay[n_decay]
                kind = 3
            if start < min_start:
                min_start = start
            for r in range(nodes[node, NODE_LABELS_LO], nodes[node, NODE_LABELS_HI]):
                label = labels[r]
                at = slot[label]
                if not (0 <= at < n_found and found_labels[at] == label):
                    slot[label] = n_found
                    found_labels[n_found] = label
                    found_strengths[n_found] = strength
                    found_kinds[n_found] = kind
                    n_found += 1
                elif strength > found_strengths[at]:
                    found_strengths[at] = strength
                    found_kinds[at] = kind
            node = following
    # Merge: the prefix entry (sorted labels), an occurrence winning a tie, then the rest.
    capacity = out_labels.shape[0]
    m = 0
    for r in range(entry_lo, entry_hi):
        label = labels[r]
        strength = strengths[r]
        kind = 2
        at = slot[label]
        if 0 <= at < n_found and found_labels[at] == label:
            if found_strengths[at] >= strength:
                strength = found_strengths[at]
                kind = found_kinds[at]
            found_kinds[at] = 0  # taken by the entry
        if m < capacity:
            out_labels[m] = label
            out_strengths[m] = strength
            out_kinds[m] = kind
        m += 1
    for at in range(n_found):
        if found_kinds[at] != 0:
            if m < capacity:
                out_labels[m] = found_labels[at]
                out_strengths[m] = found_strengths[at]
                out_kinds[m] = found_kinds[at]
            m += 1
    return m


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
    # One keyword "a" of label 0; one candidate carrying label 0 on one sticker.
    nodes = np.zeros((2, N_NODE_COLUMNS), np.int32)
    nodes[0, NODE_EDGE_HI] = 1
    nodes[1, NODE_EDGE_LO] = nodes[1, NODE_EDGE_HI] = 1
    nodes[:, NODE_OUTPUT] = [-1, 1]
    nodes[1, NODE_DEPTH] = nodes[1, NODE_LABELS_HI] = 1
    nodes[:, NODE_ENTRY_LO] = nodes[:, NODE_ENTRY_HI] = -1
    table = np.concatenate([[2, 1, 1, 1, 1, 0, 0, 0], nodes.ravel(), [97, 1, 0]])
    table = table.astype(np.int32)
    table.flags.writeable = False
    values = np.array([0.0, 1.0, 0.5], np.float32)
    values.flags.writeable = False
    codes = np.frombuffer("a".encode("utf-32-le"), np.uint32)
    labels = np.empty(1, np.int32)
    strengths = np.empty(1, np.float32)
    kinds = np.empty(1, np.int8)
    match_kernel(codes, np.zeros(1, np.intp), table, values, labels, strengths, kinds)
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
