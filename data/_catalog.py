"""The label and keyword catalog, derived from Unicode CLDR emoji annotations.

Source: the npm package ``emojibase-data`` (MIT), whose per-locale ``data.json`` carries,
for every emoji, its CLDR short name (``label``) and CLDR keywords (``tags``) in that
locale. The tarball is fetched once with ``npm pack`` into a cache under ``var/``,
verified against a pinned sha256, and read straight from the tarball.

A **label** is one emoji concept that people send stickers for ("folded hands":
thanks/please; "face with tears of joy": laughing; "sleeping face": sleepy). Labels are
the base emoji of every group except flags, skin-tone components and regional
indicators. A label's **keywords** in a language are its CLDR short name and CLDR
keywords in that language. Keywords shared by too many labels of one language ("face",
"顔", "hand") say nothing about which sticker fits and are dropped
(``max_labels_per_keyword``).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from data._artifact import file_sha256, publish_artifact, read_manifest
from data._errors import ArtifactError, CatalogError
from data._schemas import read_table, validate_frame

__all__ = [
    "CATALOG_PACKAGE",
    "CATALOG_SHA256",
    "CATALOG_VERSION",
    "DEFAULT_LANGUAGES",
    "Catalog",
    "build_catalog",
    "catalog_from_tarball",
    "ensure_catalog",
    "fetch_tarball",
    "load_catalog",
]

CATALOG_PACKAGE = "emojibase-data"
CATALOG_VERSION = "17.0.0"
# sha256 of the npm tarball emojibase-data-17.0.0.tgz, checked after every fetch.
CATALOG_SHA256 = "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a"
DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "ja", "zh-hant", "th", "ko", "zh", "es")
# emojibase group ids: 2 = component (skin tones, hair), 9 = flags; None = regional letters.
_EXCLUDED_GROUPS = {2, 9, None}
_GROUP_NAMES = {
    0: "smileys-emotion",
    1: "people-body",
    3: "animals-nature",
    4: "food-drink",
    5: "travel-places",
    6: "activities",
    7: "objects",
    8: "symbols",
}


@dataclass(frozen=True)
class Catalog:
    """Labels and their keywords per language.

    Attributes
    ----------
    labels : polars.DataFrame
        Schema ``labels`` (one row per label).
    keywords : polars.DataFrame
        Schema ``keywords`` (one row per label × language × keyword).
    source : dict
        ``package``, ``version``, ``sha256``, ``languages``, ``max_labels_per_keyword``.
    """

    labels: pl.DataFrame
    keywords: pl.DataFrame
    source: dict[str, Any]

    @property
    def languages(self) -> list[str]:
        """Languages that have at least one keyword, sorted."""
        return sorted(self.keywords["language"].unique().to_list())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def fetch_tarball(
    cache_dir: str | Path, version: str = CATALOG_VERSION, sha256: str | None = CATALOG_SHA256
) -> Path:
    """Fetch ``emojibase-data@version`` with ``npm pack`` into ``cache_dir`` (once).

    Returns the tarball path. An existing tarball with the right checksum is reused.

    Raises
    ------
    CatalogError
        If npm is not installed, the fetch fails, or the checksum does not match.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{CATALOG_PACKAGE}-{version}.tgz"
    if target.is_file() and (sha256 is None or file_sha256(target) == sha256):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise CatalogError(
            "npm is required to fetch the keyword catalog (the emojibase-data package); "
            "install Node.js/npm or place the tarball at " + str(target)
        )
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        proc = subprocess.run(
            [npm, "pack", f"{CATALOG_PACKAGE}@{version}", "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        fetched = Path(tmp) / f"{CATALOG_PACKAGE}-{version}.tgz"
        if proc.returncode != 0 or not fetched.is_file():
            raise CatalogError(
                f"npm pack {CATALOG_PACKAGE}@{version} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}"
            )
        digest = file_sha256(fetched)
        if sha256 is not None and digest != sha256:
            raise CatalogError(
                f"{CATALOG_PACKAGE}@{version}: sha256 {digest} does not match the pinned "
                f"{sha256}; refusing to use it"
            )
        fetched.replace(target)
    return target


def _read_locale(tar: tarfile.TarFile, language: str) -> list[dict[str, Any]]:
    try:
        member = tar.getmember(f"package/{language}/data.json")
    except KeyError as exc:
        raise CatalogError(f"{CATALOG_PACKAGE} has no data for language {language!r}") from exc
    fh = tar.extractfile(member)
    if fh is None:
        raise CatalogError(f"cannot read package/{language}/data.json from the tarball")
    data: list[dict[str, Any]] = json.load(io.TextIOWrapper(fh, encoding="utf-8"))
    return data


def catalog_from_tarball(
    tarball: str | Path,
    languages: tuple[str, ...] | list[str] = DEFAULT_LANGUAGES,
    max_labels_per_keyword: int = 12,
) -> Catalog:
    """Derive labels and keywords from an ``emojibase-data`` tarball.

    Parameters
    ----------
    tarball : str or Path
        The ``.tgz`` fetched by :func:`fetch_tarball`.
    languages : sequence of str
        emojibase locale codes (``en``, ``ja``, ``zh-hant``, ``th``, ``ko`` ...).
    max_labels_per_keyword : int
        Drop a keyword of a language if it belongs to more labels than this.

    Returns
    -------
    Catalog
    """
    if max_labels_per_keyword < 1:
        raise CatalogError(f"max_labels_per_keyword={max_labels_per_keyword} should be >= 1")
    with tarfile.open(tarball, "r:gz") as tar:
        base = _read_locale(tar, "en")
        labels: list[dict[str, Any]] = []
        hex_to_id: dict[str, int] = {}
        seen_slugs: set[str] = set()
        for entry in sorted(base, key=lambda e: (e.get("order", 1 << 30), e["hexcode"])):
            group = entry.get("group")
            if group in _EXCLUDED_GROUPS or not entry.get("label"):
                continue
            slug = _slug(entry["label"])
            if not slug or slug in seen_slugs:
                continue
            seen_slugs.add(slug)
            hex_to_id[entry["hexcode"]] = len(labels)
            labels.append(
                {
                    "label_id": len(labels),
                    "label": slug,
                    "emoji": entry["emoji"],
                    "name_en": entry["label"],
                    "group": _GROUP_NAMES[int(group or 0)],
                }
            )
        rows: list[tuple[int, str, str, str]] = []
        for language in languages:
            per_keyword: dict[str, set[int]] = defaultdict(set)
            candidates: list[tuple[int, str, str]] = []
            for entry in _read_locale(tar, language):
                label_id = hex_to_id.get(entry.get("hexcode", ""))
                if label_id is None:
                    continue
                words = [("name", entry.get("label") or "")]
                words += [("tag", t) for t in entry.get("tags") or []]
                for kind, word in words:
                    word = word.strip()
                    if not word:
                        continue
                    per_keyword[word.casefold()].add(label_id)
                    candidates.append((label_id, word, kind))
            seen: set[tuple[int, str]] = set()
            for label_id, word, kind in candidates:
                key = (label_id, word.casefold())
                if key in seen or len(per_keyword[word.casefold()]) > max_labels_per_keyword:
                    continue
                seen.add(key)
                rows.append((label_id, language, word, kind))
    labels_df = validate_frame(
        pl.DataFrame(
            labels,
            schema={
                "label_id": pl.Int32,
                "label": pl.String,
                "emoji": pl.String,
                "name_en": pl.String,
                "group": pl.String,
            },
        ),
        "labels",
        tarball,
    )
    keywords_df = validate_frame(
        pl.DataFrame(
            rows,
            schema={
                "label_id": pl.Int32,
                "language": pl.String,
                "keyword": pl.String,
                "kind": pl.String,
            },
            orient="row",
        ),
        "keywords",
        tarball,
    )
    source = {
        "package": CATALOG_PACKAGE,
        "version": CATALOG_VERSION,
        "sha256": file_sha256(tarball),
        "license": "MIT (emojibase-data); annotations from Unicode CLDR (Unicode License v3)",
        "languages": list(languages),
        "max_labels_per_keyword": max_labels_per_keyword,
    }
    return Catalog(labels_df, keywords_df, source)


def build_catalog(
    cache_dir: str | Path,
    catalog_dir: str | Path,
    languages: tuple[str, ...] | list[str] = DEFAULT_LANGUAGES,
    max_labels_per_keyword: int = 12,
) -> Path:
    """Fetch the tarball and publish the catalog as an artifact directory."""
    tarball = fetch_tarball(cache_dir)
    catalog = catalog_from_tarball(tarball, languages, max_labels_per_keyword)
    catalog_dir = Path(catalog_dir)
    with publish_artifact(
        catalog_dir,
        kind="catalog",
        parameters=catalog.source,
        input_fingerprint=catalog.source["sha256"][:16],
        replace=True,
        update_latest=False,
    ) as writer:
        (writer.path / "labels").mkdir()
        (writer.path / "keywords").mkdir()
        catalog.labels.write_parquet(writer.path / "labels" / "part-00000.parquet")
        catalog.keywords.write_parquet(writer.path / "keywords" / "part-00000.parquet")
        writer.metrics = {
            "n_labels": catalog.labels.height,
            "n_keywords": catalog.keywords.height,
            "keywords_per_language": dict(
                catalog.keywords.group_by("language").len().sort("language").iter_rows()
            ),
        }
    return catalog_dir


def load_catalog(catalog_dir: str | Path) -> Catalog:
    """Load a catalog artifact (or a dataset directory, which embeds the catalog)."""
    catalog_dir = Path(catalog_dir)
    manifest = read_manifest(catalog_dir)
    source = (
        manifest.parameters if manifest.kind == "catalog" else manifest.extra.get("catalog", {})
    )
    return Catalog(
        read_table(catalog_dir, "labels"), read_table(catalog_dir, "keywords"), dict(source)
    )


def ensure_catalog(var: str | Path) -> Path:
    """Return the catalog directory under ``var``, building it if absent or invalid."""
    var = Path(var)
    catalog_dir = var / "catalog" / f"{CATALOG_PACKAGE}-{CATALOG_VERSION}"
    try:
        read_manifest(catalog_dir, kind="catalog")
        return catalog_dir
    except ArtifactError:
        return build_catalog(var / "cache", catalog_dir)
