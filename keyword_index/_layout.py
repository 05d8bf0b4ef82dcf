"""Layout of the packed tables that the compiled featurizer kernel reads (shared by the
builder in :mod:`keyword_index._features` and the kernel in :mod:`keyword_index._kernels`,
which imports numba).

A kernel call costs ~0.1-0.2 us per argument, so each structure is one flat array with
a small header rather than a handful of arrays.

Candidate set (one per set of candidates), int32 ``ints``::

    [n, n_labels, stride]
    [first: first sticker of each candidate (-1 if unknown), n]
    [offsets: n_labels + 1; the candidates carrying label l are pairs offsets[l]:offsets[l+1]]
    [pairs: rows (candidate, its stickers carrying the label, the first one)]

and float32 ``floats``: the cosines ``(n_labels, n)`` between label embeddings and
candidate factors, then the count features ``(2, n * stride)``: at ``c * stride + k``,
log1p and share of ``min(k, stickers of c)`` matching stickers (``stride - 1`` is the
largest possible count).
"""

CANDIDATE_HEADER = 3
