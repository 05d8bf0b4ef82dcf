"""Versioned artifact directories: manifest last, checksums, atomic publish, ``latest``.

Every stage writes its output into a fresh temporary directory next to the final one,
writes ``manifest.json`` last (version, created_at, parameters, input fingerprint,
metrics, every file with its size and sha256), then renames the directory into place
in one ``os.rename``. A reader trusts a directory only if its manifest exists and every
listed file matches its checksum, so a crash mid-write never yields a half artifact
that looks whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data._errors import ArtifactError

__all__ = [
    "MANIFEST",
    "VAR_ENV",
    "ArtifactWriter",
    "Manifest",
    "file_sha256",
    "fingerprint",
    "list_versions",
    "new_version",
    "publish_artifact",
    "read_manifest",
    "resolve_artifact",
    "set_latest",
    "var_root",
]

MANIFEST = "manifest.json"
LATEST = "LATEST"
VAR_ENV = "STICKERS_VAR"
FORMAT_VERSION = 1


def var_root(override: str | Path | None = None) -> Path:
    """The root of generated data and artifacts.

    ``override`` (a CLI flag) wins over the ``STICKERS_VAR`` environment variable,
    which wins over ``./var``.
    """
    if override is not None:
        return Path(override)
    env = os.environ.get(VAR_ENV)
    return Path(env) if env else Path("var")


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable inputs (configs, input manifests' hashes)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def new_version(now: datetime | None = None, salt: str = "") -> str:
    """A sortable version name: UTC timestamp to the microsecond plus a short hash."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{fingerprint(stamp, salt, uuid.uuid4().hex)[:6]}"


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of an artifact directory."""

    path: Path
    kind: str
    version: str
    created_at: str
    parameters: dict[str, Any]
    input_fingerprint: str
    metrics: dict[str, Any]
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        """The artifact directory this manifest describes."""
        return self.path.parent

    def file(self, name: str) -> Path:
        """Absolute path of a listed file; raises if the manifest does not list it."""
        if name not in self.files:
            raise ArtifactError(
                f"{self.directory}: artifact has no file {name!r}; it lists "
                f"{', '.join(sorted(self.files)) or 'no files'}"
            )
        return self.directory / name


class ArtifactWriter:
    """Collects files in a temporary directory; :func:`publish_artifact` manages it.

    Attributes
    ----------
    path : Path
        The temporary directory to write files into.
    metrics : dict
        Metrics to record in the manifest (JSON-serialisable).
    extra : dict
        Additional top-level manifest entries.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as pretty JSON to ``name`` inside the artifact."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        return target


def _listed_files(directory: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
    return files


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def publish_artifact(
    destination: str | Path,
    *,
    kind: str,
    parameters: Mapping[str, Any],
    input_fingerprint: str = "",
    replace: bool = False,
    update_latest: bool = True,
) -> Iterator[ArtifactWriter]:
    """Write an artifact into a temporary directory, then publish it atomically.

    Parameters
    ----------
    destination : str or Path
        The final directory, e.g. ``var/stage1/<version>``. Its parent is created.
    kind : str
        What the artifact is (``dataset``, ``stage1``, ``reranker`` ...).
    parameters : mapping
        The configuration that produced it (JSON-serialisable).
    input_fingerprint : str
        A hash of the inputs (see :func:`fingerprint`).
    replace : bool
        Allow replacing an existing destination (datasets are rebuilt in place); the
        old directory is removed only after the new one is in place.
    update_latest : bool
        Point ``<parent>/LATEST`` at this version after publishing.

    Yields
    ------
    ArtifactWriter
        Write files under ``writer.path``; set ``writer.metrics``.
    """
    destination = Path(destination)
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    if destination.exists() and not replace:
        raise ArtifactError(f"{destination}: already exists; versions are never overwritten")
    tmp = parent / f".tmp-{destination.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writer = ArtifactWriter(tmp)
    try:
        yield writer
        manifest = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "version": destination.name,
            "created_at": datetime.now(UTC).isoformat(),
            "parameters": dict(parameters),
            "input_fingerprint": input_fingerprint,
            "metrics": writer.metrics,
            "files": _listed_files(tmp),
            **writer.extra,
        }
        # The manifest is written last, so its presence means every file is complete.
        manifest_tmp = tmp / (MANIFEST + ".part")
        with open(manifest_tmp, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(manifest_tmp, tmp / MANIFEST)
        old: Path | None = None
        if destination.exists():
            old = parent / f".old-{destination.name}-{uuid.uuid4().hex[:8]}"
            os.rename(destination, old)
        os.rename(tmp, destination)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if update_latest:
            set_latest(parent, destination.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def set_latest(kind_dir: str | Path, version: str) -> None:
    """Atomically point ``<kind_dir>/LATEST`` at ``version`` (which must be valid)."""
    kind_dir = Path(kind_dir)
    read_manifest(kind_dir / version, verify=False)
    tmp = kind_dir / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(version + "\n")
    os.replace(tmp, kind_dir / LATEST)


def list_versions(kind_dir: str | Path) -> list[str]:
    """Published versions under ``kind_dir`` (those with a manifest), oldest first."""
    kind_dir = Path(kind_dir)
    if not kind_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in kind_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


def resolve_artifact(kind_dir: str | Path, version: str = "latest") -> Path:
    """Directory of ``version`` under ``kind_dir``; ``latest`` follows the pointer.

    Raises
    ------
    ArtifactError
        If there is no such version or no ``LATEST`` pointer.
    """
    kind_dir = Path(kind_dir)
    if version == "latest":
        pointer = kind_dir / LATEST
        if not pointer.is_file():
            raise ArtifactError(
                f"{kind_dir}: no published version (no {LATEST} pointer); build one first"
            )
        version = pointer.read_text().strip()
    path = kind_dir / version
    if not path.is_dir():
        known = ", ".join(list_versions(kind_dir)[-5:]) or "none"
        raise ArtifactError(f"{path}: no such version (latest known: {known})")
    return path


def read_manifest(
    directory: str | Path, *, verify: bool = True, kind: str | None = None,
    checksums: bool = True,
) -> Manifest:
    """Read and (by default) verify an artifact directory's manifest.

    Parameters
    ----------
    directory : str or Path
        The artifact directory.
    verify : bool
        Check that every listed file exists with the listed size and sha256.
    kind : str, optional
        Refuse the artifact unless its manifest says this kind.
    checksums : bool
        With ``verify``, also compare sha256 sums (reads every file). Without, only
        existence and sizes are checked now; call :func:`verify_checksums` before
        trusting what was read.

    Raises
    ------
    ArtifactError
        If the manifest is missing or malformed, or a file is missing or altered.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{directory}: no {MANIFEST}; the artifact is partial or not an artifact"
        )
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(
            path=path,
            kind=raw["kind"],
            version=raw["version"],
            created_at=raw["created_at"],
            parameters=raw.get("parameters", {}),
            input_fingerprint=raw.get("input_fingerprint", ""),
            metrics=raw.get("metrics", {}),
            files=raw["files"],
            extra={
                k: v
                for k, v in raw.items()
                if k
                not in {
                    "kind",
                    "version",
                    "created_at",
                    "parameters",
                    "input_fingerprint",
                    "metrics",
                    "files",
                }
            },
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: malformed manifest ({exc!r})") from exc
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{directory}: artifact kind is {manifest.kind!r}, expected {kind!r}")
    if verify:
        for name, info in manifest.files.items():
            file = directory / name
            if not file.is_file():
                raise ArtifactError(f"{directory}: file {name!r} listed in manifest is missing")
            if file.stat().st_size != info["bytes"]:
                raise ArtifactError(
                    f"{directory}: file {name!r} has {file.stat().st_size} bytes, manifest "
                    f"says {info['bytes']}; the artifact is corrupt"
                )
        if checksums:
            verify_checksums(directory, manifest)
    return manifest


def verify_checksums(directory: str | Path, manifest: Manifest) -> None:
    """Compare every listed file's sha256 with the manifest.

    Safe to run in a background thread (hashing releases the GIL) while the files are
    being read, as long as nothing is trusted or published before it returns.

    Raises
    ------
    ArtifactError
        Naming the first file that is missing or whose checksum differs.
    """
    directory = Path(directory)
    for name, info in manifest.files.items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{directory}: file {name!r} listed in manifest is missing")
        if file_sha256(file) != info["sha256"]:
            raise ArtifactError(
                f"{directory}: checksum mismatch for {name!r}; the artifact is corrupt"
            )
