"""Keyword-derived candidate features: a tiny hand-computed world (issue #4)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyword_index import (
    FEATURE_NAMES,
    CandidateFeaturizer,
    KeywordIndexError,
    Match,
    MatchKind,
    label_embeddings,
)

# package 10: stickers 100 [0], 101 [1, 2], 102 [1]; package 20: 200 [3], 201 [3]
STICKERS = pl.DataFrame(
    {"sticker_id": [100, 101, 102, 200, 201], "package_id": [10, 10, 10, 20, 20],
     "position": [0, 1, 2, 0, 1], "label_ids": [[0], [1, 2], [1], [3], [3]]},
    schema={"sticker_id": pl.Int32, "package_id": pl.Int32, "position": pl.Int16,
            "label_ids": pl.List(pl.Int32)})
PACKAGE_IDS = np.array([10, 20], np.int32)
FACTORS = np.array([[2.0, 0.0], [0.0, 3.0]], np.float32)
CANDIDATES = np.array([10, 20, 99], np.int32)


def _match(labels: list[int], strengths: list[float], kinds: list[MatchKind]) -> Match:
    return Match("", np.array(labels, np.int32), np.array(strengths, np.float32),
                 np.array(kinds, np.int8))


@pytest.fixture
def featurizer() -> CandidateFeaturizer:
    embeddings = label_embeddings(PACKAGE_IDS, FACTORS, STICKERS, n_labels=5)
    return CandidateFeaturizer(STICKERS, embeddings, PACKAGE_IDS, FACTORS)


def test_label_embeddings_are_mean_factors_of_carrying_packages() -> None:
    stickers = pl.concat([STICKERS, pl.DataFrame(
        {"sticker_id": [300], "package_id": [30], "position": [0], "label_ids": [[3]]},
        schema=STICKERS.schema)])  # package 30 has no factor: ignored
    both = label_embeddings(np.array([10, 20], np.int32), FACTORS, pl.concat(
        [stickers, pl.DataFrame({"sticker_id": [202], "package_id": [20], "position": [2],
                                 "label_ids": [[1]]}, schema=STICKERS.schema)]), n_labels=5)
    assert both.dtype == np.float32 and both.shape == (5, 2)
    np.testing.assert_allclose(both[0], [2.0, 0.0])
    np.testing.assert_allclose(both[1], [1.0, 1.5])  # carried by both packages
    np.testing.assert_allclose(both[3], [0.0, 3.0])
    np.testing.assert_allclose(both[4], [0.0, 0.0])  # carried by nobody


def test_features_hand_computed(featurizer: CandidateFeaturizer) -> None:
    match = _match([1, 3], [0.6, 1.0], [MatchKind.PREFIX, MatchKind.EXACT])
    features, stickers = featurizer.features(match, CANDIDATES)
    assert features.dtype == np.float32 and features.shape == (3, len(FEATURE_NAMES))
    assert stickers.dtype == np.int32
    # package 10: best label 1 (0.6, prefix) on stickers 101 and 102 of 3;
    # cosine = (0.6 * cos(e1, f10) + 1.0 * cos(e3, f10)) / 1.6 = 0.6 / 1.6
    np.testing.assert_allclose(
        features[0], [0.6, 0, 1, 0, math.log1p(2), 2 / 3, 0.375], rtol=1e-6)
    # package 20: label 3 exact on both stickers; cosine = 1.0 / 1.6
    np.testing.assert_allclose(
        features[1], [1.0, 1, 0, 0, math.log1p(2), 1.0, 0.625], rtol=1e-6)
    np.testing.assert_allclose(features[2], np.zeros(len(FEATURE_NAMES)))  # unknown package
    assert stickers.tolist() == [101, 200, -1]


def test_no_match_gives_zeros_and_first_stickers(featurizer: CandidateFeaturizer) -> None:
    features, stickers = featurizer.features(_match([], [], []), CANDIDATES)
    assert not features.any()
    assert stickers.tolist() == [100, 200, -1]


def test_label_carried_by_no_candidate(featurizer: CandidateFeaturizer) -> None:
    features, stickers = featurizer.features(_match([4], [1.0], [MatchKind.EXACT]), CANDIDATES)
    assert not features[:, :6].any()
    assert stickers.tolist() == [100, 200, -1]


def test_earlier_kind_and_shared_sticker(featurizer: CandidateFeaturizer) -> None:
    match = _match([2, 1], [0.5, 0.4], [MatchKind.EARLIER, MatchKind.PREFIX])
    features, stickers = featurizer.features(match, CANDIDATES[:1])
    # sticker 101 carries both labels: counted once per label (2 + 1 = 3 pairs, capped at 3)
    np.testing.assert_allclose(features[0, :6], [0.5, 0, 0, 1, math.log1p(3), 1.0], rtol=1e-6)
    assert stickers.tolist() == [101]


def test_rank_stickers(featurizer: CandidateFeaturizer) -> None:
    match = _match([1], [0.7], [MatchKind.PREFIX])
    assert featurizer.rank_stickers(match, 10).tolist() == [101, 102, 100]
    assert featurizer.rank_stickers(match, 99).tolist() == []


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(KeywordIndexError, match="package_factors should have shape"):
        label_embeddings(PACKAGE_IDS, FACTORS[:1], STICKERS, 5)
    with pytest.raises(KeywordIndexError, match="should not repeat"):
        label_embeddings(np.array([10, 10], np.int32), FACTORS, STICKERS, 5)
    with pytest.raises(KeywordIndexError, match="label_embeddings should have shape"):
        CandidateFeaturizer(STICKERS, np.zeros((5, 3), np.float32), PACKAGE_IDS, FACTORS)


# -- the fast path against a straightforward reference ------------------------------------

# Few distinct strengths, so that ties between labels (first in match order wins) are common.
_STRENGTHS = [1.0, 0.66, 0.5, 0.3, 0.01]


def _reference_features(stickers: pl.DataFrame, embeddings: np.ndarray, package_ids: np.ndarray,
                        factors: np.ndarray, match: Match, candidates: np.ndarray,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """FEATURE_NAMES computed candidate by candidate, label by label, in float64."""
    factor_of = dict(zip(package_ids.tolist(), factors.astype(np.float64), strict=True))
    unit_labels = embeddings.astype(np.float64)
    norms = np.linalg.norm(unit_labels, axis=1, keepdims=True)
    unit_labels = unit_labels / np.where(norms > 0, norms, 1.0)
    matched = list(zip(match.label_ids.tolist(), match.strengths.tolist(),
                       match.kinds.tolist(), strict=True))
    features = np.zeros((len(candidates), len(FEATURE_NAMES)), np.float32)
    sticker_ids = np.full(len(candidates), -1, np.int32)
    for c, package_id in enumerate(candidates.tolist()):
        rows = stickers.filter(pl.col("package_id") == package_id).sort("position")
        if rows.height == 0:
            continue
        label_lists = [set(ls) for ls in rows["label_ids"].to_list()]
        sticker_ids[c] = rows["sticker_id"][0]
        best: tuple[int, float, int] | None = None
        for label, strength, kind in matched:
            carried = any(label in ls for ls in label_lists)
            if carried and (best is None or strength > best[1]):
                best = (label, strength, kind)
        if best is not None:
            label, strength, kind = best
            features[c, 0] = strength
            features[c, kind] = 1.0  # columns 1-3 are MatchKind 1-3
            sticker_ids[c] = next(s for s, ls in zip(rows["sticker_id"], label_lists,
                                                     strict=True) if label in ls)
        count = min(sum(label in ls for label, _, _ in matched for ls in label_lists),
                    rows.height)
        features[c, 4] = math.log1p(count)
        features[c, 5] = count / rows.height
        factor = factor_of.get(package_id)
        if factor is not None and matched:
            unit = factor / (np.linalg.norm(factor) or 1.0)
            features[c, 6] = sum(s * float(unit_labels[label] @ unit)
                                 for label, s, _ in matched) / sum(s for _, s, _ in matched)
    return features, sticker_ids


@st.composite
def _world_and_match(draw: st.DrawFn, long_match: bool = False,
                     ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, Match, np.ndarray, int]:
    n_labels = draw(st.integers(130, 300) if long_match else st.integers(1, 8))
    rows: list[tuple[int, int, int, list[int]]] = []  # sticker_id, package_id, position, labels
    for package_id in range(draw(st.integers(1, 5))):
        for position in range(draw(st.integers(1, 6))):
            labels = draw(st.lists(st.integers(0, n_labels - 1), min_size=1, max_size=3,
                                   unique=True))
            rows.append((len(rows), package_id, position, labels))
    stickers = pl.DataFrame(rows, orient="row", schema=STICKERS.schema)
    package_ids = np.unique(stickers["package_id"].to_numpy()).astype(np.int32)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    factors = rng.standard_normal((len(package_ids), 3)).astype(np.float32)
    if long_match:  # more labels than the one-product search ranks (126)
        labels = rng.permutation(n_labels)[:draw(st.integers(127, n_labels))].tolist()
        strengths = rng.choice(_STRENGTHS, len(labels)).tolist()
        kinds = rng.choice(list(MatchKind), len(labels)).tolist()
    else:
        labels = draw(st.lists(st.integers(0, n_labels - 1), unique=True, max_size=n_labels))
        strengths = [draw(st.sampled_from(_STRENGTHS)) for _ in labels]
        kinds = [draw(st.sampled_from(list(MatchKind))) for _ in labels]
    match = Match("", np.array(labels, np.int32), np.array(strengths, np.float32),
                  np.array(kinds, np.int8))
    # Candidates in any order, possibly an unknown package (99).
    candidates = np.array(draw(st.permutations([*package_ids.tolist(), 99]))[
        :draw(st.integers(1, len(package_ids) + 1))], np.int32)
    return stickers, package_ids, factors, match, candidates, n_labels


def _check_against_reference(stickers: pl.DataFrame, package_ids: np.ndarray,
                             factors: np.ndarray, match: Match, candidates: np.ndarray,
                             n_labels: int) -> None:
    embeddings = label_embeddings(package_ids, factors, stickers, n_labels)
    featurizer = CandidateFeaturizer(stickers, embeddings, package_ids, factors)
    features, sticker_ids = featurizer.features(match, candidates)
    expected, expected_ids = _reference_features(stickers, embeddings, package_ids, factors,
                                                  match, candidates)
    assert features.dtype == np.float32 and features.flags.c_contiguous
    assert sticker_ids.dtype == np.int32
    assert sticker_ids.tolist() == expected_ids.tolist()
    # Exactly equal but for the cosine (a float32 matrix product vs float64 sums).
    np.testing.assert_array_equal(features[:, :6], expected[:, :6])
    np.testing.assert_allclose(features[:, 6], expected[:, 6], rtol=1e-5, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(_world_and_match())
def test_features_equal_reference(case: tuple[pl.DataFrame, np.ndarray, np.ndarray, Match,
                                              np.ndarray, int]) -> None:
    _check_against_reference(*case)


@settings(max_examples=10, deadline=None)
@given(_world_and_match(long_match=True))
def test_features_equal_reference_for_long_matches(
        case: tuple[pl.DataFrame, np.ndarray, np.ndarray, Match, np.ndarray, int]) -> None:
    _check_against_reference(*case)


def test_features_repeated_on_the_same_candidate_set(featurizer: CandidateFeaturizer) -> None:
    match = _match([3], [1.0], [MatchKind.EXACT])
    first, _ = featurizer.features(match, CANDIDATES)
    first[:] = -1.0  # the caller owns the returned arrays
    again, stickers = featurizer.features(match, CANDIDATES.copy())
    assert again[1, 0] == 1.0 and stickers.tolist() == [100, 200, -1]
    other, _ = featurizer.features(match, CANDIDATES[::-1].copy())
    np.testing.assert_array_equal(other[::-1], again)


@st.composite
def _larger_world(draw: st.DrawFn) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, int,
                                            list[tuple[Match, np.ndarray]]]:
    """Tens of packages sharing labels, and a sequence of (match, candidate set) calls on
    one featurizer: two candidate sets take turns, as clusters do between keystrokes."""
    n_labels = draw(st.integers(5, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows: list[tuple[int, int, int, list[int]]] = []  # sticker_id, package_id, position, labels
    for package_id in range(draw(st.integers(2, 30))):
        for position in range(int(rng.integers(1, 12))):
            labels = rng.choice(n_labels, int(rng.integers(1, 4)), replace=False).tolist()
            rows.append((len(rows), package_id, position, labels))
    stickers = pl.DataFrame(rows, orient="row", schema=STICKERS.schema)
    package_ids = np.unique(stickers["package_id"].to_numpy()).astype(np.int32)
    factors = rng.standard_normal((len(package_ids), 4)).astype(np.float32)
    pool = [*package_ids.tolist(), 990, 991]  # two unknown packages
    sets = [np.array(rng.permutation(pool)[:int(rng.integers(1, len(pool) + 1))], np.int32)
            for _ in range(2)]
    calls = []
    for i in range(draw(st.integers(1, 6))):
        m = int(rng.integers(0, n_labels + 1))
        labels = rng.permutation(n_labels)[:m]
        match = Match("", labels.astype(np.int32),
                      rng.choice(_STRENGTHS, m).astype(np.float32),
                      rng.choice(list(MatchKind), m).astype(np.int8))
        calls.append((match, sets[i % 2]))
    return stickers, package_ids, factors, n_labels, calls


@settings(max_examples=60, deadline=None)
@given(_larger_world())
def test_features_equal_reference_on_larger_worlds_and_repeated_calls(
        case: tuple[pl.DataFrame, np.ndarray, np.ndarray, int,
                    list[tuple[Match, np.ndarray]]]) -> None:
    stickers, package_ids, factors, n_labels, calls = case
    embeddings = label_embeddings(package_ids, factors, stickers, n_labels)
    featurizer = CandidateFeaturizer(stickers, embeddings, package_ids, factors, cache_size=1)
    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # reused per set, as a scorer's
    for match, candidates in calls:
        features, sticker_ids = featurizer.features(match, candidates)
        n = len(candidates)
        out = buffers.setdefault(n, (np.full((n, len(FEATURE_NAMES)), np.nan, np.float32),
                                     np.full(n, -7, np.int32)))
        written = featurizer.features(match, candidates, out=out)
        assert written[0] is out[0] and written[1] is out[1]  # nothing stale survives
        np.testing.assert_array_equal(out[0], features)
        np.testing.assert_array_equal(out[1], sticker_ids)
        expected, expected_ids = _reference_features(stickers, embeddings, package_ids,
                                                      factors, match, candidates)
        assert features.shape == (len(candidates), len(FEATURE_NAMES))
        assert sticker_ids.tolist() == expected_ids.tolist()
        np.testing.assert_array_equal(features[:, :6], expected[:, :6])
        np.testing.assert_allclose(features[:, 6], expected[:, 6], rtol=1e-5, atol=1e-6)


def test_output_buffers_of_the_wrong_shape_or_type_are_refused(
        featurizer: CandidateFeaturizer) -> None:
    match = _match([3], [1.0], [MatchKind.EXACT])
    n, k = len(CANDIDATES), len(FEATURE_NAMES)
    good = (np.zeros((n, k), np.float32), np.zeros(n, np.int32))
    # typed as any ndarray: wrong dtypes are the point, and features checks them at run time
    bads: list[tuple[np.ndarray, np.ndarray]] = [
        (np.zeros((n - 1, k), np.float32), good[1]),  # would be written past its end
        (good[0], np.zeros(n + 1, np.int32)),
        (np.zeros((n, k), np.float64), good[1]),
        (good[0], np.zeros(n, np.int64)),
        (np.zeros((k, n), np.float32).T, good[1])]  # right shape, not C-contiguous
    for bad in bads:
        with pytest.raises(KeywordIndexError, match="out should be C-contiguous"):
            featurizer.features(match, CANDIDATES, out=bad)
    assert featurizer.features(match, CANDIDATES, out=good)[1].tolist() == [100, 200, -1]


def test_matched_label_out_of_range_is_refused(featurizer: CandidateFeaturizer) -> None:
    for label in (5, -1):
        with pytest.raises(KeywordIndexError, match="outside"):
            featurizer.features(_match([1, label], [0.5, 0.5], [MatchKind.PREFIX] * 2),
                                CANDIDATES)
