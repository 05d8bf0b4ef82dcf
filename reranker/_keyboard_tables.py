"""The keyboard's tables, built from the downloaded bundle and the phone's own packages.

A phone computes its sticker row with what it downloaded and what it holds, nothing else:

- the cluster's bundle (``GET /v1/clusters/{c}/bundle?language=``, the zip of
  ``Suggester.bundle``): the cluster's candidate packages with their stickers, labels,
  premium flags and characters, every package's stage-1 factor and every label's
  embedding (``catalog.npz``), the row settings and ALS λ/α (``bundle.json``) and the
  keyword index of the keyboard's language (``keywords-<lang>.kwi``);
- the packages the phone holds or has sent from (:class:`PackageContent`: a sticker
  package on a phone *is* its stickers and their labels; kept in the keyboard's store);
- the weights of the model it downloaded.

:func:`device_context` turns these into a :class:`reranker.RankingContext` whose
catalogue is the device's own (the cluster's packages and the phone's, in catalogue
order), so that :class:`reranker.Suggester` — the server's ``/v1/suggest`` code — ranks
the phone's keystrokes, and the task's row functions train on them, with the same code.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from candidate_gen import Stage1Artifact
from data import Dataset
from keyword_index import CandidateFeaturizer, KeywordIndex, MultilingualIndex
from reranker._artifact import RerankerArtifact
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._model import ParameterLayout, rank_prior
from reranker._onnx import export_onnx

__all__ = ["BundleData", "PackageContent", "device_context", "device_reranker", "read_bundle"]

_INDEX = "bundle-index.json"  # serving's BUNDLE_INDEX: versions and every file's sha256
_FILES = ("candidates.npz", "catalog.npz", "stickers.json", "bundle.json")


@dataclass(frozen=True)
class PackageContent:
    """A sticker package as it sits on the phone (bought, downloaded or by subscription).

    Attributes
    ----------
    package_id : int
    premium : bool
    character : str
    sticker_ids : ndarray of int32, shape (n,)
        In position order.
    label_ptr : ndarray of int32, shape (n + 1,)
    label_ids : ndarray of int32, shape (L,)
        CSR of each sticker's labels.
    """

    package_id: int
    premium: bool
    character: str
    sticker_ids: np.ndarray
    label_ptr: np.ndarray
    label_ids: np.ndarray

    def rows(self) -> list[list[int]]:
        """``[[sticker_id, *label_ids], ...]`` in position order (the bundle's form)."""
        return [[int(s), *self.label_ids[self.label_ptr[i]:self.label_ptr[i + 1]].tolist()]
                for i, s in enumerate(self.sticker_ids.tolist())]

    @classmethod
    def of_rows(cls, package_id: int, premium: bool, character: str,
                rows: list[list[int]]) -> PackageContent:
        """From ``[[sticker_id, *label_ids], ...]`` in position order."""
        ptr = np.zeros(len(rows) + 1, np.int32)
        np.cumsum([len(r) - 1 for r in rows], out=ptr[1:])
        flat = [x for r in rows for x in r[1:]]
        return cls(int(package_id), bool(premium), str(character),
                   np.array([r[0] for r in rows], np.int32), ptr, np.array(flat, np.int32))


@dataclass(frozen=True)
class BundleData:
    """A verified, parsed bundle (read-only; one per bundle, shared by whoever holds it).

    Attributes
    ----------
    etag : str
        sha256 of the zip's bytes (a process shares parsed bundles by it).
    stage1_version, reranker_version : str
    cluster_id : int
    language : str
    meta : dict
        ``bundle.json``.
    candidate_ids : ndarray of int32, shape (n,)
        The cluster's packages in stage-1 rank order.
    candidate_premium : ndarray of bool, shape (n,)
    candidates : dict
        Package id → ``[[sticker_id, *label_ids], ...]``.
    characters : dict
        Package id → character.
    labels : dict
        Label id → (slug, emoji) of the labels the candidates carry.
    factor_package_ids : ndarray of int32, shape (n_s1,)
    factors : ndarray of float32, shape (n_s1, d)
        Every package's stage-1 factor.
    label_embeddings : ndarray of float32, shape (n_labels, d)
    width : int
        The stage-1 lists' width (the rank prior of an unlisted package).
    n_clusters : int
    index : KeywordIndex
    """

    etag: str
    stage1_version: str
    reranker_version: str
    cluster_id: int
    language: str
    meta: dict[str, Any]
    candidate_ids: np.ndarray
    candidate_premium: np.ndarray
    candidates: dict[int, list[list[int]]]
    characters: dict[int, str]
    labels: dict[int, tuple[str, str]]
    factor_package_ids: np.ndarray
    factors: np.ndarray
    label_embeddings: np.ndarray
    width: int
    n_clusters: int
    index: KeywordIndex
    gram: np.ndarray = field(repr=False)
    _shared: Any = field(default=None, repr=False, compare=False)  # keeps shared parts alive

    @property
    def layout(self) -> ParameterLayout:
        """The row model's layout the bundle was built for."""
        return ParameterLayout(int(self.meta["n_factors"]), len(self.meta["keyword_features"]),
                               len(self.meta["history_features"]))


# Simulated devices in one process share the parsed, read-only form of identical bytes
# while any holds it (a phone parses its own copy; the result is the same): whole bundles
# by their sha256, and the parts every bundle of a version repeats (the keyword index of
# a language, the factors and label embeddings) by theirs.
_PARSED: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_PARSED_LOCK = threading.Lock()


def _shared(key: str, build: Callable[[], Any]) -> Any:
    with _PARSED_LOCK:
        got = _PARSED.get(key)
    if got is None:
        got = build()
        with _PARSED_LOCK:
            got = _PARSED.setdefault(key, got)
    return got


class _Arrays:
    """Read-only arrays shared by whoever parsed the same bytes."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        for arr in arrays.values():
            arr.flags.writeable = False
        self.arrays = arrays


def read_bundle(raw: bytes) -> BundleData:
    """Parse and verify a bundle zip (every file's sha256 against its index).

    Simulated devices in one process share the parsed, read-only result of identical
    bytes while any of them holds it (a phone parses its own copy; the result is the
    same).

    Raises
    ------
    RerankerInputError
        Not a bundle zip, a file missing or not matching its checksum.
    """
    etag = hashlib.sha256(raw).hexdigest()
    with _PARSED_LOCK:
        cached = _PARSED.get(etag)
    if isinstance(cached, BundleData):
        return cached
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            index = json.loads(archive.read(_INDEX))
            files = {name: archive.read(name) for name in index["files"]}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RerankerInputError(f"not a device bundle ({exc})") from exc
    for name, digest in index["files"].items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise RerankerInputError(f"bundle file {name} does not match its sha256")
    language = str(index["language"])
    missing = [n for n in (*_FILES, f"keywords-{language}.kwi") if n not in files]
    if missing:
        raise RerankerInputError(f"the bundle lacks {missing} (a server older than the "
                                 "keyboard app)")
    meta = json.loads(files["bundle.json"])
    with np.load(io.BytesIO(files["candidates.npz"])) as cand, \
            np.load(io.BytesIO(files["catalog.npz"])) as cat:
        candidate_ids = cand["package_ids"].astype(np.int32)
        arrays = {k: cat[k] for k in cat.files}
    stickers = json.loads(files["stickers.json"])

    def catalogue() -> _Arrays:
        f = np.ascontiguousarray(arrays["factors"], np.float32)
        return _Arrays({
            "factors": f, "label_embeddings": np.ascontiguousarray(
                arrays["label_embeddings"], np.float32),
            "factor_package_ids": arrays["factor_package_ids"].astype(np.int32),
            # the fold-in's Gram matrix, as RowTask computes it from the same factors
            "gram": f.T.astype(np.float64) @ f.astype(np.float64)})

    digest = hashlib.sha256(b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in (
        "factors", "label_embeddings", "factor_package_ids"))).hexdigest()
    holder = _shared("catalog:" + digest, catalogue)
    shared = holder.arrays
    kwi = files[f"keywords-{language}.kwi"]
    keywords = _shared("kwi:" + hashlib.sha256(kwi).hexdigest(),
                       lambda: KeywordIndex.from_bytes(kwi, f"bundle keywords-{language}.kwi"))
    data = BundleData(
        etag=etag, stage1_version=str(index["stage1"]),
        reranker_version=str(index.get("reranker", "")), cluster_id=int(index["cluster_id"]),
        language=language, meta=meta, candidate_ids=candidate_ids,
        candidate_premium=arrays["candidate_premium"].astype(bool),
        candidates={int(p): rows for p, rows in stickers["packages"].items()},
        characters={int(p): str(c) for p, c in stickers.get("characters", {}).items()},
        labels={int(i): (str(v[0]), str(v[1])) for i, v in stickers["labels"].items()},
        factor_package_ids=shared["factor_package_ids"], factors=shared["factors"],
        label_embeddings=shared["label_embeddings"],
        width=int(arrays["candidate_width"]), n_clusters=int(arrays["n_clusters"]),
        index=keywords, gram=shared["gram"], _shared=(holder, keywords))
    data.candidate_ids.flags.writeable = False
    return cast(BundleData, _shared(etag, lambda: data))


class _BundleStage1:
    """What a bundle says of its stage-1 version: what :class:`RankingContext` and
    :class:`StickerCatalog` read of a :class:`candidate_gen.Stage1Artifact` (version,
    cluster count, package ids and factors) — the device has no other part of it."""

    def __init__(self, bundle: BundleData) -> None:
        self.version = bundle.stage1_version
        self.n_clusters = bundle.n_clusters
        self.package_ids = bundle.factor_package_ids
        self.package_factors = bundle.factors
        self.directory = Path(f"bundle-{bundle.cluster_id}-{bundle.language}")


class _DeviceTables:
    """The device's catalogue tables (``packages``, ``stickers``, ``labels``) as the
    :class:`data.Dataset` interface the ranking code reads them through."""

    def __init__(self, tables: dict[str, pl.DataFrame], root: Path) -> None:
        self._tables = tables
        self.root = root

    def table(self, name: str) -> pl.DataFrame:
        if name not in self._tables:
            raise RerankerInputError(f"a device has no {name!r} table (it has "
                                     f"{', '.join(self._tables)})")
        return self._tables[name]

    def has(self, name: str) -> bool:
        return name in self._tables


def device_context(bundle: BundleData, packages: list[PackageContent]) -> RankingContext:
    """The ranking context of one phone: its cluster's bundle and its own packages.

    The catalogue is the cluster's candidate packages and ``packages`` (the phone's;
    duplicates of candidates are ignored), ordered as the server's catalogue (by package
    id, stickers by position), so every walk and tie-break is the server's.

    Raises
    ------
    RerankerInputError
        A package the phone holds has a sticker id another package also has.
    """
    rows: dict[int, list[list[int]]] = dict(bundle.candidates)
    premium = {int(p): bool(x) for p, x in zip(bundle.candidate_ids.tolist(),
                                               bundle.candidate_premium.tolist(), strict=True)}
    character = dict(bundle.characters)
    for pkg in packages:
        if pkg.package_id not in rows:
            rows[pkg.package_id] = pkg.rows()
            premium[pkg.package_id] = pkg.premium
            character[pkg.package_id] = pkg.character
    ids = sorted(rows)
    sticker_rows = [(r[0], p, pos, r[1:]) for p in ids for pos, r in enumerate(rows[p])]
    stickers = pl.DataFrame(
        {"sticker_id": [r[0] for r in sticker_rows], "package_id": [r[1] for r in sticker_rows],
         "position": [r[2] for r in sticker_rows], "label_ids": [r[3] for r in sticker_rows]},
        schema={"sticker_id": pl.Int32, "package_id": pl.Int32, "position": pl.Int32,
                "label_ids": pl.List(pl.Int32)})
    if stickers["sticker_id"].n_unique() != stickers.height:
        raise RerankerInputError("the phone's packages repeat a sticker id")
    tables = {
        "stickers": stickers,
        "packages": pl.DataFrame({"package_id": ids, "character": [character.get(p, "")
                                                                   for p in ids],
                                  "premium": [premium.get(p, False) for p in ids]},
                                 schema={"package_id": pl.Int32, "character": pl.Utf8,
                                         "premium": pl.Boolean}),
        "labels": pl.DataFrame({"label_id": list(bundle.labels),
                                "label": [v[0] for v in bundle.labels.values()],
                                "emoji": [v[1] for v in bundle.labels.values()]},
                               schema={"label_id": pl.Int32, "label": pl.Utf8,
                                       "emoji": pl.Utf8}),
    }
    c, width = bundle.cluster_id, bundle.width
    d = bundle.factors.shape[1]
    n = bundle.candidate_ids.size
    cand_ids = np.full((bundle.n_clusters, width), -1, np.int32)
    cand_ids[c, :n] = bundle.candidate_ids
    package_row = {int(p): i for i, p in enumerate(bundle.factor_package_ids.tolist())}
    # only the phone's cluster row is ever read (np.zeros pages are not touched)
    cand_factors = np.zeros((bundle.n_clusters, width, d), np.float32)
    known = np.array([package_row.get(int(p), -1) for p in bundle.candidate_ids], np.int64)
    cand_factors[c, :n][known >= 0] = bundle.factors[known[known >= 0]]
    return RankingContext(
        stage1=cast(Stage1Artifact, _BundleStage1(bundle)),
        dataset=cast(Dataset, _DeviceTables(tables, Path(f"device-bundle-{c}"))),
        candidate_ids=cand_ids, candidate_factors=cand_factors, candidate_mask=cand_ids >= 0,
        prior=rank_prior(np.arange(width)),
        indexes=MultilingualIndex({bundle.language: bundle.index}),
        featurizer=CandidateFeaturizer(stickers, bundle.label_embeddings,
                                       bundle.factor_package_ids, bundle.factors,
                                       cache_size=1),
        package_row=package_row, label_embeddings=bundle.label_embeddings)


def device_reranker(bundle: BundleData, parameters: np.ndarray, version: int,
                    layout: ParameterLayout) -> RerankerArtifact:
    """The downloaded weights (P,) as the reranker version the phone ranks with: the
    ONNX export of the same weights (as the server publishes them), the bundle's row
    settings."""
    from data import Manifest

    theta = np.asarray(parameters, np.float32)
    if theta.shape != (layout.n_parameters,):
        raise RerankerInputError(f"the model has {theta.shape} parameters, the bundle's "
                                 f"layout {layout.n_parameters}")
    name = f"device-{version}"
    model = export_onnx(theta, layout, version=name).SerializeToString()
    manifest = Manifest(path=Path(name) / "manifest.json", kind="reranker", version=name,
                        created_at="", parameters={}, input_fingerprint="", metrics={},
                        files={})
    return RerankerArtifact(directory=Path(name), manifest=manifest, model_bytes=model,
                            sha256=hashlib.sha256(model).hexdigest(), weights=theta,
                            layout=layout,
                            info={"stage1_version": bundle.stage1_version,
                                  "row": bundle.meta.get("row") or {}},
                            privacy={})
