"""Keyword-derived features of candidate packages for the reranker.

Per keystroke the reranker needs, for each of ~100 candidate packages, how well the
package's stickers fit what is being typed. :class:`CandidateFeaturizer` precomputes,
once per candidate set, a per-label table for those candidates (carries / matching
stickers / cosine) and per-candidate lookups (sticker to show, count features), so that
a keystroke costs one gather of the matched labels' rows, one small matrix product that
yields every candidate's best label (see ``_WEIGHTS``) and its sums, and a few gathers:
about 20 numpy calls on small arrays whatever the number of matched labels, no Python
loop, no reduction along a strided axis.
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


# Best-label search by one matrix product. The sentinel and the matched labels, weakest
# first (on a tie the later label first), take columns j = 0, 1, ..., m with weights
# 4**(j - 63); a candidate's weighted sum of "carries the label" then lies in
# [4**(j - 63), 4**(j - 63) * 4/3) where j is the column of its strongest carried label,
# so the float32 sum has biased exponent 2j + 1 (bias 127) and its bits >> 24 (23 mantissa
# bits) are j. Weights stay normal floats up to column 126; larger matches (rare) take an
# argmax over the carries instead.
_MAX_RANKED = 126
_EXPONENT_SHIFT = 24
# Per-keystroke matrix (6, m + 1), one column per rank; rows 0-2 multiply the gathered
# table rows, rows 2-5 are each label's [strength, exact, prefix, earlier].
_W_RANK, _W_ONE, _W_STRENGTH, _W_KINDS = 0, 1, 2, slice(3, 6)
_WEIGHTS = np.zeros((6, _MAX_RANKED + 1), np.float32)
_WEIGHTS[_W_RANK] = 4.0 ** (np.arange(_MAX_RANKED + 1) - 63)
_WEIGHTS[_W_ONE] = 1.0
# Column k is the one-hot exact/prefix/earlier encoding of MatchKind k.
_KIND_ONE_HOT_T = np.ascontiguousarray(_KIND_ONE_HOT.T)


@dataclass(frozen=True)
class _Block:
    """Tables of one candidate set (``n`` candidates), built once per set.

    Row ``n_labels`` of ``table`` is a sentinel "label" that every candidate carries, with
    no cosine; added to every match with strength 0 and ranked below every matched label,
    it is the best label of a candidate carrying none ("no match"). Its "n stickers" entry
    for candidate ``c`` is ``c * (max_count + 1)``, so that the summed counts are directly
    positions in ``count_features``.
    """

    table: npt.NDArray[np.float32]  # (n_labels + 1, 3n + 1): [carries | n stickers | cos | 1]
    sticker: npt.NDArray[np.int32]  # (n * (n_labels + 1),): first sticker of (label, c) at
    #                                 c * (n_labels + 1) + label; the candidate's first if none
    sticker_base: npt.NDArray[np.intp]  # (n,): c * (n_labels + 1)
    count_features: npt.NDArray[np.float32]  # (2, n * (max_count + 1)): at
    #   c * (max_count + 1) + k, log1p and share of min(k, stickers of c) matching stickers
    no_match: npt.NDArray[np.float32]  # (n, k) zeros
    first: npt.NDArray[np.int32]  # (n,): first sticker of each candidate (-1 if unknown)
    sentinel: npt.NDArray[np.int32]  # (1,): n_labels


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
        self._last: tuple[bytes, _Block] | None = None

    @property
    def n_features(self) -> int:
        """``len(FEATURE_NAMES)``."""
        return len(FEATURE_NAMES)

    def _block(self, candidates: npt.NDArray[np.int32]) -> _Block:
        key = candidates.tobytes()
        last = self._last
        if last is not None and last[0] == key:  # the same set as on the previous keystroke
            return last[1]
        block = self._cache.get(key)
        if block is not None:
            self._cache.move_to_end(key)
        else:
            block = self._build_block(candidates)
            self._cache[key] = block
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._last = (key, block)
        return block

    def _build_block(self, candidates: npt.NDArray[np.int32]) -> _Block:
        n = len(candidates)
        n_labels = self.n_labels
        counts = np.zeros((n_labels + 1, n), np.float32)
        sticker = np.full((n, n_labels + 1), -1, np.int32)
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
            sticker[c] = sticker_ids[0]
            for sticker_id, labels in reversed(list(zip(sticker_ids, label_lists, strict=True))):
                for label in labels:
                    if 0 <= label < n_labels:
                        counts[label, c] += 1.0
                        sticker[c, label] = sticker_id  # reversed: the first one wins
        # Counts are small integers: both count features come from one lookup per keystroke.
        max_count = int(counts.sum(axis=0).max(initial=0.0))
        matching = np.minimum(np.arange(max_count + 1.0)[None, :], size[:, None])  # (n, k+1)
        count_features = np.stack([np.log1p(matching).ravel(),
                                   (matching / size[:, None]).ravel()]).astype(np.float32)
        table = np.zeros((n_labels + 1, 3 * n + 1), np.float32)
        table[:, :n] = counts > 0
        table[n_labels, :n] = 1.0
        table[:, n:2 * n] = counts
        if n * (max_count + 1) >= 1 << 24:  # float32 sums of the counts would not be exact
            raise KeywordIndexError(
                f"{n} candidates with up to {max_count} matching stickers each is too many "
                f"(n * (max_count + 1) should be < {1 << 24})")
        table[n_labels, n:2 * n] = np.arange(n) * (max_count + 1)
        table[:n_labels, 2 * n:3 * n] = self._unit_labels @ unit.T
        table[:n_labels, 3 * n] = 1.0  # its strength-weighted sum is sum(strengths)
        return _Block(table, sticker.ravel(), np.arange(n) * (n_labels + 1),
                      count_features,
                      np.zeros((n, len(FEATURE_NAMES)), np.float32), sticker[:, n_labels].copy(),
                      np.full(1, n_labels, np.int32))

    def features(self, match: Match, candidate_package_ids: npt.NDArray[np.int32],
                 ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Keyword features of each candidate and the sticker to show for it.

        Parameters
        ----------
        match : Match
            From :meth:`KeywordIndex.match`: label ids below ``n_labels``, each once;
            strengths > 0.
        candidate_package_ids : ndarray of int32, shape (n,)
            Candidate packages (unknown packages get zero features and sticker -1).

        Returns
        -------
        features : ndarray of float32, shape (n, len(FEATURE_NAMES))
            Columns as in :data:`FEATURE_NAMES`; all zeros when nothing matches. The best
            label of a candidate is, among the matched labels it carries, the strongest;
            on a tie, the one that comes first in ``match``.
        sticker_ids : ndarray of int32, shape (n,)
            Per candidate, the first sticker (by position) carrying its best-matching
            label, or its first sticker when none matches; -1 for an unknown package.
        """
        block = self._block(candidate_package_ids)
        m = match.label_ids.shape[0]
        if m == 0:
            return block.no_match.copy(), block.first.copy()
        n = block.first.shape[0]
        # Weakest first; stable on the reversed strongest-first order, so that on a tie
        # the earlier label comes last (wins).
        order = (-match.strengths).argsort(kind="stable")[::-1]
        if m <= _MAX_RANKED:
            weights = _WEIGHTS[:, :m + 1].copy()
        else:
            weights = np.zeros((6, m + 1), np.float32)
            weights[_W_ONE] = 1.0
        match.strengths.take(order, out=weights[_W_STRENGTH, 1:])
        _KIND_ONE_HOT_T.take(match.kinds.take(order), axis=1, out=weights[_W_KINDS, 1:])
        labels = np.concatenate((block.sentinel, match.label_ids.take(order)))
        rows = block.table.take(labels, axis=0)  # (m + 1, 3n + 1)
        sums = np.dot(weights[:3], rows)  # (3, 3n + 1)
        if m <= _MAX_RANKED:
            best = sums[_W_RANK, :n].view(np.int32) >> _EXPONENT_SHIFT
        else:  # the last carried column (the sentinel's is carried by all)
            best = m - rows[::-1, :n].argmax(axis=0)
        out = np.empty((len(FEATURE_NAMES), n), np.float32)  # transposed: rows are columns
        weights[_W_STRENGTH:].take(best, axis=1, out=out[:4])
        # Exact sums of small integers, offset by the sentinel to candidate c's lookup.
        matching = sums[_W_ONE, n:2 * n].astype(np.intp)
        block.count_features.take(matching, axis=1, out=out[4:6])
        np.divide(sums[_W_STRENGTH, 2 * n:3 * n], sums[_W_STRENGTH, 3 * n], out=out[6])
        return out.T.copy(), block.sticker.take(labels.take(best) + block.sticker_base)

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
