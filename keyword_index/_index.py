"""Incremental matching of the text typed so far against one language's keywords.

Two pyahocorasick structures per language:

- an Aho–Corasick automaton over the normalised keywords finds, in one pass over the
  normalised text, every whole keyword: the one that ends the text (exact) and those
  that end earlier (decaying with the distance from the end);
- a trie (pyahocorasick in trie mode) over every proper prefix of every keyword, each
  mapped to a precomputed entry (labels, strengths sorted by label id), answers "are
  the last characters a keyword being typed?" with one lookup per candidate tail, the
  longest tail first.

The text is matched as a whole on every keystroke (it is short); no state is kept
between keystrokes, so deleting characters or pasting text needs no special case. A text
of one word that is a whole keyword or a keyword prefix (the first word of every message,
while it is typed) is answered from a table computed at load by the same rules
(``KeywordIndex._build_one_word``): one or two trie lookups instead of the walks and the
occurrence merge.
"""

from __future__ import annotations

import enum
import json
import math
import struct
import time
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import numpy.typing as npt
import polars as pl

from keyword_index._config import KeywordIndexConfig
from keyword_index._errors import KeywordIndexError, KeywordIndexFormatError
from keyword_index._normalize import Normalizer

__all__ = ["KeywordIndex", "Match", "MatchKind", "MultilingualIndex"]

_MAGIC = b"SKWIDX"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<6sBI")  # magic, format version, header JSON length
_FILE_SUFFIX = ".kwi"


class MatchKind(enum.IntEnum):
    """How a label matched (the kind of its strongest keyword match)."""

    EXACT = 1
    """The text ends with a whole keyword of the label."""
    PREFIX = 2
    """The last characters are a proper prefix of a keyword of the label."""
    EARLIER = 3
    """A keyword of the label occurs earlier in the text."""


_EMPTY_I32: npt.NDArray[np.int32] = np.zeros(0, np.int32)
_EMPTY_F32: npt.NDArray[np.float32] = np.zeros(0, np.float32)
_EMPTY_I8: npt.NDArray[np.int8] = np.zeros(0, np.int8)
for _a in (_EMPTY_I32, _EMPTY_F32, _EMPTY_I8):
    _a.flags.writeable = False


@dataclass(frozen=True, slots=True)
class Match:
    """Labels matched by the text typed so far.

    Attributes
    ----------
    text : str
        The normalised text that was matched.
    label_ids : ndarray of int32, shape (m,)
        Matched labels, each once.
    strengths : ndarray of float32, shape (m,)
        Strength in ``(0, 1]`` of each label (1.0 = the text ends with a whole keyword).
    kinds : ndarray of int8, shape (m,)
        :class:`MatchKind` of each label's strongest match.

    The three arrays are always read-only and C-contiguous (they may be views of the
    index): a compiled caller sees one array type whatever the text.
    """

    text: str
    label_ids: npt.NDArray[np.int32]
    strengths: npt.NDArray[np.float32]
    kinds: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.label_ids.shape[0])

    def as_dict(self) -> dict[int, tuple[float, MatchKind]]:
        """``{label_id: (strength, kind)}`` (for tests and display, not the hot path)."""
        return {
            int(label): (float(s), MatchKind(int(k)))
            for label, s, k in zip(self.label_ids, self.strengths, self.kinds, strict=True)
        }

    def top(self, n: int = 5) -> list[tuple[int, float, MatchKind]]:
        """The ``n`` strongest labels as ``(label_id, strength, kind)``, strongest first."""
        order = np.lexsort((self.kinds, -self.strengths))[:n]
        return [(int(self.label_ids[i]), float(self.strengths[i]), MatchKind(int(self.kinds[i])))
                for i in order]


def _readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


def _span_order(span: tuple[int, int, int]) -> tuple[int, int]:
    return -span[0], span[1]


class KeywordIndex:
    """Keyword → label matcher for one language.

    Build with :meth:`build` (from a ``keywords`` frame) or :meth:`from_bytes` /
    :meth:`load` (from the compact serialised form); then call :meth:`match` on every
    keystroke with the whole text typed so far.

    Attributes
    ----------
    language : str
        Catalog language code.
    config : KeywordIndexConfig
        Normalisation and strength settings.
    n_labels : int
        Label ids are in ``[0, n_labels)``.
    keywords : tuple of str
        Distinct normalised keywords, sorted.
    keyword_labels : tuple of tuple of int
        Label ids of each keyword (a keyword can belong to several labels).
    """

    def __init__(self, language: str, keywords: Iterable[str],
                 keyword_labels: Iterable[Iterable[int]], n_labels: int,
                 config: KeywordIndexConfig | None = None) -> None:
        self.language = language
        self.config = config or KeywordIndexConfig()
        self.n_labels = int(n_labels)
        self.keywords = tuple(keywords)
        self.keyword_labels = tuple(tuple(sorted(set(ls))) for ls in keyword_labels)
        if len(self.keywords) != len(self.keyword_labels):
            raise KeywordIndexError(
                f"{len(self.keywords)} keywords but {len(self.keyword_labels)} label lists")
        if not self.keywords:
            raise KeywordIndexError(f"language {language!r}: no keyword to index")
        lowest = min((min(ls) for ls in self.keyword_labels if ls), default=0)
        if lowest < 0:
            raise KeywordIndexError(f"label ids should be >= 0, got {lowest}")
        self._normalizer = Normalizer(language, self.config)
        self._keyword_len = [len(k) for k in self.keywords]
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for i, keyword in enumerate(self.keywords):
            self._automaton.add_word(keyword, i)
        self._automaton.make_automaton()
        prefixes = self._build_prefixes()
        cfg = self.config
        # Strength of an occurrence ending d characters before the end, d = 0, 1, ...
        n_decay = math.ceil(cfg.earlier_tau * math.log(cfg.earlier_peak / cfg.earlier_floor))
        # Rounded to float32 (as stored in a Match), so that comparisons with the float32
        # prefix strengths in _merge decide exactly as they would on the arrays.
        self._decay = np.asarray([1.0] + [
            max(cfg.earlier_peak * math.exp(-d / cfg.earlier_tau), cfg.earlier_floor)
            for d in range(1, n_decay + 2)
        ], np.float32).tolist()
        self._floor = float(np.float32(cfg.earlier_floor))
        self._build_one_word(prefixes)

    def _build_prefixes(self) -> list[str]:
        """The prefix trie and its entries; returns the prefixes in entry order."""
        cfg = self.config
        min_prefix = cfg.min_prefix(self.language)
        best: dict[str, dict[int, float]] = {}
        for keyword, labels in zip(self.keywords, self.keyword_labels, strict=True):
            size = len(keyword)
            for p in range(min_prefix, size):
                strength = cfg.prefix_base + cfg.prefix_gain * p / size
                per_label = best.setdefault(keyword[:p], {})
                for label in labels:
                    if per_label.get(label, 0.0) < strength:
                        per_label[label] = strength
        # Keyed by the *reversed* prefix: the longest typed tail that is a keyword prefix is
        # then found from the end of the text, and longest_prefix() bounds how far to look.
        self._prefixes = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        ptr = [0]
        labels_out: list[int] = []
        strengths_out: list[float] = []
        ordered = sorted(best)
        for entry, prefix in enumerate(ordered):
            per_label = best[prefix]
            for label in sorted(per_label):
                labels_out.append(label)
                strengths_out.append(per_label[label])
            ptr.append(len(labels_out))
            self._prefixes.add_word(prefix[::-1], entry)
        self._prefix_ptr = ptr
        self._prefix_labels = _readonly(np.asarray(labels_out, np.int32))
        self._prefix_strengths = _readonly(np.asarray(strengths_out, np.float32))
        self._prefix_kinds = _readonly(np.full(len(labels_out), MatchKind.PREFIX, np.int8))
        # Python-level views (no copy) for the per-label lookups of _merge.
        self._prefix_labels_view = self._prefix_labels.data
        self._prefix_strengths_view = self._prefix_strengths.data
        self._min_prefix = min_prefix
        return ordered

    def _build_one_word(self, prefixes: list[str]) -> None:
        """Precomputed matches of one-word texts that are a whole keyword (or a prefix that
        ends with a shorter keyword), in one more CSR table beside the prefix entries.

        A text of one word (any text in a language without word boundaries) whose
        normalised form is a whole keyword or a keyword prefix has a match that depends
        on that form alone. For a keyword, and for a prefix ending with a shorter keyword
        (possible only without word boundaries), that is the general path's occurrence
        merge, computed here once. For any other prefix it is exactly the prefix entry:
        every earlier occurrence lies inside the prefix being typed. :meth:`match`
        answers all of these texts with one or two trie lookups and slices; every other
        text takes the general path (:meth:`_match`).
        """
        starts = None if not self._normalizer.word_boundaries else frozenset({0})
        rows = [self._match(keyword, starts) for keyword in self.keywords]
        suffixed: dict[int, int] = {}
        if starts is None:  # (no prefixes: nothing to look at)
            keyword_len = self._keyword_len
            for entry, prefix in enumerate(prefixes):
                last = len(prefix) - 1
                if any(end == last and keyword_len[kw] < len(prefix)
                       for end, kw in self._automaton.iter(prefix)):
                    suffixed[entry] = len(rows)
                    rows.append(self._match(prefix, starts))
        self._one_ptr = np.cumsum([0, *(len(m) for m in rows)]).tolist()
        self._one_labels = _readonly(np.concatenate([_EMPTY_I32, *(m.label_ids for m in rows)]))
        self._one_strengths = _readonly(
            np.concatenate([_EMPTY_F32, *(m.strengths for m in rows)]))
        self._one_kinds = _readonly(np.concatenate([_EMPTY_I8, *(m.kinds for m in rows)]))
        self._one_suffixed = suffixed

    @property
    def n_prefixes(self) -> int:
        """Number of distinct keyword prefixes the trie answers for."""
        return len(self._prefix_ptr) - 1

    # -- building -------------------------------------------------------------------

    @classmethod
    def build(cls, keywords_df: pl.DataFrame, language: str,
              config: KeywordIndexConfig | None = None, *,
              n_labels: int | None = None) -> KeywordIndex:
        """Index the keywords of one language.

        Parameters
        ----------
        keywords_df : polars.DataFrame
            Schema ``keywords`` (``label_id``, ``language``, ``keyword`` ...), any languages.
        language : str
            Which language to index.
        config : KeywordIndexConfig, optional
            Defaults to ``KeywordIndexConfig()``.
        n_labels : int, optional
            Label ids are in ``[0, n_labels)``; default ``max(label_id) + 1`` over the
            whole frame (so every language's index agrees).

        Raises
        ------
        KeywordIndexError
            If columns are missing or the language has no keyword.
        """
        missing = {"label_id", "language", "keyword"} - set(keywords_df.columns)
        if missing:
            raise KeywordIndexError(
                f"keywords frame is missing column(s) {sorted(missing)}; "
                f"found {keywords_df.columns}")
        config = config or KeywordIndexConfig()
        rows = keywords_df.filter(pl.col("language") == language)
        if rows.height == 0:
            known = sorted(keywords_df["language"].unique().to_list())
            raise KeywordIndexError(
                f"no keywords for language {language!r}; the frame has {known}")
        if n_labels is None:
            n_labels = int(keywords_df["label_id"].max()) + 1  # type: ignore[arg-type]
        normalizer = Normalizer(language, config)
        min_letters = 1 if language in config.cjk_languages else config.min_letter_keyword_chars
        by_keyword: dict[str, set[int]] = {}
        for label_id, keyword in rows.select("label_id", "keyword").iter_rows():
            if not 0 <= label_id < n_labels:
                raise KeywordIndexError(f"label_id={label_id} should be in [0, {n_labels})")
            norm = normalizer(keyword)
            # Keywords made only of symbols ("!?", "✓") cannot be typed as text; one
            # letter in an alphabetic language ("t") would fire on every word.
            if not norm or (len(norm) < min_letters and norm.isalpha()):
                continue
            by_keyword.setdefault(norm, set()).add(label_id)
        keywords = sorted(by_keyword)
        return cls(language, keywords, [by_keyword[k] for k in keywords], n_labels, config)

    # -- matching -------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The canonical form of ``text`` in this index's language."""
        return self._normalizer(text)

    def match(self, text: str) -> Match:
        """Labels matched by ``text`` (the whole text typed so far).

        An earlier occurrence that lies strictly inside a longer match (another keyword
        occurrence, or the keyword being typed at the end) is ignored: "あり" (ant) inside
        "ありがとう", "thumbs" inside "thumbs up". A whole keyword at the end always counts.

        Parameters
        ----------
        text : str
            Raw typed text.

        Returns
        -------
        Match
            Each matched label once, with the strength and kind of its best match.
        """
        norm, starts = self._normalizer.split(text)
        if not norm:
            return Match(norm, _EMPTY_I32, _EMPTY_F32, _EMPTY_I8)
        if starts is None or len(starts) == 1:  # one word: see _build_one_word
            kw: int = self._automaton.get(norm, -1)
            if kw >= 0:
                return self._one_word(norm, kw)
            if len(norm) >= self._min_prefix and self._prefix_labels.size:
                entry: int = self._prefixes.get(norm[::-1], -1)
                if entry >= 0:
                    row = self._one_suffixed.get(entry)
                    if row is not None:
                        return self._one_word(norm, row)
                    lo, hi = self._prefix_ptr[entry], self._prefix_ptr[entry + 1]
                    return Match(norm, self._prefix_labels[lo:hi],
                                 self._prefix_strengths[lo:hi], self._prefix_kinds[lo:hi])
        return self._match(norm, starts)

    def _one_word(self, norm: str, row: int) -> Match:
        """Row ``row`` of the one-word table (see :meth:`_build_one_word`)."""
        lo, hi = self._one_ptr[row], self._one_ptr[row + 1]
        return Match(norm, self._one_labels[lo:hi], self._one_strengths[lo:hi],
                     self._one_kinds[lo:hi])

    def _match(self, norm: str, starts: frozenset[int] | None) -> Match:
        """:meth:`match` of the normalised text ``norm`` (not empty) with word ``starts``
        (the general path: trie and automaton walks, occurrence merge)."""
        n = len(norm)
        entry, tail = self._typed_prefix(norm, starts)
        keyword_len = self._keyword_len
        spans = []
        for end, kw in self._automaton.iter(norm):
            start = end - keyword_len[kw] + 1
            if starts is None or start in starts:
                spans.append((end, start, kw))
        found: dict[int, tuple[float, int]] = {}
        if spans:
            self._occurrences(spans, n, tail, found)
        if entry < 0:
            if not found:
                return Match(norm, _EMPTY_I32, _EMPTY_F32, _EMPTY_I8)
            return self._merge(norm, found, 0, 0)
        lo, hi = self._prefix_ptr[entry], self._prefix_ptr[entry + 1]
        if not found:
            return Match(norm, self._prefix_labels[lo:hi], self._prefix_strengths[lo:hi],
                         self._prefix_kinds[lo:hi])
        return self._merge(norm, found, lo, hi)

    def _merge(self, norm: str, found: dict[int, tuple[float, int]], lo: int, hi: int,
               ) -> Match:
        """Union of prefix entry ``[lo, hi)`` (sorted labels; empty if ``lo == hi``) and
        occurrences ``found``; the stronger match wins, an occurrence on a tie.

        Occurrences are few (p99 ~15 labels): each is looked up by bisection and written
        with scalar assignments, which is cheaper than building arrays from lists.
        """
        entry_labels = self._prefix_labels_view
        entry_strengths = self._prefix_strengths_view
        labels = self._prefix_labels[lo:hi]
        strengths = self._prefix_strengths[lo:hi]
        kinds = self._prefix_kinds[lo:hi]
        copied = False
        new: list[int] = []
        for label, value in found.items():
            at = bisect_left(entry_labels, label, lo, hi)
            if at < hi and entry_labels[at] == label:
                if value[0] >= entry_strengths[at]:
                    if not copied:
                        strengths, kinds, copied = strengths.copy(), kinds.copy(), True
                    strengths[at - lo], kinds[at - lo] = value
            else:
                new.append(label)
        if new:
            size = hi - lo
            total = size + len(new)
            out_labels = np.empty(total, np.int32)
            out_strengths = np.empty(total, np.float32)
            out_kinds = np.empty(total, np.int8)
            if size:
                out_labels[:size] = labels
                out_strengths[:size] = strengths
                out_kinds[:size] = kinds
            for i, label in enumerate(new, size):
                out_labels[i] = label
                out_strengths[i], out_kinds[i] = found[label]
            return Match(norm, _readonly(out_labels), _readonly(out_strengths),
                         _readonly(out_kinds))
        if copied:
            _readonly(strengths)
            _readonly(kinds)
        return Match(norm, labels, strengths, kinds)

    def _typed_prefix(self, norm: str, starts: frozenset[int] | None) -> tuple[int, int]:
        """Entry and length of the longest tail of ``norm`` that is a proper keyword
        prefix (at a word start in word-boundary languages); ``(-1, 0)`` if none."""
        if not self._prefix_labels.size:
            # No keyword is long enough to have a prefix that counts; pyahocorasick must
            # not be asked about an empty trie (longest_prefix() aborts the process).
            return -1, 0
        rev = norm[::-1]
        n = len(norm)
        get = self._prefixes.get
        # No tail longer than the longest trie path from the end can be a prefix.
        for size in range(self._prefixes.longest_prefix(rev), self._min_prefix - 1, -1):
            if starts is None or n - size in starts:
                entry: int = get(rev[:size], -1)
                if entry >= 0:
                    return entry, size
        return -1, 0

    def _occurrences(self, spans: list[tuple[int, int, int]], n: int, tail: int,
                     found: dict[int, tuple[float, int]]) -> None:
        """Strongest (strength, kind) per label from whole-keyword occurrences."""
        last = n - 1
        decay = self._decay
        n_decay = len(decay)
        floor = self._floor
        keyword_labels = self.keyword_labels
        # Latest end first, then longest: a span is inside a longer one iff an earlier
        # span in this order starts at or before it.
        spans.sort(key=_span_order)
        min_start = n - tail if tail else n
        for end, start, kw in spans:
            if end == last:
                strength, kind = 1.0, 1
            elif min_start <= start:
                continue
            else:
                d = last - end
                strength, kind = (decay[d] if d < n_decay else floor), 3
            if start < min_start:
                min_start = start
            for label in keyword_labels[kw]:
                current = found.get(label)
                if current is None or strength > current[0]:
                    found[label] = (strength, kind)

    # -- serialised form ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The compact serialised form shipped to phones (normalised keywords + labels).

        Layout: ``b"SKWIDX"``, format version (u8), header length (u32 LE), a JSON header
        (language, n_labels, config, counts), then a zlib stream holding the keywords
        (UTF-8, newline-separated), the label count of each keyword (u8) and the label ids
        (u16 LE, or i32 LE when ``n_labels > 65535``). The tries are rebuilt on load.
        """
        label_dtype = "<u2" if self.n_labels <= 0xFFFF else "<i4"
        counts = np.asarray([len(ls) for ls in self.keyword_labels], np.int64)
        count_dtype = "<u2" if counts.max() > 0xFF else "u1"
        header = json.dumps({
            "language": self.language,
            "n_labels": self.n_labels,
            "n_keywords": len(self.keywords),
            "count_dtype": count_dtype,
            "label_dtype": label_dtype,
            "config": self.config.model_dump(mode="json"),
        }, sort_keys=True, separators=(",", ":")).encode()
        text = "\n".join(self.keywords).encode()
        labels = np.fromiter((label for ls in self.keyword_labels for label in ls), np.int64)
        payload = b"".join([
            struct.pack("<I", len(text)), text,
            counts.astype(count_dtype).tobytes(),
            labels.astype(label_dtype).tobytes(),
        ])
        return (_HEADER.pack(_MAGIC, _FORMAT_VERSION, len(header)) + header
                + zlib.compress(payload, 9))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> KeywordIndex:
        """Rebuild an index from :meth:`to_bytes` output.

        Raises
        ------
        KeywordIndexFormatError
            If ``data`` is not a keyword index of a known format version, or is corrupt.
        """
        if len(data) < _HEADER.size:
            raise KeywordIndexFormatError(f"{source}: {len(data)} bytes is too short for a "
                                          "keyword index")
        magic, version, header_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise KeywordIndexFormatError(f"{source}: not a keyword index (magic {magic!r})")
        if version != _FORMAT_VERSION:
            raise KeywordIndexFormatError(
                f"{source}: format version {version}, this code reads {_FORMAT_VERSION}")
        try:
            header = json.loads(data[_HEADER.size:_HEADER.size + header_len])
            payload = zlib.decompress(data[_HEADER.size + header_len:])
            (text_len,) = struct.unpack_from("<I", payload)
            keywords = payload[4:4 + text_len].decode().split("\n")
            n = int(header["n_keywords"])
            count_dtype = np.dtype(header["count_dtype"])
            offset = 4 + text_len
            counts = np.frombuffer(payload, count_dtype, n, offset).astype(np.int64)
            offset += n * count_dtype.itemsize
            labels = np.frombuffer(payload, np.dtype(header["label_dtype"]), int(counts.sum()),
                                   offset).astype(np.int64)
            config = KeywordIndexConfig.model_validate(header["config"])
        except (ValueError, KeyError, TypeError, zlib.error, struct.error) as exc:
            raise KeywordIndexFormatError(f"{source}: corrupt keyword index ({exc})") from exc
        if len(keywords) != n:
            raise KeywordIndexFormatError(
                f"{source}: header says {n} keywords, payload holds {len(keywords)}")
        bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        keyword_labels = [labels[bounds[i]:bounds[i + 1]].tolist() for i in range(n)]
        return cls(header["language"], keywords, keyword_labels, header["n_labels"], config)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_bytes` to ``path``; returns the path."""
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> KeywordIndex:
        """Read an index written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise KeywordIndexFormatError(f"{path}: no such keyword index file")
        return cls.from_bytes(path.read_bytes(), str(path))

    def __repr__(self) -> str:
        return (f"KeywordIndex(language={self.language!r}, n_keywords={len(self.keywords)}, "
                f"n_prefixes={self.n_prefixes}, n_labels={self.n_labels})")


class MultilingualIndex(Mapping[str, KeywordIndex]):
    """One :class:`KeywordIndex` per language, as a read-only mapping.

    Parameters
    ----------
    indexes : mapping of str to KeywordIndex
        Language → index.
    """

    def __init__(self, indexes: Mapping[str, KeywordIndex]) -> None:
        self._indexes = dict(indexes)
        self.build_seconds: dict[str, float] = {}

    @classmethod
    def build(cls, keywords_df: pl.DataFrame, languages: Iterable[str] | None = None,
              config: KeywordIndexConfig | None = None) -> MultilingualIndex:
        """Index every language of ``keywords_df`` (or only ``languages``)."""
        if languages is None:
            languages = sorted(keywords_df["language"].unique().to_list())
        n_labels = int(keywords_df["label_id"].max()) + 1  # type: ignore[arg-type]
        indexes: dict[str, KeywordIndex] = {}
        seconds: dict[str, float] = {}
        for language in languages:
            t0 = time.perf_counter()
            indexes[language] = KeywordIndex.build(keywords_df, language, config,
                                                   n_labels=n_labels)
            seconds[language] = time.perf_counter() - t0
        out = cls(indexes)
        out.build_seconds = seconds
        return out

    def __getitem__(self, language: str) -> KeywordIndex:
        try:
            return self._indexes[language]
        except KeyError:
            raise KeywordIndexError(
                f"no keyword index for language {language!r}; have "
                f"{sorted(self._indexes)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._indexes)

    def __len__(self) -> int:
        return len(self._indexes)

    def __contains__(self, language: object) -> bool:
        # Mapping's default would call __getitem__, which raises KeywordIndexError.
        return language in self._indexes

    def match(self, text: str, language: str) -> Match:
        """Match ``text`` with the index of ``language``."""
        return self[language].match(text)

    def save(self, directory: str | Path) -> dict[str, int]:
        """Write ``<language>.kwi`` files into ``directory``; returns bytes per language."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sizes: dict[str, int] = {}
        for language, index in self._indexes.items():
            sizes[language] = index.save(directory / f"{language}{_FILE_SUFFIX}").stat().st_size
        return sizes

    @classmethod
    def load(cls, directory: str | Path,
             languages: Iterable[str] | None = None) -> MultilingualIndex:
        """Read the ``<language>.kwi`` files of ``directory`` (or only ``languages``)."""
        directory = Path(directory)
        if languages is None:
            languages = sorted(p.name.removesuffix(_FILE_SUFFIX)
                               for p in directory.glob(f"*{_FILE_SUFFIX}"))
        languages = list(languages)
        if not languages:
            raise KeywordIndexFormatError(f"{directory}: no *{_FILE_SUFFIX} keyword index file")
        return cls({lang: KeywordIndex.load(directory / f"{lang}{_FILE_SUFFIX}")
                    for lang in languages})
