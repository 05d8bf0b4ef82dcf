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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

__all__ = ["faiss_threads", "search", "search_threads"]

_MIN_SLICE = 2048  # queries per thread below which splitting costs more than it saves
_threads = 1


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def search_threads() -> int:
    """Threads that :func:`search` currently uses."""
    return _threads


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
    threads = min(_threads, n // _MIN_SLICE)
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
