"""faiss searches of many queries, split across Python threads.

faiss parallelises a search with OpenMP, whose many short parallel regions slow down
severalfold when a shared machine is busy (threads spin at every barrier while another
process holds a core). Stage 1 therefore keeps OpenMP at one thread and splits the
queries of a large search into contiguous slices searched concurrently by a thread pool:
faiss releases the GIL inside ``search``, a flat index is safe to search from several
threads, and each slice runs the same single-threaded code, so results do not depend on
the number of threads (up to the order of exactly tied scores).

The thread count is process-wide, set for a block of work with :func:`faiss_threads`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

__all__ = ["faiss_threads", "map_slices", "one_search_thread", "search", "search_threads"]

_MIN_SLICE = 2048  # queries per thread below which splitting costs more than it saves
_threads = 1
_local = threading.local()  # a thread's own override of _threads (one_search_thread)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def search_threads() -> int:
    """Threads that :func:`search` currently uses (in the calling thread)."""
    threads: int = getattr(_local, "threads", None) or _threads
    return threads


@contextlib.contextmanager
def one_search_thread() -> Iterator[None]:
    """:func:`search` in the calling thread runs its queries in that thread alone.

    For a search run beside other work (the job's own top-k evaluation beside its
    clustering): it takes one core and leaves the other to the work it overlaps. Each
    query's result is the same as with any thread count (see the module docstring).
    """
    before = getattr(_local, "threads", None)
    _local.threads = 1
    try:
        yield
    finally:
        _local.threads = before


def map_slices(function: Callable[[int, int], None], n: int, threads: int | None = None
               ) -> None:
    """Call ``function(lo, hi)`` on contiguous slices of ``range(n)``, one per thread.

    For loops whose numpy calls release the GIL (``bincount``, ``partition``) and whose
    slices write disjoint outputs: the result is the same as one call ``function(0, n)``.

    Parameters
    ----------
    function : callable
    n : int
    threads : int, optional
        Default :func:`search_threads` (the job's ``clusters.faiss_threads``).
    """
    threads = max(1, min(threads or search_threads(), n))
    if threads == 1:
        function(0, n)
        return
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads, thread_name_prefix="stage1-slices") as pool:
        list(pool.map(lambda i: function(int(bounds[i]), int(bounds[i + 1])),
                      range(threads)))


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run faiss single-threaded (OpenMP) with searches split over ``n`` threads.

    Parameters
    ----------
    n : int
        Search threads; 0 = every core this process may use.
    """
    global _threads
    before_omp, before = faiss.omp_get_max_threads(), _threads
    faiss.omp_set_num_threads(1)
    _threads = max(1, n or _cores())
    try:
        yield
    finally:
        _threads = before
        faiss.omp_set_num_threads(before_omp)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)``, its queries split across :func:`search_threads` threads.

    Parameters
    ----------
    index : faiss.Index
        A trained index (read only while searched).
    queries : ndarray of float32, shape (n, d)
    k : int
        Neighbours per query.

    Returns
    -------
    distances : ndarray of float32, shape (n, k)
    labels : ndarray of int64, shape (n, k)
        As ``faiss.Index.search`` returns them (-1 where fewer than ``k`` exist).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(queries)
    threads = min(search_threads(), n // _MIN_SLICE)
    if threads <= 1:
        distances, labels = index.search(queries, k)
        return distances, labels
    distances = np.empty((n, k), dtype=np.float32)
    labels = np.empty((n, k), dtype=np.int64)
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)

    def run(i: int) -> None:
        faiss.omp_set_num_threads(1)  # OpenMP settings are per thread: new threads get all
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        index.search(queries[lo:hi], k, D=distances[lo:hi], I=labels[lo:hi])

    with ThreadPoolExecutor(threads, thread_name_prefix="faiss-search") as pool:
        list(pool.map(run, range(threads)))
    return distances, labels
