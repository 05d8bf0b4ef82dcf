"""Packing a device bundle: the suggester's files plus an index, as a reproducible zip."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

__all__ = ["BUNDLE_INDEX", "bundle_etag", "pack_bundle"]

_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed member timestamps: same versions, same bytes
BUNDLE_INDEX = "bundle-index.json"  # versions and the sha256 of every file in the zip


def bundle_etag(key: tuple[Any, ...]) -> str:
    """The strong ETag of a bundle identified by (stage-1, reranker, cluster, language)."""
    return '"' + hashlib.sha256("/".join(map(str, key)).encode()).hexdigest()[:32] + '"'


def pack_bundle(files: Mapping[str, bytes], index: Mapping[str, Any]) -> bytes:
    """A deflated zip of ``files`` plus :data:`BUNDLE_INDEX` (``index`` with every file's
    sha256 under ``files``); the same inputs give the same bytes."""
    manifest = {**index, "files": {name: hashlib.sha256(data).hexdigest()
                                   for name, data in sorted(files.items())}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*sorted(files.items()),
                           (BUNDLE_INDEX, json.dumps(manifest, indent=2).encode())]:
            archive.writestr(zipfile.ZipInfo(name, _ZIP_EPOCH), data)
    return buffer.getvalue()
