"""Keyword index: normalisation, strengths, property tests, serialised form (issue #4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jaconv
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyword_index import (
    KeywordIndex,
    KeywordIndexConfig,
    KeywordIndexError,
    KeywordIndexFormatError,
    MatchKind,
    MultilingualIndex,
    Normalizer,
    normalize,
)

FIXTURE = Path(__file__).parent / "fixtures" / "keyword_index" / "cldr_excerpt.json"
LANGUAGES = ("en", "ja", "zh-hant", "th", "ko")
CJK = ("ja", "ko", "zh-hant")
# Letters that occur in no keyword of the excerpt (checked below): "unrelated" text.
UNRELATED = "бвгджзклмнпрстфхцчшщ"


def _excerpt() -> tuple[pl.DataFrame, dict[str, int]]:
    raw = json.loads(FIXTURE.read_text())
    keywords = pl.DataFrame(raw["keywords"], orient="row", schema={
        "label_id": pl.Int32, "language": pl.String, "keyword": pl.String, "kind": pl.String})
    return keywords, {slug: label_id for label_id, slug, _ in raw["labels"]}


KEYWORDS, LABELS = _excerpt()
INDEX = MultilingualIndex.build(KEYWORDS)
CONFIG = KeywordIndexConfig()


def _indexable(language: str, keyword: str) -> bool:
    norm = normalize(keyword, language)
    return bool(norm) and (language in CJK or not (len(norm) < 2 and norm.isalpha()))


ROWS = [(label_id, language, keyword)
        for label_id, language, keyword in KEYWORDS.select("label_id", "language", "keyword")
        .iter_rows() if _indexable(language, keyword)]


def test_unrelated_alphabet_is_unused() -> None:
    used = set("".join(k for ix in INDEX.values() for k in ix.keywords))
    assert not used & set(UNRELATED)


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("アリガトウ〜!!", "ja", "ありがとう"),
    ("ｱﾘｶﾞﾄｳ", "ja", "ありがとう"),
    ("ありがとう", "ja", "ありがとう"),
    ("Thaaanks!", "en", "thanks"),
    ("ＴＨＵＭＢＳ　ＵＰ", "en", "thumbsup"),
    ("thumbs-up 👍", "en", "thumbsup"),
    ("adiós", "es", "adios"),
    ("讚", "zh-hant", "赞"),
    ("我喜歡", "zh-hant", "我喜欢"),
    ("55555", "th", "5"),
    ("555", "th", "5"),
    ("엄지 척", "ko", "엄지척"),
    ("잘자~", "ko", "잘자"),
    ("zzz", "en", "z"),
    ("", "en", ""),
    ("!!! ~", "ja", ""),
])
def test_normalize_examples(text: str, language: str, expected: str) -> None:
    assert normalize(text, language) == expected


def test_config_rejects_strengths_that_reach_one() -> None:
    with pytest.raises(ValueError, match="prefix_base \\+ prefix_gain"):
        KeywordIndexConfig(prefix_base=0.5, prefix_gain=0.5)
    with pytest.raises(ValueError, match="earlier_floor"):
        KeywordIndexConfig(earlier_peak=0.1, earlier_floor=0.2)


def test_config_round_trips_json() -> None:
    config = KeywordIndexConfig(earlier_tau=4.0, word_boundary_languages=("en",))
    assert KeywordIndexConfig.model_validate_json(config.model_dump_json()) == config


def test_strengths_hand_computed() -> None:
    ja = INDEX["ja"]
    thanks = LABELS["folded_hands"]
    assert ja.match("ありがとう").as_dict()[thanks] == (1.0, MatchKind.EXACT)
    # 3 of 5 characters typed: 0.3 + 0.6 * 3 / 5
    strength, kind = ja.match("ありが").as_dict()[thanks]
    assert kind is MatchKind.PREFIX
    assert strength == pytest.approx(0.66, abs=1e-6)
    # ended 2 characters before the end: 0.8 * exp(-2 / 8)
    strength, kind = ja.match("ありがとうдж").as_dict()[thanks]
    assert kind is MatchKind.EARLIER
    assert strength == pytest.approx(0.8 * math.exp(-0.25), abs=1e-6)
    # far away: the floor, never 0
    strength, kind = ja.match("ありがとう" + UNRELATED * 10).as_dict()[thanks]
    assert strength == pytest.approx(CONFIG.earlier_floor, abs=1e-7)


def test_word_inside_a_longer_match_is_ignored() -> None:
    ja = INDEX["ja"]
    assert LABELS["ant"] not in ja.match("ありが").as_dict()  # あり inside ありが…
    assert ja.match("あり").as_dict()[LABELS["ant"]] == (1.0, MatchKind.EXACT)
    en = INDEX["en"]
    assert LABELS["thumbs_down"] not in en.match("thumbs up").as_dict()


def test_english_keywords_start_at_word_starts() -> None:
    en = INDEX["en"]
    assert LABELS["fire"] in en.match("fire").as_dict()
    assert LABELS["fire"] not in en.match("campfire").as_dict()
    assert en.match("so hot fire").as_dict()[LABELS["fire"]][1] is MatchKind.EXACT


def test_every_keyword_matches_its_label_exactly() -> None:
    for label_id, language, keyword in ROWS:
        assert INDEX[language].match(keyword).as_dict()[label_id] == (1.0, MatchKind.EXACT), (
            language, keyword)


def test_every_prefix_matches_as_prefix() -> None:
    for label_id, language, keyword in ROWS:
        full = normalize(keyword, language)
        minimum = CONFIG.min_prefix(language)
        for end in range(1, len(keyword)):
            typed = normalize(keyword[:end], language)
            if not (minimum <= len(typed) < len(full)) or not full.startswith(typed):
                continue
            strength, _ = INDEX[language].match(keyword[:end]).as_dict()[label_id]
            share = len(typed) / len(full)
            assert strength >= CONFIG.prefix_base + CONFIG.prefix_gain * share - 1e-6


def _variant(draw: st.DrawFn, keyword: str) -> str:
    choice = draw(st.sampled_from(["katakana", "half", "upper", "title", "full", "repeat",
                                   "punct", "none"]))
    if choice == "katakana":
        keyword = jaconv.hira2kata(keyword)
    elif choice == "half":
        keyword = jaconv.z2h(jaconv.hira2kata(keyword), kana=True, ascii=True, digit=True)
    elif choice == "upper":
        keyword = keyword.upper()
    elif choice == "title":
        keyword = keyword.title()
    elif choice == "full":
        keyword = jaconv.h2z(keyword, kana=True, ascii=True, digit=True)
    elif choice == "repeat" and keyword:
        i = draw(st.integers(0, len(keyword) - 1))
        keyword = keyword[:i + 1] + keyword[i] * draw(st.integers(1, 4)) + keyword[i + 1:]
    return keyword + draw(st.sampled_from(["", "!!", "〜", "~", "！", "…", " "]))


@st.composite
def _keyword_and_variant(draw: st.DrawFn) -> tuple[str, str, str]:
    _, language, keyword = draw(st.sampled_from(ROWS))
    return language, keyword, _variant(draw, keyword)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_keyword_and_variant())
def test_variants_match_identically(case: tuple[str, str, str]) -> None:
    language, keyword, variant = case
    assert INDEX[language].match(variant).as_dict() == INDEX[language].match(keyword).as_dict()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ROWS), st.text(alphabet=UNRELATED, min_size=1, max_size=40))
def test_unrelated_suffix_lowers_but_keeps_strength(row: tuple[int, str, str], tail: str) -> None:
    label_id, language, keyword = row
    strength, kind = INDEX[language].match(keyword + tail).as_dict()[label_id]
    assert kind is MatchKind.EARLIER
    assert 0.0 < strength < 1.0
    d = len(normalize(tail, language))
    expected = max(CONFIG.earlier_peak * math.exp(-d / CONFIG.earlier_tau), CONFIG.earlier_floor)
    assert strength == pytest.approx(expected, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LANGUAGES), st.text(alphabet=UNRELATED + " !?", max_size=40))
def test_random_text_matches_nothing(language: str, text: str) -> None:
    assert len(INDEX[language].match(text)) == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=5, max_size=20))
def test_random_english_words_are_not_exact_matches(word: str) -> None:
    kinds = INDEX["en"].match(word).kinds
    assert not (kinds == MatchKind.EXACT).any()


def test_serialised_form_round_trips(tmp_path: Path) -> None:
    for language, index in INDEX.items():
        blob = index.to_bytes()
        again = KeywordIndex.from_bytes(blob)
        assert again.keywords == index.keywords
        assert again.keyword_labels == index.keyword_labels
        assert again.config == index.config
        for _, lang, keyword in ROWS:
            if lang == language:
                assert again.match(keyword[:-1]).as_dict() == index.match(keyword[:-1]).as_dict()
    sizes = INDEX.save(tmp_path)
    assert set(sizes) == set(LANGUAGES)
    loaded = MultilingualIndex.load(tmp_path)
    assert loaded["ja"].match("ありがとう").as_dict() == INDEX["ja"].match("ありがとう").as_dict()


def test_corrupt_serialised_form_is_refused(tmp_path: Path) -> None:
    blob = INDEX["ja"].to_bytes()
    with pytest.raises(KeywordIndexFormatError, match="not a keyword index"):
        KeywordIndex.from_bytes(b"PK" + blob[2:])
    with pytest.raises(KeywordIndexFormatError, match="corrupt"):
        KeywordIndex.from_bytes(blob[:-20])
    with pytest.raises(KeywordIndexFormatError, match="format version"):
        KeywordIndex.from_bytes(blob[:6] + bytes([99]) + blob[7:])
    with pytest.raises(KeywordIndexFormatError, match="too short"):
        KeywordIndex.from_bytes(b"SK")
    with pytest.raises(KeywordIndexFormatError, match="no such"):
        KeywordIndex.load(tmp_path / "missing.kwi")


def test_bad_build_input_is_refused() -> None:
    with pytest.raises(KeywordIndexError, match="no keywords for language 'xx'"):
        KeywordIndex.build(KEYWORDS, "xx")
    with pytest.raises(KeywordIndexError, match="missing column"):
        KeywordIndex.build(KEYWORDS.drop("keyword"), "en")
    with pytest.raises(KeywordIndexError, match="no keyword index for language 'fr'"):
        INDEX["fr"]


def test_match_top_orders_by_strength() -> None:
    top = INDEX["ja"].match("ありが").top(2)
    assert {t[0] for t in top} == {LABELS["folded_hands"], LABELS["people_hugging"]}
    assert all(t[1] == pytest.approx(0.66) for t in top)


def test_occurrence_and_prefix_entry_merge() -> None:
    # "あり" ends the text: ant exactly, and a prefix (2 of 5) of ありがとう (0.54); the whole
    # ありがとう ended 2 characters earlier (0.8 * exp(-2 / 8) = 0.623) and beats the prefix.
    match = INDEX["ja"].match("ありがとうあり")
    assert match.as_dict()[LABELS["ant"]] == (1.0, MatchKind.EXACT)
    strength, kind = match.as_dict()[LABELS["folded_hands"]]
    assert kind is MatchKind.EARLIER
    assert strength == pytest.approx(0.8 * math.exp(-0.25), abs=1e-6)
    assert len(set(match.label_ids.tolist())) == len(match)  # each label once



class _NotAscii(str):
    """A str whose ``isascii()`` says no: ``Normalizer.split`` takes its general path."""

    def isascii(self) -> bool:
        return False


@pytest.mark.parametrize("language", ["en", "ja", "fr", "de", "th", "ko", "zh-hant"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_fast_path_equals_the_full_normalisation(language: str, text: str) -> None:
    """#15/#19 speed: ASCII text skips NFKC/NFKD and uses a 128-entry table; the result
    is the general path's for every ASCII text (controls, punctuation, repeats, spaces)."""
    normalizer = Normalizer(language)
    general = normalizer.split(_NotAscii(text))
    assert normalizer.split(text) == general
    assert normalize(text, language) == general[0]


def _typed_texts() -> st.SearchStrategy[tuple[str, str]]:
    """A language and text made of its keywords' pieces: exact, prefix, earlier and merged
    matches as well as none."""
    by_language: dict[str, list[str]] = {}
    for _, language, keyword in ROWS:
        by_language.setdefault(language, []).append(keyword)
    return st.sampled_from(sorted(by_language)).flatmap(lambda language: st.tuples(
        st.just(language),
        st.lists(st.sampled_from(by_language[language]).flatmap(
            lambda k: st.integers(0, len(k)).map(lambda n: k[:n])), max_size=4)
        .map(" ".join)))


@settings(max_examples=300, deadline=None)
@given(_typed_texts())
def test_match_arrays_are_always_read_only_and_of_one_type(case: tuple[str, str]) -> None:
    """#19: the server's compiled keystroke is called for one array type
    (reranker._row_kernels.server_entry); every Match gives exactly that type, whether its
    arrays are a view of the index, the shared empty ones or a merge's copies."""
    language, text = case
    match = INDEX[language].match(text)
    for array, dtype in ((match.label_ids, np.int32), (match.strengths, np.float32),
                         (match.kinds, np.int8)):
        assert array.dtype == dtype and array.ndim == 1
        assert array.flags.c_contiguous and not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        match.strengths[:1] = 0.5


def test_a_merged_match_is_read_only() -> None:
    match = INDEX["ja"].match("ありがとうあり")  # an occurrence merged with a prefix entry
    assert not match.label_ids.flags.writeable and not match.strengths.flags.writeable
    assert not match.kinds.flags.writeable


def _general(language: str, text: str) -> dict[int, tuple[float, MatchKind]]:
    """The general path's match of ``text`` (trie and automaton walks, occurrence merge),
    which the one-word table must reproduce."""
    index = INDEX[language]
    norm, starts = index._normalizer.split(text)
    return index._match(norm, starts).as_dict() if norm else {}


@pytest.mark.parametrize("language", LANGUAGES)
def test_one_word_table_equals_the_general_path_for_every_keyword_and_prefix(
        language: str) -> None:
    """#19 speed: a one-word text that is a whole keyword or a keyword prefix is answered
    from a table built at load; for every such text of the excerpt it is the general
    path's match, label for label (strength and kind)."""
    index = INDEX[language]
    texts = {k[:p] for k in index.keywords for p in range(1, len(k) + 1)}
    assert index.n_prefixes and texts  # the table is exercised
    for text in sorted(texts):
        assert index.match(text).as_dict() == _general(language, text), text


def test_a_prefix_ending_with_a_keyword_keeps_the_exact_match() -> None:
    """土下 is typed towards 土下座 (person bowing: a prefix, 2 of 3 characters) and ends
    with the whole keyword 下 (thumbs down); a one-word lookup that returned the prefix
    entry alone would lose the exact match."""
    match = INDEX["ja"].match("土下")
    assert match.as_dict() == {
        LABELS["person_bowing"]: (pytest.approx(CONFIG.prefix_base + CONFIG.prefix_gain * 2 / 3),
                                  MatchKind.PREFIX),
        LABELS["thumbs_down"]: (1.0, MatchKind.EXACT)}


@settings(max_examples=400, deadline=None)
@given(_typed_texts())
def test_match_equals_the_general_path(case: tuple[str, str]) -> None:
    """Whatever the text (one word or several, keyword pieces or none), :meth:`match`
    gives the general path's labels, strengths and kinds."""
    language, text = case
    assert INDEX[language].match(text).as_dict() == _general(language, text)
