"""Keyword-derived candidate features: a tiny hand-computed world (issue #4)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

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
