"""Incremental matching of the text typed so far against one language's keywords.

One Aho–Corasick automaton per language, held as flat arrays (see
:mod:`keyword_index._layout`) and run by a compiled kernel (:mod:`keyword_index._kernels`,
numba; imported and compiled, or loaded from numba's on-disk cache, when an index is
constructed, never at ``import keyword_index``):

- one pass over the normalised text finds every whole keyword: the one that ends the
  text (exact) and those that end earlier (decaying with the distance from the end);
- the automaton's state after the last character is the longest tail of the text that
  is a keyword prefix; its failure chain lists every shorter such tail, so the longest
  tail that is a proper keyword prefix (at a word start in word-boundary languages)
  is found without another lookup. Each such trie node carries a precomputed entry
  (labels, strengths sorted by label id);
- the kernel then merges the entry with the occurrences into the :class:`Match`.

The text is matched as a whole on every keystroke (it is short); no state is kept
between keystrokes, so deleting characters or pasting text needs no special case.
Python does only the normalisation and one kernel call per keystroke.
"""

from __future__ import annotations

import enum
import json
import math
import struct
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from keyword_index._config import KeywordIndexConfig
from keyword_index._errors import KeywordIndexError, KeywordIndexFormatError
from keyword_index._layout import (
    HEADER_EDGES,
    HEADER_LABEL_BOUND,
    HEADER_NODES,
    HEADER_REFS,
    HEADER_WORD_STARTS,
    N_NODE_COLUMNS,
    NODE_DEPTH,
    NODE_EDGE_HI,
    NODE_EDGE_LO,
    NODE_ENTRY_HI,
    NODE_ENTRY_LO,
    NODE_FAIL,
    NODE_LABELS_HI,
    NODE_LABELS_LO,
    NODE_OUTPUT,
    TABLE_HEADER,
)
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
# Word starts of a text without word boundaries / of one word. Never written, but left
# writable like the arrays made per keystroke, so that the kernel sees one argument type
# (each type is a separate compilation).
_NO_STARTS: npt.NDArray[np.intp] = np.zeros(0, np.intp)
_START_0: npt.NDArray[np.intp] = np.zeros(1, np.intp)
# The kernel reads the text as native-endian code points.
_UTF32 = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"
# Labels a match holds without a second kernel call (p99 ~140 on the device sessions).
_MATCH_BUFFER = 256


@dataclass(frozen=True, slots=True)
class Match:
    """Labels matched by the text typed so far.

    Attributes
    ----------
    text : str
        The normalised text that was matched.
    label_ids : ndarray of int32, shape (m,)
        Matched labels, each once (read-only; may be a view of the index).
    strengths : ndarray of float32, shape (m,)
        Strength in ``(0, 1]`` of each label (1.0 = the text ends with a whole keyword).
    kinds : ndarray of int8, shape (m,)
        :class:`MatchKind` of each label's strongest match.
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


def _kernels() -> ModuleType:
    """The compiled kernels, ready to call (imports numba on first use)."""
    from keyword_index import _kernels as kernels

    kernels.load()
    return kernels


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
        self._normalizer = Normalizer(language, self.config)
        cfg = self.config
        # Strength of an occurrence ending d characters before the end, d = 0, 1, ...,
        # then the floor for any larger d. Rounded to float32 (as stored in a Match), so
        # that comparisons with the float32 prefix strengths decide as on the arrays.
        n_decay = math.ceil(cfg.earlier_tau * math.log(cfg.earlier_peak / cfg.earlier_floor))
        self._decay: npt.NDArray[np.float32] = np.asarray([1.0] + [
            max(cfg.earlier_peak * math.exp(-d / cfg.earlier_tau), cfg.earlier_floor)
            for d in range(1, n_decay + 2)
        ] + [cfg.earlier_floor], np.float32)
        self._build_automaton()
        self._match_kernel = _kernels().match_kernel

    def _build_automaton(self) -> None:
        """The trie of the keywords with Aho–Corasick links and, on each node that is a
        typed prefix that counts, its prefix entry; as the arrays of the match kernel."""
        cfg = self.config
        min_prefix = cfg.min_prefix(self.language)
        children: list[dict[int, int]] = [{}]
        depth = [0]
        keyword_at = [-1]  # the keyword ending at each node
        entries: dict[int, dict[int, float]] = {}  # node -> label -> best prefix strength
        for k, (keyword, labels) in enumerate(zip(self.keywords, self.keyword_labels,
                                                  strict=True)):
            size = len(keyword)
            node = 0
            for p, char in enumerate(keyword):
                if p >= min_prefix:  # keyword[:p] is a proper prefix that counts
                    strength = cfg.prefix_base + cfg.prefix_gain * p / size
                    per_label = entries.setdefault(node, {})
                    for label in labels:
                        if per_label.get(label, 0.0) < strength:
                            per_label[label] = strength
                code = ord(char)
                child = children[node].get(code)
                if child is None:
                    child = len(children)
                    children[node][code] = child
                    children.append({})
                    depth.append(p + 1)
                    keyword_at.append(-1)
                node = child
            if size:
                keyword_at[node] = k  # a repeated keyword: the last one, as a dict would
        n_nodes = len(children)
        fail = [0] * n_nodes
        output = [-1] * n_nodes
        queue = deque([0])
        while queue:  # breadth first: a node's failure target is shallower
            node = queue.popleft()
            for code, child in children[node].items():
                target = 0
                if node:
                    f = fail[node]
                    while f and code not in children[f]:
                        f = fail[f]
                    target = children[f].get(code, 0)
                fail[child] = target
                output[child] = child if keyword_at[child] >= 0 else output[target]
                queue.append(child)
        rows: list[list[int]] = []
        edges: list[tuple[int, int]] = []
        labels_out: list[int] = []
        strengths_out: list[float] = []
        for node in range(n_nodes):
            row = [-1] * N_NODE_COLUMNS
            row[NODE_EDGE_LO] = len(edges)
            edges.extend(sorted(children[node].items()))
            row[NODE_EDGE_HI] = len(edges)
            row[NODE_FAIL], row[NODE_OUTPUT], row[NODE_DEPTH] = (
                fail[node], output[node], depth[node])
            row[NODE_LABELS_LO] = len(labels_out)
            if keyword_at[node] >= 0:
                labels_out.extend(self.keyword_labels[keyword_at[node]])
            row[NODE_LABELS_HI] = len(labels_out)
            strengths_out.extend([0.0] * (len(labels_out) - len(strengths_out)))
            entry = entries.get(node)
            if entry is not None:
                row[NODE_ENTRY_LO] = len(labels_out)
                for label in sorted(entry):
                    labels_out.append(label)
                    strengths_out.append(entry[label])
                row[NODE_ENTRY_HI] = len(labels_out)
            rows.append(row)
        if labels_out and min(labels_out) < 0:
            raise KeywordIndexError(f"label ids should be >= 0, got {min(labels_out)}")
        header = np.zeros(TABLE_HEADER, np.int32)
        header[[HEADER_NODES, HEADER_EDGES, HEADER_REFS, HEADER_LABEL_BOUND,
                HEADER_WORD_STARTS]] = (n_nodes, len(edges), len(labels_out),
                                        max(labels_out, default=-1) + 1,
                                        self._normalizer.word_boundaries)
        self._table = _readonly(np.concatenate([
            header, np.asarray(rows, np.int32).ravel(), np.asarray(edges, np.int32).ravel(),
            np.asarray(labels_out, np.int32)]).astype(np.int32))
        self._values = _readonly(np.concatenate([
            np.asarray(strengths_out, np.float32), self._decay]).astype(np.float32))
        self._n_prefixes = len(entries)

    @property
    def n_prefixes(self) -> int:
        """Number of distinct keyword prefixes the trie answers for."""
        return self._n_prefixes

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
        norm, starts = self._normalizer.split_positions(text)
        if not norm:
            return Match(norm, _EMPTY_I32, _EMPTY_F32, _EMPTY_I8)
        codes = np.frombuffer(norm.encode(_UTF32), np.uint32)
        if starts is None:
            positions = _NO_STARTS
        elif len(starts) == 1:  # one word, at 0
            positions = _START_0
        else:
            positions = np.array(starts, np.intp)
        size = _MATCH_BUFFER
        while True:  # more labels than the buffers hold is rare: then again, large enough
            labels = np.empty(size, np.int32)
            strengths = np.empty(size, np.float32)
            kinds = np.empty(size, np.int8)
            m = self._match_kernel(codes, positions, self._table, self._values, labels,
                                   strengths, kinds)
            if m <= size:
                break
            size = m
        if m == 0:
            return Match(norm, _EMPTY_I32, _EMPTY_F32, _EMPTY_I8)
        return Match(norm, labels[:m], strengths[:m], kinds[:m])

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
