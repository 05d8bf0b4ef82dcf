"""Normalisation shared by the index (keywords) and the query (typed text).

Both sides go through the same :class:`Normalizer`, so whatever variant a person types
(katakana or hiragana, half or full width, upper case, "thaaanks", "55555", "〜", "!!",
traditional or simplified Chinese) lands on the same canonical string as the keyword.

Steps, in order:

1. Unicode NFKC (full/half width, compatibility forms); NFKD for
   ``strip_accents_languages`` so that combining accents can be dropped.
2. Case folding.
3. One translation table (applied with case folding in one ``str.translate``, as both
   map single code points): katakana → hiragana (the table is built with
   ``jaconv``), traditional → simplified Chinese per character (built with OpenCC
   ``t2s``) for ``fold_chinese_languages``, and removal of punctuation, symbols (emoji),
   whitespace and control/format characters. Combining marks are kept (Thai vowels and
   tone marks are combining marks) except variation selectors and, for
   ``strip_accents_languages``, accents.
4. Runs of one repeated character collapse to one character (before step 1 as well,
   as NFKC splits some characters in two).

The canonical form has no spaces: Japanese, Chinese and Thai have none, and keywords
such as "thumbs up" / "엄지 척" then match with or without the space. For
``word_boundary_languages`` the normaliser also reports where typed words start, so the
index can ask a keyword to start at a word start (no "hi" inside "this").
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import Literal

import jaconv
import opencc

from keyword_index._config import KeywordIndexConfig

__all__ = ["Normalizer", "normalize"]

_REPEATS = re.compile(r"(.)\1+", re.DOTALL)
# Apostrophes and dashes join parts of one word ("don't", "fleur-de-lis"): removed, never a
# word boundary.
_JOINERS = frozenset("'’ʼ‘`´")
_CODE_POINT_RANGES = (range(0x20000), range(0xE0000, 0xE1000))
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0))


def _is_removed(category: str) -> bool:
    return category[0] in "PSZ" or category in ("Cc", "Cf", "Co", "Cs", "Me")


def _collapse_repeats(text: str) -> str:
    # A plain loop: about 4x faster than re.sub with a back-reference on short texts.
    out: list[str] = []
    prev = ""
    for char in text:
        if char != prev:
            out.append(char)
            prev = char
    return "".join(out)


@functools.cache
def _katakana_to_hiragana() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x30A1, 0x30FF):
        char = chr(code)
        hira = jaconv.kata2hira(char)
        if hira != char:
            table[code] = hira
    return table


@functools.cache
def _traditional_to_simplified() -> dict[int, str]:
    # Per character, so that folding never depends on the neighbours a prefix has yet.
    chars = [chr(c) for c in (*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000),
                               *range(0xF900, 0xFB00))]
    converted = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars):  # pragma: no cover - guards an OpenCC behaviour change
        raise RuntimeError("OpenCC t2s changed the number of lines; cannot build the table")
    return {ord(a): b for a, b in zip(chars, converted, strict=True) if a != b}


@functools.cache
def _translate_table(word_boundaries: bool, strip_accents: bool,
                     fold_chinese: bool) -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for block in _CODE_POINT_RANGES:
        for code in block:
            char = chr(code)
            category = unicodedata.category(char)
            if _is_removed(category):
                separates = word_boundaries and category[0] != "C" and category != "Pd" and (
                    char not in _JOINERS)
                table[code] = " " if separates else None
            elif strip_accents and category == "Mn":
                table[code] = None
    for block in _VARIATION_SELECTORS:
        for code in block:
            table[code] = None
    table.update(_katakana_to_hiragana())
    if fold_chinese:
        table.update(_traditional_to_simplified())
    return table


@functools.cache
def _casefolded() -> dict[int, str]:
    """Every code point that case folding changes, with its folded form.

    Blocks of 256 code points that folding leaves alone (most of Unicode) are skipped
    with one ``casefold`` of the whole block; only the others are looked at one by one
    (~0.1 s instead of ~0.25 s, once per process).
    """
    out: dict[int, str] = {}
    for first in range(0, sys.maxunicode + 1, 256):
        codes = range(first, min(first + 256, sys.maxunicode + 1))
        block = "".join(map(chr, codes))
        if block.casefold() != block:
            out.update((code, folded) for code in codes
                       if (folded := chr(code).casefold()) != chr(code))
    return out


@functools.cache
def _casefold_translate_table(word_boundaries: bool, strip_accents: bool,
                              fold_chinese: bool) -> dict[int, str | None]:
    """``str.casefold`` then ``str.translate`` with :func:`_translate_table`, as one table.

    Both are maps of single code points (case folding has no context), so their
    composition is one: a code point maps to the translation of each character of its
    folded form, joined.
    """
    table = _translate_table(word_boundaries, strip_accents, fold_chinese)
    fused = dict(table)
    for code, folded in _casefolded().items():
        parts = [table.get(ord(char), char) for char in folded]
        fused[code] = "".join(part for part in parts if part is not None) or None
    return fused


class Normalizer:
    """Maps keywords and typed text of one language to one canonical form.

    Parameters
    ----------
    language : str
        Catalog language code (``en``, ``ja``, ``zh-hant`` ...).
    config : KeywordIndexConfig, optional
        Which languages fold Chinese, strip accents, have word boundaries; repeats.
    """

    def __init__(self, language: str, config: KeywordIndexConfig | None = None) -> None:
        config = config or KeywordIndexConfig()
        self.language = language
        self.word_boundaries = language in config.word_boundary_languages
        strip_accents = language in config.strip_accents_languages
        self._form: Literal["NFKC", "NFKD"] = "NFKD" if strip_accents else "NFKC"
        # Case folding and the translation table in one pass (see the module docstring).
        self._table = _casefold_translate_table(
            self.word_boundaries, strip_accents, language in config.fold_chinese_languages)
        # ASCII text (most keystrokes in alphabetic languages) is its own NFKC/NFKD form;
        # its code points' entries as a small table: the full one spans every code point,
        # and a keystroke that finds it out of cache pays a miss per character.
        self._ascii_table = {code: self._table.get(code, chr(code)) for code in range(128)}
        self._collapse = config.collapse_repeats

    def __call__(self, text: str) -> str:
        """The canonical form of ``text`` (no spaces, no punctuation)."""
        return self.split(text)[0]

    def split(self, text: str) -> tuple[str, frozenset[int] | None]:
        """The canonical form and, for word-boundary languages, where words start.

        Returns
        -------
        norm : str
            The canonical form.
        starts : frozenset of int or None
            Positions in ``norm`` where a typed word starts (always includes 0 when
            ``norm`` is not empty); ``None`` for languages without word boundaries.
        """
        if self._collapse and _REPEATS.search(text) is not None:
            # Before NFKC too: it splits some characters in two (Thai "ำ" → "ํา"), so a
            # typed run "ำำ" would no longer be a run of one character afterwards.
            text = _collapse_repeats(text)
        if text.isascii():
            s = text.translate(self._ascii_table)
        else:
            s = unicodedata.normalize(self._form, text).translate(self._table)
        if self._collapse and _REPEATS.search(s) is not None:
            s = _collapse_repeats(s)
        if not self.word_boundaries:
            return s, None
        parts: list[str] = []
        starts: list[int] = []
        pos = 0
        last = ""
        for word in s.split():
            if self._collapse and word[0] == last:  # a run across the word gap collapses too
                starts.append(pos - 1)
                word = word[1:]
                if not word:
                    continue
            else:
                starts.append(pos)
            parts.append(word)
            pos += len(word)
            last = word[-1]
        return "".join(parts), frozenset(starts)


@functools.lru_cache(maxsize=64)
def _normalizer(language: str, config: KeywordIndexConfig) -> Normalizer:
    return Normalizer(language, config)


def normalize(text: str, language: str, config: KeywordIndexConfig | None = None) -> str:
    """Canonical form of ``text`` in ``language``, as the keyword index sees it.

    Parameters
    ----------
    text : str
        A keyword or typed text.
    language : str
        Catalog language code.
    config : KeywordIndexConfig, optional
        Defaults to ``KeywordIndexConfig()``.

    Examples
    --------
    >>> normalize("アリガトウ〜!!", "ja")
    'ありがとう'
    >>> normalize("Thaaanks!", "en")
    'thanks'
    >>> normalize("讚", "zh-hant") == normalize("赞", "zh-hant")
    True
    """
    return _normalizer(language, config or KeywordIndexConfig())(text)
