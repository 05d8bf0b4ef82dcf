"""The model registry: which stage-1 and reranker versions are served, swapped without restart.

Each worker holds one immutable :class:`ModelSet`. :meth:`ModelRegistry.refresh` resolves
the configured versions (``latest`` follows the ``LATEST`` pointers), and when they changed
loads the new versions in full — the loaders verify every checksum — and only then
replaces the reference in one assignment; a request keeps the set it started with, and
a version that fails to load or verify is never served (the old set stays).

The admin side (``stickers models list|promote|rollback``) moves ``LATEST`` pointers, after
verifying the target, with :func:`data.set_latest` (an atomic rename).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from candidate_gen import Stage1Artifact
from data import (
    ArtifactError,
    StickerSuggestError,
    list_versions,
    read_manifest,
    resolve_artifact,
    set_latest,
)
from serving._board import VersionBoard, models_key
from serving._encode import SuggestEncoder
from serving._promotions import (
    history,
    latest_lock,
    live_stack,
    promoted_versions,
    record,
    verifies,
)

if TYPE_CHECKING:  # imported when first loaded: onnxruntime is not needed by `models list`
    from reranker import RerankerArtifact, Suggester

__all__ = [
    "KINDS",
    "ModelRegistry",
    "ModelSet",
    "list_models",
    "promote",
    "rollback",
]

log = structlog.get_logger(__name__)

KINDS = ("stage1", "reranker")
INITIAL = "initial"
"""The reranker "version" served before any is published: the model's initial weights."""

SuggesterLoader = Callable[..., "Suggester"]


def default_suggester_loader(var: Path, *, stage1_version: str, reranker_version: str | None,
                             dataset: str | None) -> Suggester:
    """``reranker.Suggester.load`` (the only place serving constructs the ML side)."""
    # Imported on first load: the reranker pulls in onnxruntime, which the CLI's
    # ``models list`` does not need.
    from reranker import Suggester

    return Suggester.load(var, stage1_version=stage1_version,
                          reranker_version=reranker_version, dataset=dataset)


def default_reranker_loader(var: Path, version: str) -> RerankerArtifact:
    """``reranker.RerankerArtifact.load``."""
    from reranker import RerankerArtifact

    return RerankerArtifact.load(var, version)


@dataclass(frozen=True)
class ModelSet:
    """What one worker serves: a stage-1 version and one suggester per reranker version.

    Attributes
    ----------
    stage1 : Stage1Artifact
    suggesters : mapping of concrete reranker version to ``reranker.Suggester``
    rerankers : mapping of concrete reranker version to ``reranker.RerankerArtifact``
        (None for :data:`INITIAL`)
    aliases : mapping of requested version (``latest`` or a name) to concrete version
    loaded_at : float
        Unix time of the swap.
    routes : dict of requested or concrete reranker version to (Suggester, SuggestEncoder)
        Each suggester with its suggest-response pieces, filled on first use (see
        :meth:`route`); a requested version and its concrete one share the encoder.
    """

    stage1: Stage1Artifact
    suggesters: Mapping[str, Suggester]
    rerankers: Mapping[str, RerankerArtifact | None]
    aliases: Mapping[str, str]
    loaded_at: float = field(default_factory=time.time)
    routes: dict[str, tuple[Suggester, SuggestEncoder]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def stage1_version(self) -> str:
        """The served stage-1 version."""
        return self.stage1.version

    def reranker_version(self, requested: str) -> str:
        """Concrete reranker version of a requested one (``latest`` or a name)."""
        return self.aliases[requested]

    def suggester(self, requested: str) -> Suggester:
        """The suggester serving a requested reranker version."""
        return self.suggesters[self.aliases[requested]]

    def route(self, requested: str) -> tuple[Suggester, SuggestEncoder]:
        """The suggester of a requested reranker version and its response encoder (one
        lookup per request)."""
        route = self.routes.get(requested)
        if route is None:
            concrete = self.aliases[requested]
            shared = self.routes.get(concrete)
            if shared is None:
                suggester = self.suggesters[concrete]
                shared = self.routes[concrete] = (suggester, SuggestEncoder(
                    suggester, {"stage1": self.stage1_version, "reranker": concrete}))
            route = self.routes[requested] = shared
        return route

    def reranker(self, requested: str) -> RerankerArtifact | None:
        """The reranker artifact of a requested version."""
        return self.rerankers[self.aliases[requested]]

    @property
    def key(self) -> str:
        """The set's name on the version board."""
        return models_key(self.stage1_version, dict(self.aliases))

    def versions(self) -> dict[str, str]:
        """``{"stage1": v, "reranker": v_default}`` plus ``reranker/<v>`` for every arm."""
        out = {"stage1": self.stage1_version}
        for requested, concrete in self.aliases.items():
            out[f"reranker:{requested}"] = concrete
        return out


class ModelRegistry:
    """Loads, verifies and hot-swaps the served :class:`ModelSet`.

    Parameters
    ----------
    var : Path
        Artifact root.
    stage1_version : str
        ``latest`` or a version name.
    reranker_versions : sequence of str
        Every reranker version requested by the default and the A/B arms.
    dataset : str, optional
        Dataset override for the suggesters.
    suggester_loader, reranker_loader : callable, optional
        Injected for tests; default to the ``reranker`` package.
    on_swap : callable, optional
        Called with the new set after every swap (metrics).
    board : VersionBoard, optional
        Shared with the other gunicorn workers, which then serve the same versions.
    """

    def __init__(self, var: Path, stage1_version: str, reranker_versions: Sequence[str],
                 dataset: str | None = None, *,
                 suggester_loader: SuggesterLoader | None = None,
                 reranker_loader: Callable[[Path, str], RerankerArtifact] | None = None,
                 on_swap: Callable[[ModelSet], None] | None = None,
                 board: VersionBoard | None = None) -> None:
        self.var = Path(var)
        self.stage1_version = stage1_version
        self.reranker_versions = tuple(dict.fromkeys(reranker_versions))
        self.dataset = dataset
        self.suggester_loader = suggester_loader or default_suggester_loader
        self.reranker_loader = reranker_loader or default_reranker_loader
        self.on_swap = on_swap
        self.last_error: str | None = None
        self.last_check: float = 0.0
        """Unix time of the last check (reported by /readyz)."""
        self._last_check_monotonic = -float("inf")
        """The same on the monotonic clock (what the polling interval is measured on: a
        wall clock set back would otherwise pause polling until it caught up)."""
        self.degraded: list[str] = []
        """Why a kind is served from an older promoted version than ``LATEST`` (if so)."""
        self._verified: set[tuple[str, str]] = set()
        self._current: ModelSet | None = None
        self.pending: ModelSet | None = None
        """Loaded, waiting until every worker has it (with a :attr:`board`)."""
        self.board = board
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ModelSet | None:
        """The served set (None until the first successful load)."""
        return self._current

    def targets(self) -> tuple[str, dict[str, str]]:
        """Concrete (stage-1 version, {requested reranker version: concrete}) to serve now.

        ``latest`` follows ``LATEST`` when it names a version that verifies; when it is
        missing or corrupt, the newest verified version of the promotion history is
        served instead and :attr:`degraded` says so.
        """
        notes: list[str] = []
        stage1 = self._resolve("stage1", self.stage1_version, notes)
        rerankers = {v: self._resolve("reranker", v, notes) for v in self.reranker_versions}
        self.degraded = list(dict.fromkeys(notes))
        return stage1, rerankers

    def _resolve(self, kind: str, requested: str, notes: list[str]) -> str:
        kind_dir = self.var / kind
        if requested != "latest":
            return resolve_artifact(kind_dir, requested).name
        stack = live_stack(history(kind_dir))
        if kind == "reranker" and not (kind_dir / "LATEST").is_file() and not stack:
            return INITIAL  # nothing ever published: the model's initial weights
        name: str | None = None
        try:
            name = resolve_artifact(kind_dir, "latest").name
        except ArtifactError:
            problem = "no published version (LATEST is missing or names no version)"
        if name is not None:
            if (kind, name) in self._verified:
                return name
            reason = verifies(kind_dir, name, kind)
            if reason is None:
                self._verified.add((kind, name))
                self._note_found(kind_dir, name)
                return name
            log.error("LATEST fails verification", kind=kind, version=name, error=reason)
            problem = f"LATEST names {name}, which fails verification"
        for version in reversed(stack):
            if version != name and ((kind, version) in self._verified
                                    or verifies(kind_dir, version, kind) is None):
                self._verified.add((kind, version))
                notes.append(f"{kind}: {problem}; serving {version}, the newest verified "
                             "promoted version")
                return version
        raise ArtifactError(f"{kind}: {problem}, and no promoted version verifies")

    @staticmethod
    def _note_found(kind_dir: Path, version: str) -> None:
        """Record a live version the history has never seen (made live by a training run)."""
        if version not in promoted_versions(kind_dir):
            with contextlib.suppress(OSError):  # a read-only artifact root: no history
                record(kind_dir, "found", version)

    def refresh(self) -> bool:
        """Load new versions if the pointers moved and serve them; True if a swap happened.

        Without a :attr:`board` the new set is served at once. With one (gunicorn), it is
        loaded and announced, and served only once every worker has it (see
        :mod:`serving._board`); at start-up a worker loads what the others serve.

        A failure (missing, partial or corrupt artifact with nothing to fall back on)
        keeps the served set, records ``last_error`` and, when nothing is served yet, is
        raised.
        """
        with self._lock:
            self.last_check = time.time()
            self._last_check_monotonic = time.monotonic()
            try:
                stage1_v, aliases = self.targets()
                current = self._current
                key = models_key(stage1_v, aliases)
                if current is None and self.board is not None:
                    stage1_v, aliases = self._agreed_targets(stage1_v, aliases)
                    key = models_key(stage1_v, aliases)
                if current is not None and current.key == key:
                    self.pending = None
                    self.last_error = None
                    if self.board is not None:
                        self.board.announce(key)
                        self._agree()
                    return False
                if self.pending is not None and self.pending.key == key:
                    new = self.pending
                else:
                    new = self._load(stage1_v, aliases, current)
            except (StickerSuggestError, OSError, ValueError, KeyError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("model registry reload failed; serving the previous versions",
                          error=self.last_error)
                if self._current is None:
                    raise
                return False
            self.last_error = None
            if self.board is None or current is None:
                self._swap(new)
                if self.board is not None:
                    self.board.announce(key)
                    self._agree()
                return True
            self.pending = new
            self.board.announce(key)
            self._agree()
        return self.sync(force=True)

    def _agreed_targets(self, stage1_v: str, aliases: dict[str, str]
                        ) -> tuple[str, dict[str, str]]:
        """What the other workers serve (a worker that starts joins them), else the targets."""
        assert self.board is not None
        served = self.board.served()
        if served is None:
            return stage1_v, aliases
        agreed = json.loads(served)
        return str(agreed["stage1"]), {str(k): str(v) for k, v in agreed["rerankers"].items()}

    def _agree(self) -> None:
        assert self.board is not None
        agreed = self.board.agreed()
        if agreed is not None:
            self.board.publish(agreed)

    def _swap(self, new: ModelSet) -> None:
        with self._swap_lock:
            self._current = new  # the swap: one reference assignment
            self.pending = None
        log.info("model registry swapped", **new.versions())
        if self.on_swap is not None:
            self.on_swap(new)

    def sync(self, force: bool = False) -> bool:
        """Serve the pending set if the board says every worker now does (per request:
        one ``stat`` when nothing changed). True if a swap happened."""
        board = self.board
        if board is None or not (board.changed() or force):
            return False
        pending = self.pending
        if pending is None or board.served() != pending.key:
            return False
        self._swap(pending)
        return True

    def _load(self, stage1_v: str, aliases: dict[str, str], current: ModelSet | None
              ) -> ModelSet:
        suggesters: dict[str, Suggester] = {}
        rerankers: dict[str, RerankerArtifact | None] = {}
        reuse = current is not None and current.stage1_version == stage1_v
        for concrete in dict.fromkeys(aliases.values()):
            if reuse and current is not None and concrete in current.suggesters:
                suggesters[concrete] = current.suggesters[concrete]
                rerankers[concrete] = current.rerankers[concrete]
                continue
            initial = concrete == INITIAL
            suggesters[concrete] = self.suggester_loader(
                self.var, stage1_version=stage1_v,
                reranker_version=None if initial else concrete, dataset=self.dataset)
            rerankers[concrete] = None if initial else self.reranker_loader(self.var,
                                                                             concrete)
        stage1 = None
        for suggester in suggesters.values():
            candidate = suggester.context.stage1
            if candidate.version == stage1_v:
                stage1 = candidate
                break
        if stage1 is None:
            stage1 = (current.stage1 if reuse and current is not None
                      else Stage1Artifact.load(self.var, stage1_v))
        return ModelSet(stage1=stage1, suggesters=suggesters, rerankers=rerankers,
                        aliases=aliases)

    def maybe_refresh(self, interval_s: float) -> None:
        """Refresh if ``interval_s`` passed since the last check (cheap when nothing moved).

        Never raises: any failure is kept in :attr:`last_error` (see /readyz) and the
        next check tries again. A polling thread that died on an unexpected error (an
        ONNX runtime or numba error while loading, a full disk while announcing on the
        board) would leave its worker on the old versions for good — and, with a
        :attr:`board`, every other worker too, since they wait for it.
        """
        if interval_s > 0 and time.monotonic() - self._last_check_monotonic >= interval_s:
            try:
                self.refresh()
            except StickerSuggestError:
                pass  # in last_error, see /readyz
            except Exception as exc:  # see above: the thread must outlive any one check
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("model registry check failed; retrying at the next check",
                              error=self.last_error)

    def start_polling(self, interval_s: float) -> None:
        """Check for new versions every ``interval_s`` seconds in a daemon thread."""
        if interval_s <= 0 or self._thread is not None:
            return

        def poll() -> None:
            while not self._stop.wait(interval_s):
                self.maybe_refresh(interval_s)

        self._thread = threading.Thread(target=poll, name="model-registry", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        """Stop the polling thread."""
        self._stop.set()


# ---------------------------------------------------------------------------- admin


def _latest(kind_dir: Path) -> str | None:
    try:
        return resolve_artifact(kind_dir, "latest").name
    except ArtifactError:
        return None


def list_models(var: Path, *, verify: bool = True) -> list[dict[str, Any]]:
    """Every published stage-1 and reranker version with its state.

    Each row: ``kind``, ``version``, ``created_at``, ``latest`` (bool), ``status``
    (``ok`` or the verification error).
    """
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        kind_dir = var / kind
        latest = _latest(kind_dir)
        for version in list_versions(kind_dir):
            try:
                manifest = read_manifest(kind_dir / version, verify=verify, kind=kind)
                created, status = manifest.created_at, "ok"
            except ArtifactError as exc:
                created, status = "?", str(exc)
            rows.append({"kind": kind, "version": version, "created_at": created,
                         "latest": version == latest, "status": status})
    return rows


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ArtifactError(f"kind={kind!r} should be one of {', '.join(KINDS)}")


def _note_live(kind_dir: Path, current: str | None) -> list[str]:
    """The history's live stack, recording ``current`` as ``found`` if the history does
    not end with it (it was made live outside serving, e.g. by a training run)."""
    stack = live_stack(history(kind_dir))
    if current is not None and (not stack or stack[-1] != current):
        record(kind_dir, "found", current)
        stack.append(current)
    return stack


def promote(var: Path, kind: str, version: str) -> str:
    """Verify ``<var>/<kind>/<version>`` (every checksum), point ``LATEST`` at it and record
    the promotion in the history.

    Returns the previous ``LATEST`` version ('' if none). Running servers pick the new
    version up at their next registry check.

    Raises
    ------
    data.ArtifactError
        If the version does not exist or fails verification (``LATEST`` is unchanged).
    """
    _check_kind(kind)
    kind_dir = var / kind
    directory = resolve_artifact(kind_dir, version)
    read_manifest(directory, verify=True, kind=kind)
    with latest_lock(kind_dir):
        previous = _latest(kind_dir)
        _note_live(kind_dir, previous)
        set_latest(kind_dir, directory.name)
        record(kind_dir, "promote", directory.name, previous)
    return previous or ""


def rollback(var: Path, kind: str) -> tuple[str, str]:
    """Point ``LATEST`` back at the version promoted before the live one.

    The promotion history decides, not version names: the target is the newest earlier
    entry of the history's live stack that still verifies (corrupt ones are skipped), so a
    version that was never promoted is never made live. Returns ``(from, to)``.

    Raises
    ------
    data.ArtifactError
        If nothing is live or no earlier promoted version verifies.
    """
    _check_kind(kind)
    kind_dir = var / kind
    with latest_lock(kind_dir):
        current = _latest(kind_dir)
        stack = _note_live(kind_dir, current)
        if not stack:
            raise ArtifactError(f"{kind}: nothing is promoted, so nothing to roll back")
        live = stack[-1]
        for version in reversed(stack[:-1]):
            if version == live:
                continue
            problem = verifies(kind_dir, version, kind)
            if problem is not None:
                log.warning("skipping a promoted version that fails verification",
                            version=version, error=problem)
                continue
            set_latest(kind_dir, version)
            record(kind_dir, "rollback", version, live)
            return live, version
    raise ArtifactError(f"{kind}: no earlier promoted version than {live} verifies; "
                        "nothing to roll back to (versions that were never promoted are "
                        "not candidates: promote one explicitly)")
