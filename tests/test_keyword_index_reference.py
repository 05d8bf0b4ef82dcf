"""The compiled match path against a straightforward reference (issue #4).

:func:`_reference_match` spells out what :meth:`KeywordIndex.match` means with plain
string operations: every keyword occurrence found with ``str.find``, the typed prefix
by trying every tail of the text, and the merge written out. The compiled kernel
(Aho–Corasick automaton, failure links, one pass) must give exactly the same labels,
strengths and kinds, in the same order. Likewise :class:`Normalizer` (case folding fused
into its translation table) against the unfused steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyword_index import (
    KeywordIndex,
    KeywordIndexConfig,
    KeywordIndexError,
    MatchKind,
    MultilingualIndex,
    Normalizer,
)
from keyword_index.normalize import REPEATS, collapse_repeats, translate_table

FIXTURE = Path(__file__).parent / "fixtures" / "keyword_index" / "cldr_excerpt.json"
CONFIG = KeywordIndexConfig()
LANGUAGES = ("en", "es", "ja", "ko", "th", "zh", "zh-hant")
# Half of a keyword typed scores 0.25 + 0.5 / 2 = 0.5, as does an earlier occurrence at
# any distance (the floor).
TIES = KeywordIndexConfig(prefix_base=0.25, prefix_gain=0.5, earlier_peak=0.6,
                          earlier_floor=0.5, earlier_tau=0.1)


def _excerpt_index() -> MultilingualIndex:
    raw = json.loads(FIXTURE.read_text())
    keywords = pl.DataFrame(raw["keywords"], orient="row", schema={
        "label_id": pl.Int32, "language": pl.String, "keyword": pl.String, "kind": pl.String})
    return MultilingualIndex.build(keywords)


INDEX = _excerpt_index()


def _reference_split(text: str, language: str, config: KeywordIndexConfig,
                     ) -> tuple[str, frozenset[int] | None]:
    """Normalisation step by step: NFKC/NFKD, case folding, the translation table,
    collapsed repeats, then word starts."""
    strip_accents = language in config.strip_accents_languages
    boundaries = language in config.word_boundary_languages
    table = translate_table(boundaries, strip_accents,
                             language in config.fold_chinese_languages)
    if config.collapse_repeats and REPEATS.search(text):
        text = collapse_repeats(text)
    s = unicodedata.normalize("NFKD" if strip_accents else "NFKC", text)
    s = s.casefold().translate(table)
    if config.collapse_repeats:
        s = collapse_repeats(s)
    if not boundaries:
        return s, None
    norm = ""
    starts: set[int] = set()
    for word in s.split():
        if config.collapse_repeats and norm and word[0] == norm[-1]:
            starts.add(len(norm) - 1)
            word = word[1:]
        else:
            starts.add(len(norm))
        norm += word
    return norm, frozenset(starts)


def _reference_match(index: KeywordIndex, text: str) -> list[tuple[int, float, int]]:
    """``(label, strength, kind)`` of ``index.match(text)``, in order, the obvious way."""
    cfg = index.config
    norm, starts = _reference_split(text, index.language, cfg)
    n = len(norm)
    if n == 0:
        return []

    def at_word_start(position: int) -> bool:
        return starts is None or position in starts

    f32 = np.float32
    # Proper prefixes of at least the minimum length -> label -> strongest prefix strength.
    min_prefix = cfg.min_prefix(index.language)
    prefixes: dict[str, dict[int, float]] = {}
    for keyword, labels in zip(index.keywords, index.keyword_labels, strict=True):
        for p in range(min_prefix, len(keyword)):
            strength = cfg.prefix_base + cfg.prefix_gain * p / len(keyword)
            per_label = prefixes.setdefault(keyword[:p], {})
            for label in labels:
                per_label[label] = max(per_label.get(label, 0.0), strength)
    # The longest tail of the text that is such a prefix, at a word start.
    entry: dict[int, float] = {}
    tail = 0
    for size in range(n, min_prefix - 1, -1):
        if norm[n - size:] in prefixes and at_word_start(n - size):
            entry, tail = prefixes[norm[n - size:]], size
            break
    # Every whole-keyword occurrence at a word start: latest end first, then longest. A
    # keyword listed twice counts once, with the labels of its last listing.
    last_listing = {keyword: k for k, keyword in enumerate(index.keywords)}
    spans = []
    for keyword, k in last_listing.items():
        start = norm.find(keyword) if keyword else -1
        while start >= 0:
            if at_word_start(start):
                spans.append((start + len(keyword) - 1, start, k))
            start = norm.find(keyword, start + 1)
    spans.sort(key=lambda span: (-span[0], span[1]))
    found: dict[int, tuple[float, int]] = {}
    kind: int
    min_start = n - tail if tail else n
    for end, start, k in spans:
        if end == n - 1:
            strength, kind = 1.0, MatchKind.EXACT
        elif start >= min_start:  # inside a longer occurrence or the typed prefix
            continue
        else:
            d = n - 1 - end
            strength = float(f32(max(cfg.earlier_peak * math.exp(-d / cfg.earlier_tau),
                                     cfg.earlier_floor)))
            kind = MatchKind.EARLIER
        min_start = min(min_start, start)
        for label in index.keyword_labels[k]:
            if label not in found or strength > found[label][0]:
                found[label] = (strength, kind)
    out: list[tuple[int, float, int]] = []
    for label in sorted(entry):
        strength, kind = float(f32(entry[label])), MatchKind.PREFIX
        if label in found and found[label][0] >= strength:
            strength, kind = found[label]
        out.append((label, strength, int(kind)))
    out += [(label, s, int(kind)) for label, (s, kind) in found.items() if label not in entry]
    return out


def _check(index: KeywordIndex, text: str) -> None:
    match = index.match(text)
    assert match.label_ids.dtype == np.int32 and match.strengths.dtype == np.float32
    assert match.kinds.dtype == np.int8
    got = list(zip(match.label_ids.tolist(), match.strengths.tolist(), match.kinds.tolist(),
                   strict=True))
    assert got == _reference_match(index, text), (index.language, text)
    assert match.text == _reference_split(text, index.language, index.config)[0]


# -- the excerpt's real keywords -------------------------------------------------------

@st.composite
def _typed(draw: st.DrawFn) -> tuple[str, str]:
    language = draw(st.sampled_from(sorted(INDEX)))
    keywords = list(INDEX[language].keywords)
    alphabet = sorted(set("".join(keywords)))
    parts = draw(st.lists(st.one_of(
        st.sampled_from(keywords),  # whole keywords
        st.sampled_from(keywords).map(lambda k: k[:max(1, len(k) // 2)]),  # prefixes
        st.text(alphabet=alphabet, min_size=1, max_size=3),  # their letters
        st.sampled_from([" ", "!", "~", "A", "ー"]),
    ), max_size=6))
    return language, "".join(parts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_typed())
def test_match_equals_reference_on_real_keywords(case: tuple[str, str]) -> None:
    language, text = case
    for end in range(len(text) + 1):  # every keystroke
        _check(INDEX[language], text[:end])


# -- tiny alphabets: dense overlaps exercise the failure and output links --------------

@st.composite
def _tiny_index_and_text(draw: st.DrawFn) -> tuple[KeywordIndex, str]:
    language = draw(st.sampled_from(["en", "ja", "ko"]))  # word starts, none, CJK minimum
    keywords = draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=5), min_size=1,
                             max_size=12, unique=True))
    labels = [draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)) for _ in keywords]
    # TIES: prefix and earlier-occurrence strengths of 0.5 alike, so the tie rules matter.
    config = draw(st.sampled_from([CONFIG, TIES]))
    index = KeywordIndex(language, keywords, labels, n_labels=10, config=config)
    text = draw(st.text(alphabet="abc  ", max_size=16))
    return index, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tiny_index_and_text())
def test_match_equals_reference_on_overlapping_keywords(
        case: tuple[KeywordIndex, str]) -> None:
    index, text = case
    for end in range(len(text) + 1):
        _check(index, text[:end])


def test_match_longer_than_the_output_buffer() -> None:
    # One typed prefix shared by 300 keywords of distinct labels, plus an occurrence.
    keywords = [f"ab{chr(0x4E00 + i)}" for i in range(300)] + ["x"]
    index = KeywordIndex("ja", keywords, [[i] for i in range(301)], n_labels=301)
    for text in ("ab", "xab", "abx"):
        _check(index, text)
    assert len(index.match("xab")) == 301


def test_one_letter_and_repeated_keywords() -> None:
    index = KeywordIndex("ja", ["a", "a", "ab", "b"], [[1], [2], [3], [1, 4]], n_labels=5)
    for text in ("a", "ab", "ba", "aba", "b a b"):
        _check(index, text)


def test_only_one_letter_keywords_have_no_prefix_to_type() -> None:
    # No keyword has a proper prefix that counts: the prefix trie is empty, and asking an
    # empty pyahocorasick trie aborted the process before it was guarded.
    index = KeywordIndex("ko", ["c"], [[3, 4]], n_labels=5)
    for text in ("", "c", "cb bc", "bbb"):
        _check(index, text)
    assert index.n_prefixes == 0 and index.match("c").label_ids.tolist() == [3, 4]


def test_negative_label_is_refused() -> None:
    with pytest.raises(KeywordIndexError, match="label ids should be >= 0"):
        KeywordIndex("en", ["hi"], [[-1]], n_labels=3)


# -- normalisation ---------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.sampled_from(LANGUAGES), st.text(max_size=12))
def test_normalizer_equals_step_by_step_reference(language: str, text: str) -> None:
    assert Normalizer(language).split(text) == _reference_split(text, language, CONFIG)


def test_case_folding_outside_the_basic_planes() -> None:
    for text in ("ẞ", "ŉ", "𞤀", "ǅ", "ﬃ", "İ"):  # multi-character folds, Adlam, title case
        for language in LANGUAGES:
            assert Normalizer(language).split(text) == _reference_split(text, language, CONFIG)


def test_import_does_not_load_numba() -> None:
    code = "import sys, keyword_index; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
