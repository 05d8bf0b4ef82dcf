"""Real CLDR keywords typed character by character in ja, zh-Hant, th, en, ko (issue #4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import data
from keyword_index import MatchKind, MultilingualIndex

FIXTURE = Path(__file__).parent / "fixtures" / "keyword_index" / "cldr_excerpt.json"


@pytest.fixture(scope="module")
def excerpt() -> tuple[MultilingualIndex, dict[str, int]]:
    raw = json.loads(FIXTURE.read_text())
    keywords = pl.DataFrame(raw["keywords"], orient="row", schema={
        "label_id": pl.Int32, "language": pl.String, "keyword": pl.String, "kind": pl.String})
    return MultilingualIndex.build(keywords), {slug: i for i, slug, _ in raw["labels"]}


# (language, typed text, label expected to match the whole text exactly at the end)
TYPED = [
    ("ja", "ありがとう", "folded_hands"),
    ("ja", "アリガトウ〜!!", "folded_hands"),
    ("ja", "今日はありがとう", "folded_hands"),
    ("ja", "お願い", "folded_hands"),
    ("ja", "ごめんなさい", "folded_hands"),
    ("zh-hant", "讚", "thumbs_up"),
    ("zh-hant", "赞", "thumbs_up"),
    ("zh-hant", "好棒", "thumbs_up"),
    ("zh-hant", "我喜歡", "thumbs_up"),
    ("th", "555", "face_with_tears_of_joy"),
    ("th", "55555", "face_with_tears_of_joy"),
    ("th", "ขำ", "face_with_tears_of_joy"),
    ("th", "วันนี้ตลก", "face_with_tears_of_joy"),
    ("en", "thaaanks!!", "folded_hands"),
    ("en", "hey thumbs up", "thumbs_up"),
    ("en", "Thumbsup", "thumbs_up"),
    ("ko", "잘자", "sleeping_face"),
    ("ko", "오늘 낮잠", "sleeping_face"),
    ("ko", "엄지 척", "thumbs_up"),
]


@pytest.mark.parametrize(("language", "text", "label"), TYPED)
def test_typed_char_by_char(excerpt: tuple[MultilingualIndex, dict[str, int]], language: str,
                            text: str, label: str) -> None:
    index, labels = excerpt
    target = labels[label]
    seen: list[float] = []
    for end in range(1, len(text) + 1):
        match = index[language].match(text[:end])
        assert match.strengths.dtype == np.float32 and match.label_ids.dtype == np.int32
        assert len(set(match.label_ids.tolist())) == len(match)
        assert ((match.strengths > 0) & (match.strengths <= 1)).all()
        seen.append(match.as_dict().get(target, (0.0, MatchKind.EARLIER))[0])
    assert seen[-1] == 1.0
    assert index[language].match(text).as_dict()[target][1] is MatchKind.EXACT
    assert max(seen[:-1], default=0.0) <= 1.0


@pytest.mark.parametrize(("language", "keyword", "label"), [
    # Not English: a label's strength is its best keyword's, and "th" is 2/3 of "thx" but
    # "tha" only 1/2 of "thanks"; "thumb" is a keyword, so "thumbs" drops to a prefix.
    ("ja", "ありがとう", "folded_hands"),
    ("th", "ตลก", "face_with_tears_of_joy"), ("ko", "엄지척", "thumbs_up"),
    ("zh-hant", "我喜歡", "thumbs_up"),
])
def test_strength_grows_while_a_keyword_is_typed(
        excerpt: tuple[MultilingualIndex, dict[str, int]], language: str, keyword: str,
        label: str) -> None:
    index, labels = excerpt
    strengths = [index[language].match(keyword[:end]).as_dict().get(labels[label], (0.0,))[0]
                 for end in range(1, len(keyword) + 1)]
    matched = [s for s in strengths if s > 0]
    assert matched == sorted(matched)
    assert matched[-1] == 1.0
    assert len(matched) >= len(keyword) - 1  # from the 2nd character (1st for CJK) on


@pytest.mark.slow
def test_full_catalog_every_keyword_exact() -> None:
    try:
        catalog = data.load_catalog(data.ensure_catalog(data.var_root()))
    except data.CatalogError as exc:  # no npm and no cached catalog
        pytest.skip(str(exc))
    index = MultilingualIndex.build(catalog.keywords)
    assert set(index) == set(catalog.languages)
    indexed = {language: set(ix.keywords) for language, ix in index.items()}
    checked = 0
    for label_id, language, keyword in catalog.keywords.select(
            "label_id", "language", "keyword").iter_rows():
        ix = index[language]
        if ix.normalize(keyword) not in indexed[language]:  # symbols only, or one letter
            continue
        assert ix.match(keyword).as_dict()[label_id] == (1.0, MatchKind.EXACT), (language, keyword)
        checked += 1
    assert checked > 0.9 * catalog.keywords.height
    for language, ix in index.items():
        assert len(ix.to_bytes()) < 100_000, language
