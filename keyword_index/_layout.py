"""Layouts of the packed tables that the compiled kernels read (shared by the builders in
:mod:`keyword_index._index` / :mod:`keyword_index._features` and the kernels in
:mod:`keyword_index._kernels`, which imports numba).

A kernel call costs ~0.1-0.2 us per argument, so each structure is one flat array with
a small header rather than a handful of arrays.

Keyword automaton (one per language), int32 ``table``::

    [TABLE_HEADER ints: n_nodes, n_edges, n_refs, label_bound, word_starts, 0, 0, 0]
    [nodes: n_nodes rows of N_NODE_COLUMNS (NODE_* below)]
    [edges: n_edges rows (character, child node), grouped by parent, sorted by character]
    [refs: n_refs label ids (the keywords' labels and the prefix entries)]

and float32 ``values``: ``n_refs`` prefix strengths (0 where a ref is a keyword label),
then the strength of an earlier occurrence ending ``d`` characters before the end for
``d = 0, 1, ...`` and last the floor (for every larger ``d``). ``label_bound`` is one
more than the largest label id; ``word_starts`` is 1 if keywords must start at a word
start (word-boundary languages).

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

TABLE_HEADER = 8
HEADER_NODES, HEADER_EDGES, HEADER_REFS, HEADER_LABEL_BOUND, HEADER_WORD_STARTS = range(5)

NODE_EDGE_LO = 0
"""The node's outgoing edges are rows ``[lo, hi)`` of the edge table."""
NODE_EDGE_HI = 1
NODE_FAIL = 2
"""Aho–Corasick failure link: the node of the longest proper suffix that is a trie node
(the root, 0, for a node of depth 1)."""
NODE_OUTPUT = 3
"""The nearest node on the failure chain (the node itself first) ending a keyword; -1."""
NODE_DEPTH = 4
"""Characters from the root."""
NODE_LABELS_LO = 5
"""Labels of the keyword ending at the node: ``refs[lo:hi]`` (empty if none)."""
NODE_LABELS_HI = 6
NODE_ENTRY_LO = 7
"""-1 unless the node is a typed prefix that counts (a proper keyword prefix of at least
the language's minimum length); then its entry is ``refs[lo:hi]`` with the prefix
strengths ``values[lo:hi]``, sorted by label."""
NODE_ENTRY_HI = 8
N_NODE_COLUMNS = 9

CANDIDATE_HEADER = 3
