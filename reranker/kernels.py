"""The compiled (numba) loops of a keystroke: the row's shortlist and the stable top-k.

:class:`reranker.Suggester` and :class:`reranker.RowReplay` call them through the row's
assembly; this submodule is for tests that hold them to a plain-Python reading of their
rules: :func:`shortlist` (a keystroke's candidates collected in first-match order,
pre-scored and capped, the recently sent ones protected), :func:`push_top` and
:func:`top_candidates` (the best ``limit`` scores, ties in candidate order), and the
history-state constants :data:`NEVER` (``last`` of something never sent) and
:data:`IN_STAGE1` (the package flag of a stage-1 package). Importing it loads numba and
the compiled functions, which the package itself imports lazily.
"""

from reranker._kernels import push_top, top_candidates
from reranker._row_kernels import IN_STAGE1, NEVER
from reranker._row_kernels import _shortlist as shortlist

__all__ = ["IN_STAGE1", "NEVER", "push_top", "shortlist", "top_candidates"]
