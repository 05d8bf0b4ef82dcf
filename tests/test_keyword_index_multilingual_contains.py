"""Regression: ``language in MultilingualIndex`` must answer, not raise (found by the reranker)."""

from __future__ import annotations

import data
from keyword_index import MultilingualIndex


def test_membership_of_unknown_language_is_false(catalog_excerpt: data.Catalog) -> None:
    index = MultilingualIndex.build(catalog_excerpt.keywords, languages=["en", "ja"])
    assert "en" in index and "ja" in index
    assert "xx" not in index
    assert sorted(index) == ["en", "ja"]
