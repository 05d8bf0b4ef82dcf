"""Keyword-derived features of candidate packages for the reranker.

Per keystroke the reranker needs, for each of ~100 candidate packages, how well the
package's stickers fit what is being typed. :class:`CandidateFeaturizer` precomputes,
once per candidate set, the candidates carrying each label (with their number of
stickers carrying it and the first one), a label × candidate cosine table and a
lookup of the count features, so that a keystroke is one call of a compiled kernel
(:func:`keyword_index._kernels.features_kernel`, numba; imported and compiled, or loaded
from numba's on-disk cache, when a featurizer is constructed) that walks the matched
labels once: ``m * n`` multiply-adds for the cosines plus one step per (matched label,
candidate carrying it), whatever the number of matched labels, with no numpy call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt
import polars as pl

from keyword_index._errors import KeywordIndexError
from keyword_index._index import Match, _readonly


def _kernels() -> ModuleType:
    """The compiled kernels, ready to call (imports numba on first use)."""
    from keyword_index import _kernels as kernels

    kernels.load()
    return kernels


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


@dataclass(frozen=True)
class _Block:
    """Tables of one candidate set (``n`` candidates), built once per set; ``ints`` and
    ``floats`` are laid out as described in :mod:`keyword_index._layout`."""

    ints: npt.NDArray[np.int32]  # (3 + n + n_labels + 1 + 3 * n_pairs,)
    floats: npt.NDArray[np.float32]  # (n_labels * n + 2 * n * (max_count + 1),)
    first: npt.NDArray[np.int32]  # (n,): first sticker of each candidate (-1 if unknown)
    no_match: npt.NDArray[np.float32]  # (n, k) zeros


class CandidateFeaturizer:
    """Turns a :class:`Match` into keyword features of candidate packages.

    Build once per stickers table and stage-1 artifact; per-candidate-set tables are
    built on first use and kept in a small LRU cache (a cluster's candidate list is the
    same on every keystroke; a set of ``n`` candidates takes about ``4 * n * n_labels``
    bytes). Construction imports numba and readies the per-keystroke kernel (compiled
    on a machine's first use, then loaded from numba's on-disk cache).

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
        self._kernel = _kernels().features_kernel

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
        counts = np.zeros((n_labels, n), np.int64)
        sticker = np.full((n_labels, n), -1, np.int32)
        first = np.full(n, -1, np.int32)
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
            first[c] = sticker_ids[0]
            for sticker_id, labels in reversed(list(zip(sticker_ids, label_lists, strict=True))):
                for label in labels:
                    if 0 <= label < n_labels:
                        counts[label, c] += 1
                        sticker[label, c] = sticker_id  # reversed: the first one wins
        # Counts are small integers: both count features come from one lookup per keystroke.
        max_count = int(counts.sum(axis=0).max(initial=0))
        matching = np.minimum(np.arange(max_count + 1.0)[None, :], size[:, None])  # (n, k+1)
        count_features = np.stack([np.log1p(matching).ravel(),
                                   (matching / size[:, None]).ravel()]).astype(np.float32)
        if n * (max_count + 1) * max(n_labels, 2) >= 1 << 31:
            raise KeywordIndexError(f"{n} candidates with up to {max_count} matching stickers "
                                    f"each and {n_labels} labels is too many")
        pair_label, pair_candidate = np.nonzero(counts)  # by label, then candidate
        offsets = np.zeros(n_labels + 1, np.int64)
        np.cumsum(np.bincount(pair_label, minlength=n_labels), out=offsets[1:])
        pairs = np.stack([pair_candidate, counts[pair_label, pair_candidate],
                          sticker[pair_label, pair_candidate]], axis=1)
        ints = np.concatenate([[n, n_labels, max_count + 1], first, offsets, pairs.ravel()])
        cosines = (self._unit_labels @ unit.T).astype(np.float32)  # (n_labels, n)
        floats = np.concatenate([cosines.ravel(), count_features.ravel()])
        return _Block(_readonly(ints.astype(np.int32)), _readonly(floats.astype(np.float32)),
                      first, np.zeros((n, len(FEATURE_NAMES)), np.float32))

    def features(self, match: Match, candidate_package_ids: npt.NDArray[np.int32],
                 out: tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]] | None = None,
                 ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Keyword features of each candidate and the sticker to show for it.

        Parameters
        ----------
        match : Match
            From :meth:`KeywordIndex.match`: label ids below ``n_labels``, each once;
            strengths > 0.
        candidate_package_ids : ndarray of int32, shape (n,)
            Candidate packages (unknown packages get zero features and sticker -1).
        out : (ndarray of float32, shape (n, len(FEATURE_NAMES)); ndarray of int32,
            shape (n,)), optional
            C-contiguous arrays to write the results into (and return) instead of new
            ones: e.g. the input buffer a scorer has bound.

        Returns
        -------
        features : ndarray of float32, shape (n, len(FEATURE_NAMES))
            Columns as in :data:`FEATURE_NAMES`; all zeros when nothing matches. The best
            label of a candidate is, among the matched labels it carries, the strongest;
            on a tie, the one that comes first in ``match``.
        sticker_ids : ndarray of int32, shape (n,)
            Per candidate, the first sticker (by position) carrying its best-matching
            label, or its first sticker when none matches; -1 for an unknown package.

        Raises
        ------
        KeywordIndexError
            If a matched label is outside ``[0, n_labels)``, or ``out`` has the wrong
            shape, type or layout.
        """
        block = self._block(candidate_package_ids)
        n = block.first.shape[0]
        if out is None:
            if match.label_ids.shape[0] == 0:
                return block.no_match.copy(), block.first.copy()
            out = (np.empty((n, len(FEATURE_NAMES)), np.float32), np.empty(n, np.int32))
        else:
            # the kernel writes rows 0..n-1 unchecked: the buffers must be exactly these
            feats, stickers = out
            if (feats.shape != block.no_match.shape or stickers.shape != block.first.shape
                    or feats.dtype != np.float32 or stickers.dtype != np.int32
                    or not (feats.flags.c_contiguous and stickers.flags.c_contiguous)):
                raise KeywordIndexError(
                    f"out should be C-contiguous float32 {block.no_match.shape} and int32 "
                    f"{block.first.shape}, got {feats.dtype} {feats.shape} and "
                    f"{stickers.dtype} {stickers.shape}")
            if match.label_ids.shape[0] == 0:
                feats[...] = 0.0
                stickers[...] = block.first
                return out
        bad = self._kernel(match.label_ids, match.strengths, match.kinds, block.ints,
                           block.floats, out[0], out[1])
        if bad >= 0:
            raise KeywordIndexError(
                f"matched label {int(match.label_ids[bad])} is outside [0, {self.n_labels})")
        return out

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
