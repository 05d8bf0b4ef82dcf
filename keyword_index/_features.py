"""Keyword-derived features of candidate packages for the reranker.

Per keystroke the reranker needs, for each of ~100 candidate packages, how well the
package's stickers fit what is being typed. :class:`CandidateFeaturizer` precomputes,
once per candidate set, a small per-label table for those candidates, so that a
keystroke costs one gather of the matched labels' rows plus a few numpy reductions
over ``(n_matched_labels, n_candidates)`` arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from keyword_index._errors import KeywordIndexError
from keyword_index._index import Match, MatchKind

__all__ = ["FEATURE_NAMES", "CandidateFeaturizer", "label_embeddings"]

FEATURE_NAMES: tuple[str, ...] = (
    "best_strength",
    "exact_match",
    "prefix_match",
    "earlier_match",
    "log1p_matching_stickers",
    "matching_share",
    "query_cosine",
)
"""Columns of :meth:`CandidateFeaturizer.features`, in order.

best_strength
    Largest match strength (0–1) of any label carried by any sticker of the package.
exact_match, prefix_match, earlier_match
    One-hot :class:`MatchKind` of the label giving ``best_strength`` (all 0 if none).
log1p_matching_stickers
    ``log1p`` of the number of the package's stickers carrying a matched label (a
    sticker carrying two matched labels counts twice; capped at the package size).
matching_share
    The same count divided by the package's number of stickers (0–1).
query_cosine
    Cosine between the package's stage-1 factor and the strength-weighted mean of the
    matched labels' unit embeddings, i.e. the strength-weighted mean of
    ``cos(package factor, label embedding)`` over matched labels (−1–1; 0 if no match).
"""

# Row k of this table is the one-hot exact/prefix/earlier encoding of MatchKind k.
_KIND_ONE_HOT = np.zeros((4, 3), np.float32)
_KIND_ONE_HOT[MatchKind.EXACT, 0] = 1.0
_KIND_ONE_HOT[MatchKind.PREFIX, 1] = 1.0
_KIND_ONE_HOT[MatchKind.EARLIER, 2] = 1.0


def _check_factors(package_ids: npt.ArrayLike, package_factors: npt.ArrayLike,
                   ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    ids = np.asarray(package_ids)
    factors = np.asarray(package_factors, dtype=np.float32)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise KeywordIndexError(
            f"package_ids should be a 1-d integer array, got shape {ids.shape} dtype {ids.dtype}")
    if factors.ndim != 2 or factors.shape[0] != ids.shape[0]:
        raise KeywordIndexError(
            f"package_factors should have shape (n_items={ids.shape[0]}, d), got "
            f"{factors.shape}")
    if len(np.unique(ids)) != len(ids):
        raise KeywordIndexError("package_ids should not repeat a package")
    return ids.astype(np.int32), factors


def _package_labels(stickers_df: pl.DataFrame) -> pl.DataFrame:
    missing = {"sticker_id", "package_id", "position", "label_ids"} - set(stickers_df.columns)
    if missing:
        raise KeywordIndexError(
            f"stickers frame is missing column(s) {sorted(missing)}; found {stickers_df.columns}")
    return stickers_df.select("package_id", "label_ids").explode("label_ids").drop_nulls()


def label_embeddings(package_ids: npt.ArrayLike, package_factors: npt.ArrayLike,
                     stickers_df: pl.DataFrame, n_labels: int) -> npt.NDArray[np.float32]:
    """Embed each label in the stage-1 space: the mean factor of packages carrying it.

    Parameters
    ----------
    package_ids : array of int, shape (n_items,)
        Package of each row of ``package_factors``.
    package_factors : array of float, shape (n_items, d)
        Stage-1 package factors.
    stickers_df : polars.DataFrame
        Schema ``stickers``; a package carries a label if any of its stickers does.
    n_labels : int
        Label ids are in ``[0, n_labels)``.

    Returns
    -------
    ndarray of float32, shape (n_labels, d)
        Mean factor of the (known) packages carrying each label; zeros for a label no
        known package carries.
    """
    ids, factors = _check_factors(package_ids, package_factors)
    if n_labels < 1:
        raise KeywordIndexError(f"n_labels={n_labels} should be >= 1")
    pairs = _package_labels(stickers_df).unique()
    package = pairs["package_id"].to_numpy()
    label = pairs["label_ids"].to_numpy()
    order = np.argsort(ids)
    at = np.searchsorted(ids, package, sorter=order)
    at = np.minimum(at, len(ids) - 1)
    row = order[at]
    keep = (ids[row] == package) & (label >= 0) & (label < n_labels)
    row, label = row[keep], label[keep]
    sums = np.zeros((n_labels, factors.shape[1]), np.float64)
    np.add.at(sums, label, factors[row])
    counts = np.bincount(label, minlength=n_labels)
    out = np.zeros_like(sums, dtype=np.float32)
    carried = counts > 0
    out[carried] = sums[carried] / counts[carried, None]
    return out


# Best-label search by one matrix product: the matched labels, strongest first, get
# weights 4**-rank; a candidate's weighted sum of "carries the label" then lies in
# [4**-r, 4**-r * 4/3) where r is the rank of its strongest carried label, so
# r = ceil(-log4(sum) - 0.1). Labels past _MAX_RANKED (never seen in practice) only count
# towards the sums, not as the best label.
_MAX_RANKED = 400
_RANK_WEIGHTS = 4.0 ** -np.arange(_MAX_RANKED + 1)
_NEG_INV_LOG4 = -1.0 / np.log(4.0)


@dataclass(frozen=True)
class _Block:
    """Tables of one candidate set (``n`` candidates), built once per set.

    Row ``n_labels`` of ``table`` and ``sticker`` is a sentinel "label" that every
    candidate carries, ranked after every matched label: it stands for "no match".
    """

    table: npt.NDArray[np.float64]  # (n_labels + 1, 3n): [carries | n stickers | cosine]
    sticker: npt.NDArray[np.int32]  # (n_labels + 1) * n: first sticker carrying the label
    size: npt.NDArray[np.float64]  # (n,): stickers per candidate (1 if unknown)
    offsets: npt.NDArray[np.intp]  # (n,): 0..n-1
    no_match: npt.NDArray[np.float32]  # (n, k) zeros
    first: npt.NDArray[np.int32]  # (n,): first sticker of each candidate (-1 if unknown)


class CandidateFeaturizer:
    """Turns a :class:`Match` into keyword features of candidate packages.

    Build once per stickers table and stage-1 artifact; per-candidate-set tables are
    built on first use and kept in a small LRU cache (a cluster's candidate list is the
    same on every keystroke).

    Parameters
    ----------
    stickers_df : polars.DataFrame
        Schema ``stickers`` (``sticker_id``, ``package_id``, ``position``, ``label_ids``).
    label_embeddings : array of float, shape (n_labels, d)
        From :func:`label_embeddings`.
    package_ids : array of int, shape (n_items,)
        Packages of the stage-1 artifact.
    package_factors : array of float, shape (n_items, d)
        Their stage-1 factors.
    cache_size : int
        Candidate sets whose tables are kept.
    """

    def __init__(self, stickers_df: pl.DataFrame, label_embeddings: npt.ArrayLike,
                 package_ids: npt.ArrayLike, package_factors: npt.ArrayLike, *,
                 cache_size: int = 16) -> None:
        ids, factors = _check_factors(package_ids, package_factors)
        embeddings = np.asarray(label_embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != factors.shape[1]:
            raise KeywordIndexError(
                f"label_embeddings should have shape (n_labels, d={factors.shape[1]}), got "
                f"{embeddings.shape}")
        if cache_size < 1:
            raise KeywordIndexError(f"cache_size={cache_size} should be >= 1")
        self.n_labels = int(embeddings.shape[0])
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self._unit_labels = embeddings / np.where(norms > 0, norms, 1.0)
        fnorms = np.linalg.norm(factors, axis=1, keepdims=True)
        self._unit_factors = dict(zip(ids.tolist(), factors / np.where(fnorms > 0, fnorms, 1.0),
                                      strict=True))
        self._d = int(factors.shape[1])
        self._stickers: dict[int, tuple[list[int], list[list[int]]]] = {}
        ordered = _package_labels_frame(stickers_df)
        for package_id, sticker_ids, label_lists in ordered.iter_rows():
            self._stickers[package_id] = (list(sticker_ids), [list(x) for x in label_lists])
        self._cache: OrderedDict[bytes, _Block] = OrderedDict()
        self._cache_size = cache_size

    @property
    def n_features(self) -> int:
        """``len(FEATURE_NAMES)``."""
        return len(FEATURE_NAMES)

    def _block(self, candidates: npt.NDArray[np.int32]) -> _Block:
        key = candidates.tobytes()
        block = self._cache.get(key)
        if block is not None:
            self._cache.move_to_end(key)
            return block
        block = self._build_block(candidates)
        self._cache[key] = block
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return block

    def _build_block(self, candidates: npt.NDArray[np.int32]) -> _Block:
        n = len(candidates)
        n_labels = self.n_labels
        counts = np.zeros((n_labels + 1, n), np.float64)
        sticker = np.full((n_labels + 1, n), -1, np.int32)
        size = np.ones(n, np.float64)
        unit = np.zeros((n, self._d), np.float32)
        for c, package_id in enumerate(candidates.tolist()):
            factor = self._unit_factors.get(package_id)
            if factor is not None:
                unit[c] = factor
            entry = self._stickers.get(package_id)
            if entry is None:
                continue
            sticker_ids, label_lists = entry
            size[c] = len(sticker_ids)
            sticker[:, c] = sticker_ids[0]
            for sticker_id, labels in reversed(list(zip(sticker_ids, label_lists, strict=True))):
                for label in labels:
                    if 0 <= label < n_labels:
                        counts[label, c] += 1.0
                        sticker[label, c] = sticker_id  # reversed: the first one wins
        table = np.zeros((n_labels + 1, 3 * n), np.float64)
        table[:, :n] = counts > 0
        table[n_labels, :n] = 1.0
        table[:, n:2 * n] = counts
        table[:n_labels, 2 * n:] = self._unit_labels @ unit.T
        return _Block(table, sticker.ravel(), size, np.arange(n),
                      np.zeros((n, len(FEATURE_NAMES)), np.float32), sticker[n_labels].copy())

    def features(self, match: Match, candidate_package_ids: npt.NDArray[np.int32],
                 ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Keyword features of each candidate and the sticker to show for it.

        Parameters
        ----------
        match : Match
            From :meth:`KeywordIndex.match` (label ids below ``n_labels``).
        candidate_package_ids : ndarray of int32, shape (n,)
            Candidate packages (unknown packages get zero features and sticker -1).

        Returns
        -------
        features : ndarray of float32, shape (n, len(FEATURE_NAMES))
            Columns as in :data:`FEATURE_NAMES`; all zeros when nothing matches.
        sticker_ids : ndarray of int32, shape (n,)
            Per candidate, the first sticker (by position) carrying its best-matching
            label, or its first sticker when none matches; -1 for an unknown package.
        """
        block = self._block(candidate_package_ids)
        m = match.label_ids.shape[0]
        if m == 0:
            return block.no_match.copy(), block.first.copy()
        n = block.size.shape[0]
        ranked = min(m, _MAX_RANKED)
        order = np.argsort(-match.strengths, kind="stable")
        labels = np.empty(m + 1, np.intp)
        labels[:m] = match.label_ids.take(order)
        labels[m] = self.n_labels  # the sentinel
        strengths = np.zeros(m + 1, np.float64)
        strengths[:m] = match.strengths.take(order)
        kinds = np.zeros(m + 1, np.intp)
        kinds[:m] = match.kinds.take(order)
        rows = block.table.take(labels, axis=0)  # (m + 1, 3n)
        weights = _RANK_WEIGHTS[:m + 1].copy()
        weights[ranked:m] = 0.0
        weights[m] = _RANK_WEIGHTS[ranked]
        rank = np.ceil(np.log(weights @ rows[:, :n]) * _NEG_INV_LOG4 - 0.1).astype(np.intp)
        np.minimum(rank, m, out=rank)
        out = np.empty_like(block.no_match)
        out[:, 0] = strengths.take(rank)
        out[:, 1:4] = _KIND_ONE_HOT.take(kinds.take(rank), axis=0)
        matching = np.minimum(rows[:m, n:2 * n].sum(axis=0), block.size)
        out[:, 4] = np.log1p(matching)
        out[:, 5] = matching / block.size
        out[:, 6] = strengths @ rows[:, 2 * n:] / strengths.sum()
        return out, block.sticker.take(labels.take(rank) * n + block.offsets)

    def rank_stickers(self, match: Match, package_id: int) -> npt.NDArray[np.int32]:
        """Sticker ids of one package, best match first (then by position).

        Not for the per-keystroke path of all candidates: serving calls it for the few
        packages it shows.
        """
        entry = self._stickers.get(int(package_id))
        if entry is None:
            return np.zeros(0, np.int32)
        sticker_ids, label_lists = entry
        strength = dict(zip(match.label_ids.tolist(), match.strengths.tolist(), strict=True))
        score = [max((strength.get(label, 0.0) for label in labels), default=0.0)
                 for labels in label_lists]
        order = sorted(range(len(sticker_ids)), key=lambda i: -score[i])
        return np.asarray([sticker_ids[i] for i in order], np.int32)


def _package_labels_frame(stickers_df: pl.DataFrame) -> pl.DataFrame:
    """One row per package: sticker ids and label lists in position order."""
    _package_labels(stickers_df)  # checks the columns
    return (
        stickers_df.sort("package_id", "position")
        .group_by("package_id", maintain_order=True)
        .agg(pl.col("sticker_id"), pl.col("label_ids"))
    )
