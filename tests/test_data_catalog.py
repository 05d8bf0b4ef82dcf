"""The CLDR label/keyword catalog: coverage, provenance, and the committed excerpt."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import data
from data.catalog import CATALOG_SHA256, CATALOG_VERSION, catalog_from_tarball


def test_catalog_covers_five_languages_and_300_labels(catalog: data.Catalog) -> None:
    assert catalog.labels.height >= 300
    for language in ("en", "ja", "zh-hant", "th", "ko"):
        kw = catalog.keywords.filter(pl.col("language") == language)
        assert kw["label_id"].n_unique() >= 300, language
    assert catalog.source["package"] == "emojibase-data"
    assert catalog.source["version"] == CATALOG_VERSION
    assert catalog.source["sha256"] == CATALOG_SHA256


def test_known_cldr_keywords_are_present(catalog: data.Catalog) -> None:
    def keywords(label: str, language: str) -> set[str]:
        label_id = catalog.labels.filter(pl.col("label") == label)["label_id"].item()
        return set(catalog.keywords.filter(
            (pl.col("label_id") == label_id) & (pl.col("language") == language))["keyword"])

    assert {"thanks", "please"} <= keywords("folded_hands", "en")
    assert "ありがとう" in keywords("folded_hands", "ja")
    assert "謝謝" in keywords("folded_hands", "zh-hant")
    assert "ขอบคุณ" in keywords("folded_hands", "th")
    assert "고마워" in keywords("folded_hands", "ko")
    assert "おやすみ" in keywords("sleeping_face", "ja")
    assert "555" in keywords("face_with_tears_of_joy", "th")


def test_generic_keywords_are_dropped(catalog: data.Catalog) -> None:
    # "face" is a CLDR keyword of ~100 face emoji: it says nothing about which fits.
    en = catalog.keywords.filter(pl.col("language") == "en")
    assert "face" not in set(en["keyword"])
    per_keyword = en.group_by(pl.col("keyword").str.to_lowercase()).agg(
        pl.col("label_id").n_unique().alias("n"))
    assert per_keyword["n"].max() <= catalog.source["max_labels_per_keyword"]


def test_excerpt_matches_the_real_catalog(catalog: data.Catalog,
                                          catalog_excerpt: data.Catalog) -> None:
    joined = catalog_excerpt.keywords.join(
        catalog.keywords, on=["label_id", "language", "keyword"], how="anti")
    assert joined.height == 0
    assert catalog_excerpt.source["version"] == catalog.source["version"]


def test_bad_parameters_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(data.CatalogError, match="max_labels_per_keyword=0 should be >= 1"):
        catalog_from_tarball(tmp_path / "x.tgz", max_labels_per_keyword=0)
