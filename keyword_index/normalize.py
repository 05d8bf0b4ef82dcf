"""The normaliser's building blocks: its character table and repeat collapsing.

:class:`keyword_index.Normalizer` (what the index calls on every keystroke) applies them in
one pass; this submodule is for the reference test, which rebuilds normalisation step by
step from them: :func:`translate_table` maps each character for a language's settings
``(word_boundaries, strip_accents, fold_chinese)`` (removed, a word boundary, accents
stripped, katakana to hiragana, traditional to simplified Chinese), :data:`REPEATS`
finds a character repeated, and :func:`collapse_repeats` keeps one of each run.
"""

from keyword_index._normalize import _REPEATS as REPEATS
from keyword_index._normalize import _collapse_repeats as collapse_repeats
from keyword_index._normalize import _translate_table as translate_table

__all__ = ["REPEATS", "collapse_repeats", "translate_table"]
