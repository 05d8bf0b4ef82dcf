"""The keyboard app on the device client: the sticker row computed on the phone.

One :class:`KeyboardApp` per device (``RowTask.device_app``; the platform's population
runner drives it through ``federated.DeviceApp``). Everything private lives in the
device's own SQLite file (:class:`KeyboardStore`, beside the protocol client's tables):

- ``keyboard_sends``: every sticker the user sent (time, sticker and package ids, and the
  keyword match of the text typed with it — the keyboard matches the text on the device
  with its bundle's keyword index and keeps the match, never the text);
- ``keyboard_acquisitions``: the packages the phone holds, with when it got them;
- ``keyboard_packages``: the content of every package on the phone (its stickers and
  their labels, premium flag, character: what a sticker package on a phone is);
- ``keyboard_rows``: the row the keyboard showed at each send (model version, the
  sticker ids shown, whether the sent one was among them);
- ``keyboard_counts`` (a view): sends and last use per sticker — the on-device counts;
- ``keyboard_profile``: cluster, keyboard language, subscriber flag, the personal
  embedding, the downloaded bundle and its ETag.

The keyboard computes with nothing but its store, the downloaded bundle and the
downloaded weights: its tables (the cluster's packages and its own, every package's
stage-1 factor, the label embeddings, the keyword index of its language) are built from
the bundle and the store (:mod:`reranker._keyboard_tables`), and each keystroke is ranked
by :class:`reranker.Suggester` — the code of the server's ``/v1/suggest`` — over the
device's :class:`reranker.DeviceHistory` (its earlier sends and holdings, from the
store). Local training (:meth:`KeyboardApp.train`) reads its examples from the store,
walks them with the task's row functions over the same tables and writes the refined
embedding back; only the shared-weight delta goes to the protocol client, which clips,
encodes and masks it.

What the app shares with the server-side code is its code and settings only
(:class:`KeyboardSettings`: the row functions, local training's settings, the end of
training); the simulated person behind the device (:class:`_User`: the texts it will
type, the stickers it will send, the packages it will get) is the harness's, and the
store is filled only by what the user does.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

from data import StickerSuggestError
from federated.device import LocalStore
from reranker._context import RankingContext
from reranker._errors import RerankerInputError
from reranker._keyboard_tables import (
    BundleData,
    PackageContent,
    device_context,
    device_reranker,
    read_bundle,
)
from reranker._local import fold_in
from reranker._row import DeviceHistory, RowConfig, StickerCatalog
from reranker._sessions import RowImpressions, RowSessions, walk_impressions
from reranker._suggest import Suggester

if TYPE_CHECKING:
    from federated.device import HttpTransport

__all__ = ["KeyboardApp", "KeyboardError", "KeyboardSettings", "KeyboardStore", "RowFunctions",
           "Send", "Typed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyboard_profile (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_sends (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, sticker_id INTEGER NOT NULL,
    package_id INTEGER NOT NULL, labels BLOB NOT NULL, strengths BLOB NOT NULL,
    kinds BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_acquisitions (ts REAL NOT NULL, package_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_packages (
    package_id INTEGER PRIMARY KEY, premium INTEGER NOT NULL, character TEXT NOT NULL,
    sticker_ids BLOB NOT NULL, label_ptr BLOB NOT NULL, label_ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_rows (
    seq INTEGER PRIMARY KEY REFERENCES keyboard_sends(seq), model_version INTEGER NOT NULL,
    shown BLOB NOT NULL, hit INTEGER NOT NULL);
CREATE VIEW IF NOT EXISTS keyboard_counts AS
    SELECT sticker_id, COUNT(*) AS sends, MAX(ts) AS last_ts FROM keyboard_sends
    GROUP BY sticker_id;
"""


class RowFunctions(NamedTuple):
    """The row model's functions the keyboard runs (``reranker._row_task``'s: the task
    passes them in, so the keyboard computes exactly what the task computes)."""

    scores: Callable[..., np.ndarray]
    """``row_scores(theta, layout, users, imp, pk_factor)`` → (R,)."""
    local_sgd: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
    """``row_local_sgd(...)`` → local θ (B, P), embeddings (B, d), loss (B,)."""
    hits: Callable[..., tuple[np.ndarray, np.ndarray]]
    """``row_hits(scores, imp, k)`` → hit (E,), rank (E,)."""
    reachable: Callable[[RowImpressions], RowImpressions]
    """The impressions whose sent sticker is a candidate."""


class KeyboardError(StickerSuggestError):
    """The keyboard app cannot serve (a bundle for another stage-1 version ...)."""


@dataclass(frozen=True)
class Send:
    """One sticker send as the keyboard logs it.

    Attributes
    ----------
    ts : float
        Seconds since the epoch.
    sticker_id, package_id : int
        Catalogue ids (``-1``: not in the installed catalogue).
    labels : ndarray of int32, shape (m,)
    strengths : ndarray of float32, shape (m,)
    kinds : ndarray of int8, shape (m,)
        The keyword match of the text typed with it (label, strength, kind).
    """

    ts: float
    sticker_id: int
    package_id: int
    labels: np.ndarray
    strengths: np.ndarray
    kinds: np.ndarray


class KeyboardStore(LocalStore):
    """The keyboard's tables in the device's SQLite file.

    Parameters
    ----------
    path : Path
        The device's store (the protocol client keeps its own tables in the same file).
    """

    schema = _SCHEMA
    values_table = "keyboard_profile"

    def add_sends(self, sends: list[Send], rows: list[tuple[int, np.ndarray, bool]] | None
                  = None) -> list[int]:
        """Append sends (and the row shown at each: model version, sticker ids (k,), hit)
        in one transaction; returns their sequence numbers."""
        seqs: list[int] = []
        self._conn.execute("BEGIN")
        try:
            for i, s in enumerate(sends):
                cur = self._conn.execute(
                    "INSERT INTO keyboard_sends (ts, sticker_id, package_id, labels, "
                    "strengths, kinds) VALUES (?, ?, ?, ?, ?, ?)",
                    (float(s.ts), int(s.sticker_id), int(s.package_id),
                     np.asarray(s.labels, "<i4").tobytes(),
                     np.asarray(s.strengths, "<f4").tobytes(),
                     np.asarray(s.kinds, "i1").tobytes()))
                seq = int(cur.lastrowid or 0)
                seqs.append(seq)
                if rows is not None:
                    version, shown, hit = rows[i]
                    self._conn.execute("INSERT INTO keyboard_rows VALUES (?, ?, ?, ?)",
                                       (seq, int(version),
                                        np.asarray(shown, "<i4").tobytes(), int(hit)))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return seqs

    def add_acquisitions(self, ts: np.ndarray, package_ids: np.ndarray) -> None:
        """Record packages the phone got (ts (A,) seconds, ids (A,))."""
        self._conn.executemany("INSERT INTO keyboard_acquisitions VALUES (?, ?)",
                               list(zip(np.asarray(ts, float).tolist(),
                                        np.asarray(package_ids, np.int64).tolist(),
                                        strict=True)))

    def sends(self) -> list[Send]:
        """Every logged send, by time."""
        out = []
        for ts, st, pk, lab, stren, kind in self._conn.execute(
                "SELECT ts, sticker_id, package_id, labels, strengths, kinds FROM "
                "keyboard_sends ORDER BY ts, seq"):
            out.append(Send(float(ts), int(st), int(pk), np.frombuffer(lab, "<i4"),
                            np.frombuffer(stren, "<f4"), np.frombuffer(kind, "i1")))
        return out

    def acquisitions(self) -> tuple[np.ndarray, np.ndarray]:
        """Holdings: times (A,) float64 and package ids (A,) int64, by time."""
        rows = self._conn.execute("SELECT ts, package_id FROM keyboard_acquisitions "
                                  "ORDER BY ts, rowid").fetchall()
        return (np.array([r[0] for r in rows], np.float64),
                np.array([r[1] for r in rows], np.int64))

    def rows(self) -> list[tuple[int, int, np.ndarray, bool]]:
        """The rows shown: (send seq, model version, sticker ids (k,), hit), by seq."""
        return [(int(s), int(v), np.frombuffer(shown, "<i4"), bool(h)) for s, v, shown, h in
                self._conn.execute("SELECT seq, model_version, shown, hit FROM "
                                   "keyboard_rows ORDER BY seq")]

    def delete(self, name: str) -> None:
        """Remove a profile value (absent: nothing happens)."""
        self._conn.execute(f"DELETE FROM {self.values_table} WHERE name=?", (name,))

    def add_packages(self, packages: list[PackageContent]) -> None:
        """Keep the content of packages that arrived on the phone (a package already
        there is kept as it is)."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO keyboard_packages VALUES (?, ?, ?, ?, ?, ?)",
            [(int(p.package_id), int(p.premium), p.character,
              np.asarray(p.sticker_ids, "<i4").tobytes(),
              np.asarray(p.label_ptr, "<i4").tobytes(),
              np.asarray(p.label_ids, "<i4").tobytes()) for p in packages])

    def packages(self) -> list[PackageContent]:
        """The packages on the phone, by id."""
        return [PackageContent(int(p), bool(prem), str(ch), np.frombuffer(st, "<i4"),
                               np.frombuffer(ptr, "<i4"), np.frombuffer(lab, "<i4"))
                for p, prem, ch, st, ptr, lab in self._conn.execute(
                    "SELECT package_id, premium, character, sticker_ids, label_ptr, label_ids "
                    "FROM keyboard_packages ORDER BY package_id")]

    def package_ids(self) -> set[int]:
        """Ids of the packages on the phone."""
        return {int(r[0]) for r in self._conn.execute("SELECT package_id FROM "
                                                      "keyboard_packages")}

    def counts(self) -> dict[int, tuple[int, float]]:
        """The on-device counts: sticker id → (sends, last send time)."""
        return {int(st): (int(n), float(last)) for st, n, last in
                self._conn.execute("SELECT sticker_id, sends, last_ts FROM keyboard_counts")}


@dataclass(frozen=True)
class KeyboardSettings:
    """What the installed keyboard app brings besides its code: the same on every device,
    no data (the tables come from the downloaded bundle, the weights from the server).

    Attributes
    ----------
    config : RowTaskConfig
        Local training's settings (``top_k``, ``max_impressions``, steps, rates) and the
        training walk's row settings.
    functions : RowFunctions
    train_until : float
        No send at or after this time is trained on.
    language : str
        The default keyboard language (a device keeps its own in its store).
    """

    config: Any
    functions: RowFunctions
    train_until: float
    language: str

    @classmethod
    def of_task(cls, task: Any, functions: RowFunctions) -> KeyboardSettings:
        """The app settings of a ``RowTask`` (no device's data, no catalogue)."""
        return cls(config=task.config, functions=functions, train_until=float(task.split_ts),
                   language=str(task.context.languages[0]))

    @property
    def row(self) -> RowConfig:
        """The training walk's candidates and features."""
        return self.config.row


@dataclass(frozen=True)
class Typed:
    """One send as the simulated user makes it (the harness's; never stored: the
    keyboard keeps the match of ``text``, not the text).

    Attributes
    ----------
    ts : float
    sticker_id, package_id : int
    text : str
        What the user typed before sending (``""``: no text).
    """

    ts: float
    sticker_id: int
    package_id: int
    text: str


class _World:
    """The simulation's side of one task (read once, shared by its devices): each
    device's typed texts in session order, each user's keyboard language, and the sticker
    shop's package downloads (a package's content when it arrives on a phone)."""

    def __init__(self, task: Any) -> None:
        ds = task.context.dataset
        users = ds.table("users")
        served = set(task.context.languages)
        self.language: dict[int, str] = ({int(u): str(lang) for u, lang in zip(
            users["user_id"].to_list(), users["language"].to_list(), strict=True)
            if lang in served} if "language" in users.columns else {})
        logs = (ds.table("device_logs").filter(pl.col("language").is_in(list(served)))
                .select("user_id", pl.col("ts").cast(pl.Int64), "sticker_id", "text")
                .sort("user_id", "ts"))
        uid = logs["user_id"].to_numpy().astype(np.int64)
        self._ptr_users = np.unique(uid)
        self._ptr: np.ndarray = np.asarray(np.searchsorted(
            uid, np.r_[self._ptr_users, np.iinfo(np.int64).max]))
        self._ts = logs["ts"].to_numpy() / 1000.0
        self._sticker = logs["sticker_id"].to_numpy()
        self._text = logs["text"].to_list()
        stickers = ds.table("stickers").sort("package_id", "position")
        self._st_pk = stickers["package_id"].to_numpy()
        self._st_ptr = np.searchsorted(self._st_pk, np.arange(int(self._st_pk.max(initial=0))
                                                              + 2))
        self._st_ids = stickers["sticker_id"].to_list()
        self._st_labels = stickers["label_ids"].to_list()
        packages = ds.table("packages")
        self._premium = dict(zip(packages["package_id"].to_list(),
                                 packages["premium"].to_list(), strict=True))
        self._character = dict(zip(packages["package_id"].to_list(),
                                   packages["character"].to_list(), strict=True))
        self._shop_lock = threading.Lock()
        self._shop: dict[int, PackageContent] = {}

    def texts(self, user_id: int, ts: np.ndarray, sticker_ids: np.ndarray) -> list[str]:
        """The text typed with each of a user's sends (ts (n,) seconds, sticker ids (n,))."""
        i = int(np.searchsorted(self._ptr_users, user_id))
        lo, hi = (int(self._ptr[i]), int(self._ptr[i + 1])) if (
            i < self._ptr_users.size and self._ptr_users[i] == user_id) else (0, 0)
        pool: dict[float, list[tuple[int, str]]] = {}
        for j in range(lo, hi):
            pool.setdefault(float(self._ts[j]), []).append((int(self._sticker[j]),
                                                            self._text[j]))
        out = []
        for t, st in zip(ts.tolist(), sticker_ids.tolist(), strict=True):
            found = pool.get(float(t))
            if not found:
                raise KeyboardError(f"user {user_id}: no typed text for the send at {t}")
            # the same send (sticker) when several share the time; a sticker unknown to
            # the catalogue (-1) takes the first left
            pick = next((i for i, (sid, _) in enumerate(found) if sid == st), 0)
            out.append(found.pop(pick)[1])
        return out

    def package(self, package_id: int) -> PackageContent | None:
        """The shop's download of a package (None: not in the catalogue)."""
        with self._shop_lock:
            got = self._shop.get(package_id)
        if got is not None:
            return got
        if not 0 <= package_id < self._st_ptr.size - 1 or package_id not in self._premium:
            return None
        lo, hi = int(self._st_ptr[package_id]), int(self._st_ptr[package_id + 1])
        content = PackageContent.of_rows(
            package_id, bool(self._premium[package_id]),
            str(self._character.get(package_id) or ""),
            [[int(self._st_ids[j]), *[int(x) for x in (self._st_labels[j] or [])]]
             for j in range(lo, hi)])
        with self._shop_lock:
            return self._shop.setdefault(package_id, content)


_WORLDS: weakref.WeakKeyDictionary[Any, _World] = weakref.WeakKeyDictionary()
_WORLDS_LOCK = threading.Lock()


def _world(task: Any) -> _World:
    with _WORLDS_LOCK:
        if task not in _WORLDS:
            _WORLDS[task] = _World(task)
        return _WORLDS[task]


@dataclass
class _User:
    """The simulated person behind one device: the sends and holdings still ahead, and
    the shop its packages come from."""

    sends: list[Typed]
    acq_ts: np.ndarray
    acq_package_id: np.ndarray
    shop: Callable[[int], PackageContent | None]


class _Tables(NamedTuple):
    """What the keyboard computes with, built from its bundle and its packages."""

    key: tuple[str, int]
    bundle: BundleData
    context: RankingContext
    catalog: StickerCatalog


class KeyboardApp:
    """The keyboard on one device (implements ``federated.DeviceApp``).

    Parameters
    ----------
    settings : KeyboardSettings
    path : Path
        The device's SQLite file.
    user : _User
        What the user will do (the simulation's; the store holds only what was done).
    start_s, end_s : float
        The run's time span: step ``i`` of ``n`` of :meth:`use` covers the sends up to
        ``start_s + (end_s - start_s) (i + 1) / n``.
    held_out : bool
        A validation device: it never trains; its sends in the span are evaluated
        (:meth:`evaluate`), not typed during the run.

    Attributes
    ----------
    bundle_check_s : float
        How often :meth:`sync` asks the server for a newer bundle (on ``clock``; a phone
        checks for app data updates about daily, not before every round).
    every_keystroke : bool
        :meth:`use` ranks the row at every prefix of the text as it is typed (the row a
        keyboard shows per keystroke); False ranks only the final text of each send. The
        row logged for a send is the final text's either way.
    clock : callable
        The device's Unix time.
    """

    bundle_check_s: float = 86400.0
    every_keystroke: bool = True

    def __init__(self, settings: KeyboardSettings, path: Path, user: _User, *, start_s: float,
                 end_s: float, held_out: bool) -> None:
        self.clock = time.time
        self.settings = settings
        self.store = KeyboardStore(path)
        self._user = user
        self.start_s = float(start_s)
        self.end_s = float(end_s)
        self.held_out = held_out
        self.bundle_bytes = 0
        self.keystrokes = 0
        self._tables: _Tables | None = None
        self._suggester: tuple[tuple[Any, ...], Suggester] | None = None

    # ------------------------------------------------------------------ install

    @classmethod
    def install(cls, task: Any, device: int, path: Path, functions: RowFunctions, *,
                start_s: float | None = None, end_s: float | None = None) -> KeyboardApp:
        """The keyboard of ``RowTask`` ``task``'s device ``device``, its store at ``path``.

        A new store gets the phone's past: the device's sends (with the keyword match of
        their texts, as the keyboard logged them then) and holdings before ``start_s``
        (default: ``validation_start``), the content of the packages it holds or sent
        from, its cluster, language and subscription; the sends from ``start_s`` on are
        the user's, typed during the run (:meth:`use`). ``end_s`` defaults to the end of
        training (``test_start``). An existing store is reopened as it is (the user
        resumes after its last send). The keyboard has no tables until its first
        :meth:`sync` downloads the bundle.
        """
        start = float(task.split.validation_start if start_s is None else start_s)
        end = float(task.split_ts if end_s is None else end_s)
        if not start <= end:
            raise ValueError(f"start_s={start} should be <= end_s={end}")
        world = _world(task)
        s, cat = task.sessions, task.catalog
        lo, hi = int(s.dev_ptr[device]), int(s.dev_ptr[device + 1])
        user_id = int(s.user_ids[device])
        sticker_ids = np.array([int(cat.sticker_ids[x]) if x >= 0 else -1
                                for x in s.sticker[lo:hi].tolist()], np.int64)
        texts = world.texts(user_id, s.ts[lo:hi], sticker_ids)
        typed = [Typed(float(s.ts[j]), int(sticker_ids[j - lo]),
                       int(cat.package_ids[s.package[j]]) if s.package[j] >= 0 else -1,
                       texts[j - lo]) for j in range(lo, hi)]
        alo, ahi = int(s.acq_ptr[device]), int(s.acq_ptr[device + 1])
        acq_ts = s.acq_ts[alo:ahi].astype(np.float64)
        acq_ids = cat.package_ids[s.acq_pk[alo:ahi]].astype(np.int64)
        store = KeyboardStore(path)
        try:
            if store.get("cluster") is None:
                past = [j for j in range(lo, hi) if s.ts[j] < start]
                store.add_sends([_logged(s, j, typed[j - lo]) for j in past])
                store.add_acquisitions(acq_ts[acq_ts < start], acq_ids[acq_ts < start])
                arrived = {x.package_id for x in typed[: len(past)] if x.package_id >= 0}
                arrived |= set(acq_ids[acq_ts < start].tolist())
                store.add_packages([p for p in map(world.package, sorted(arrived))
                                    if p is not None])
                store.put("cluster", str(int(s.cluster[device])).encode())
                store.put("subscriber", b"1" if bool(s.subscriber[device]) else b"0")
                store.put("held_out", b"1" if bool(task.validation[device]) else b"0")
                store.put("language", world.language.get(
                    user_id, str(task.context.languages[0])).encode())
            logged = store.sends()
            # a reopened store: the user resumes after its last logged send
            done_until = (float(np.nextafter(logged[-1].ts, np.inf))
                          if logged and logged[-1].ts >= start else start)
            held_out = store.get("held_out") == b"1"
        finally:
            store.close()
        later = acq_ts >= done_until
        user = _User([x for x in typed if x.ts >= done_until], acq_ts[later], acq_ids[later],
                     world.package)
        return cls(KeyboardSettings.of_task(task, functions), path, user, start_s=start,
                   end_s=end, held_out=held_out)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # ------------------------------------------------------------------ state

    @property
    def cluster(self) -> int:
        """The device's stage-1 cluster (from its store)."""
        raw = self.store.get("cluster")
        if raw is None:
            raise KeyboardError(f"{self.store.path}: the keyboard is not installed")
        return int(raw)

    @property
    def language(self) -> str:
        """The keyboard's language (from its store)."""
        return (self.store.get("language") or self.settings.language.encode()).decode()

    def tables(self) -> _Tables:
        """The keyboard's tables: its downloaded bundle and the packages on the phone
        (rebuilt when either changed).

        Raises
        ------
        KeyboardError
            No bundle was downloaded yet (:meth:`sync` first).
        """
        etag = self.store.get("bundle_etag")
        if etag is None:
            raise KeyboardError(f"{self.store.path}: no bundle yet; the keyboard computes "
                                "only with its downloaded bundle (sync first)")
        packages = self.store.packages()
        key = (etag.decode(), len(packages))
        if self._tables is None or self._tables.key != key:
            raw = self.store.get("bundle")
            assert raw is not None  # stored with its ETag
            bundle = read_bundle(raw)
            context = device_context(bundle, packages)
            self._tables = _Tables(key, bundle, context, StickerCatalog.build(context))
            self._suggester = None
        return self._tables

    @property
    def catalog(self) -> StickerCatalog:
        """The device's catalogue (its cluster's packages and its own)."""
        return self.tables().catalog

    def suggester(self, parameters: np.ndarray, model_version: int) -> Suggester:
        """The server's keystroke code over the device's tables and the downloaded
        weights (P,) of ``model_version`` (built once per version and tables)."""
        tables = self.tables()
        theta = np.asarray(parameters, np.float32)
        key = (tables.key, int(model_version), theta.tobytes())
        if self._suggester is None or self._suggester[0] != key:
            artifact = device_reranker(tables.bundle, theta, model_version,
                                       tables.bundle.layout)
            self._suggester = (key, Suggester(tables.context, artifact))
        return self._suggester[1]

    def _arrive(self, package_ids: list[int]) -> None:
        """Packages reach the phone (bought, downloaded, or sent from by subscription):
        their content joins the store (the shop's download)."""
        have = self.store.package_ids()
        new = [p for p in package_ids if p >= 0 and p not in have]
        got = [c for c in map(self._user.shop, sorted(set(new))) if c is not None]
        if got:
            self.store.add_packages(got)

    def _sessions(self, extra: list[Send]) -> tuple[RowSessions, int]:
        """A one-device :class:`RowSessions` of the store's sends then ``extra`` (sends
        after them), over the device's tables, and how many came from the store."""
        t = self.tables()
        cat = t.catalog
        logged = self.store.sends()
        allsends = logged + extra
        n = len(allsends)
        st_ids = np.array([x.sticker_id for x in allsends], np.int64)
        pk_ids = np.array([x.package_id for x in allsends], np.int64)
        sticker = np.where(st_ids >= 0, cat.stickers_of(np.maximum(st_ids, 0)), -1)
        package = np.where(pk_ids >= 0, cat.packages_of(np.maximum(pk_ids, 0)), -1)
        sig_ptr = np.zeros(n + 1, np.int64)
        np.cumsum([x.labels.size for x in allsends], out=sig_ptr[1:])

        def cat_(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        acq_ts, acq_ids = self.store.acquisitions()
        pending = self._user.acq_ts < (allsends[-1].ts if allsends else -np.inf)
        acq_ts = np.concatenate([acq_ts, self._user.acq_ts[pending]]) if extra else acq_ts
        acq_ids = (np.concatenate([acq_ids, self._user.acq_package_id[pending]]) if extra
                   else acq_ids)
        acq_pk = cat.packages_of(acq_ids) if acq_ids.size else np.zeros(0, np.int64)
        keep = acq_pk >= 0
        order = np.argsort(acq_ts[keep], kind="stable")
        row_of = t.context.package_row
        sessions = RowSessions(
            user_ids=np.zeros(1, np.int32),
            cluster=np.array([self.cluster], np.int32),
            subscriber=np.array([self.store.get("subscriber") == b"1"]),
            dev_ptr=np.array([0, n], np.int64),
            ts=np.array([x.ts for x in allsends], np.float64),
            sig=np.arange(n, dtype=np.int64), sticker=sticker.astype(np.int32),
            package=package.astype(np.int32),
            sent_row=np.array([row_of.get(int(p), -1) if p >= 0 else -1
                               for p in pk_ids.tolist()], np.int64),
            sig_ptr=sig_ptr, sig_label=cat_([x.labels for x in allsends], np.int32),
            sig_strength=cat_([x.strengths for x in allsends], np.float32),
            sig_kind=cat_([x.kinds for x in allsends], np.int8),
            acq_ptr=np.array([0, int(keep.sum())], np.int64),
            acq_pk=acq_pk[keep][order].astype(np.int32),
            acq_ts=acq_ts[keep][order].astype(np.float64))
        return sessions, len(logged)

    def _fold_in(self, sessions: RowSessions, n_logged: int) -> np.ndarray:
        """The ridge fold-in (1, d) of the store's sends, with the bundle's factors."""
        b = self.tables().bundle
        return fold_in(np.zeros(n_logged, np.int64), sessions.sent_row[:n_logged], 1,
                       b.factors, b.gram, float(b.meta["regularization"]),
                       float(b.meta["alpha"]))

    def embedding(self) -> np.ndarray:
        """The personal embedding (1, d): the stored one, else the fold-in of the store."""
        raw = self.store.get("embedding")
        if raw is not None:
            return np.frombuffer(raw, "<f4").reshape(1, -1).copy()
        sessions, n_logged = self._sessions([])
        return self._fold_in(sessions, n_logged)

    def history(self) -> DeviceHistory:
        """The device's history state from its store: its sends and holdings."""
        t = self.tables()
        sends = self.store.sends()
        acq_ts, acq_ids = self.store.acquisitions()
        state = DeviceHistory(t.catalog, self.suggester_row(),
                              subscriber=self.store.get("subscriber") == b"1")
        self._replay(state, sends, acq_ts, acq_ids)
        return state

    def suggester_row(self) -> RowConfig:
        """The row settings the keystroke ranks with (the bundle's: the server's)."""
        return RowConfig(**(self.tables().bundle.meta.get("row") or {}))

    @staticmethod
    def _replay(state: DeviceHistory, sends: list[Send], acq_ts: np.ndarray,
                acq_ids: np.ndarray, until: float = np.inf) -> None:
        """Sends and holdings into ``state`` in time order (a holding counts from the
        sends after it, as the training walk's); holdings before ``until`` at the end."""
        order = np.argsort(acq_ts, kind="stable")
        a = 0
        for x in sends:
            while a < order.size and acq_ts[order[a]] < x.ts:
                state.acquire(int(acq_ids[order[a]]))
                a += 1
            state.record_send(x.sticker_id, x.ts)
        while a < order.size and acq_ts[order[a]] < until:
            state.acquire(int(acq_ids[order[a]]))
            a += 1

    def _walk(self, sessions: RowSessions, emit: np.ndarray, cap: int) -> RowImpressions:
        return walk_impressions(sessions, self.catalog, self.settings.row,
                                np.zeros(1, np.int64), emit, np.ones(sessions.n_sessions, bool),
                                cap)

    def _local(self, theta: np.ndarray, users: np.ndarray, imp: RowImpressions, shared: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, t = self.settings.config, self.tables()
        return self.settings.functions.local_sgd(
            np.asarray(theta, np.float32), t.bundle.layout, users, imp,
            t.catalog.pk_factor, 1, cfg.steps, cfg.learning_rate if shared else 0.0,
            cfg.embedding_learning_rate, cfg.proximal if shared else 0.0, cfg.embedding_l2)

    def _type(self, sends: list[Typed], acq_ts: np.ndarray, acq_ids: np.ndarray,
              parameters: np.ndarray, model_version: int, users: np.ndarray
              ) -> list[tuple[Send, np.ndarray]]:
        """The user types ``sends`` (in time order) on top of the store's history, the
        packages ``acq_ids`` arriving at ``acq_ts``: per send, the keyword match of its
        text on the device and the row the keyboard shows for it (sticker ids (≤ k,))."""
        t = self.tables()
        suggester = self.suggester(parameters, model_version)
        state = self.history()
        index = t.bundle.index
        k = self.settings.config.top_k
        u = users[0]
        order = np.argsort(acq_ts, kind="stable")
        a, out = 0, []
        for x in sends:
            while a < order.size and acq_ts[order[a]] < x.ts:
                state.acquire(int(acq_ids[order[a]]))
                a += 1
            prefixes = ([x.text[:i] for i in range(1, len(x.text))]
                        if self.every_keystroke else [])
            for prefix in prefixes:  # the row shown while typing
                suggester.rank_row(language=self.language, text=prefix, cluster_id=self.cluster,
                                   user_embedding=u, limit=k, history=state, now=x.ts)
            row = suggester.rank_row(language=self.language, text=x.text,
                                     cluster_id=self.cluster, user_embedding=u, limit=k,
                                     history=state, now=x.ts)
            self.keystrokes += len(prefixes) + 1
            match = index.match(x.text)
            out.append((Send(x.ts, x.sticker_id, x.package_id,
                             np.asarray(match.label_ids, np.int32),
                             np.asarray(match.strengths, np.float32),
                             np.asarray(match.kinds, np.int8)),
                        np.asarray(row.sticker_ids, np.int32)))
            state.record_send(x.sticker_id, x.ts)
        return out

    # ------------------------------------------------------------------ DeviceApp

    def sync(self, transport: HttpTransport) -> None:
        """Download the cluster's bundle for the keyboard language if it changed (ETag)
        and verify it (every file's sha256, for this cluster and language); at most once
        per ``bundle_check_s`` (the time of the last check is kept in the store). The
        keyboard's tables are built from it.

        Raises
        ------
        KeyboardError
            The server's bundle is not for this keyboard's cluster and language, or is
            corrupt.
        """
        checked = self.store.get("bundle_checked_at")
        now = self.clock()
        if checked is not None and now - float(checked) < self.bundle_check_s:
            return
        etag = self.store.get("bundle_etag")
        headers = {"If-None-Match": etag.decode()} if etag else {}
        language = self.language
        answer = transport.request(
            "GET", f"/v1/clusters/{self.cluster}/bundle?language={language}", headers=headers)
        if answer.status == 304:
            self.store.put("bundle_checked_at", repr(now).encode())
            return
        try:
            bundle = read_bundle(answer.raw)
        except RerankerInputError as exc:
            raise KeyboardError(f"the server's bundle is unusable: {exc}") from exc
        if (bundle.cluster_id, bundle.language) != (self.cluster, language):
            raise KeyboardError(f"the server's bundle is for cluster {bundle.cluster_id} "
                                f"{bundle.language!r}, the keyboard's is {self.cluster} "
                                f"{language!r}")
        old = self.store.get("bundle_stage1")
        if old is not None and old.decode() != bundle.stage1_version:
            # a new stage-1 version: the stored embedding lives in the old factor space
            self.store.delete("embedding")
        self.store.put("bundle", answer.raw)
        self.store.put("bundle_etag", answer.headers["etag"].encode())
        self.store.put("bundle_stage1", bundle.stage1_version.encode())
        self.store.put("bundle_checked_at", repr(now).encode())
        self.bundle_bytes += len(answer.raw)

    def use(self, step: int, steps: int, parameters: np.ndarray, model_version: int) -> int:
        """The user types the sends of step ``step`` of ``steps``: each text keystroke by
        keystroke (:attr:`every_keystroke`), matched and ranked on the device with the
        bundle's keyword index and the server's keystroke code, the store's history and
        ``parameters``; then the sends (their matches, not their texts), the rows shown
        and the new holdings are appended to the store. Held-out devices type nothing."""
        if not 0 <= step < steps:
            raise ValueError(f"step={step} should be in [0, steps={steps})")
        if self.held_out:
            return 0
        until = self.start_s + (self.end_s - self.start_s) * (step + 1) / steps
        now = [x for x in self._user.sends if x.ts < until]
        got = self._user.acq_ts < until
        acq_ts, acq_ids = self._user.acq_ts[got], self._user.acq_package_id[got]
        # what the user holds or sends from is on the phone before the row is computed
        self._arrive([x.package_id for x in now] + acq_ids.tolist())
        if now:
            typed = self._type(now, acq_ts, acq_ids, parameters, model_version,
                               self.embedding())
            shown = [(model_version, row, x.sticker_id in row.tolist())
                     for x, row in zip(now, (r for _, r in typed), strict=True)]
            self.store.add_sends([s for s, _ in typed], shown)
            self._user.sends = self._user.sends[len(now):]
            self._suggester = None  # until the next use: a new model version by then
        if got.any():
            self.store.add_acquisitions(acq_ts, acq_ids)
            self._user.acq_ts = self._user.acq_ts[~got]
            self._user.acq_package_id = self._user.acq_package_id[~got]
        return len(now)

    def train(self, parameters: np.ndarray) -> np.ndarray | None:
        """Local training on the store's most recent ``max_impressions`` sends before
        the end of training whose sticker is a candidate (as ``RowTask.local_train``);
        stores the refined personal embedding; the shared-weight delta (P,), or None
        (held out, or nothing to learn from)."""
        if self.held_out:
            return None
        sessions, _ = self._sessions([])
        train = np.flatnonzero(sessions.ts < self.settings.train_until)
        if not train.size:
            return None
        emit = np.zeros(sessions.n_sessions, bool)
        emit[train[-self.settings.config.max_impressions:]] = True
        imp = self.settings.functions.reachable(
            self._walk(sessions, emit, self.settings.row.train_candidates))
        if not imp.n_impressions:
            return None
        theta = np.asarray(parameters, np.float32)
        local, users, _ = self._local(theta, self.embedding(), imp, shared=True)
        self.store.put("embedding", users[0].astype("<f4").tobytes())
        return local[0] - theta

    def personalize(self, parameters: np.ndarray) -> np.ndarray:
        """The embedding (1, d) the phone derives for ``parameters`` without training the
        shared weights: the store's fold-in refined on its most recent sends (as
        ``RowTask.personalize``); nothing is stored."""
        sessions, n_logged = self._sessions([])
        users = self._fold_in(sessions, n_logged)
        emit = np.zeros(sessions.n_sessions, bool)
        emit[max(0, n_logged - self.settings.config.max_impressions):n_logged] = True
        imp = self.settings.functions.reachable(
            self._walk(sessions, emit, self.settings.row.train_candidates))
        if imp.n_impressions:
            _, users, _ = self._local(parameters, users, imp, shared=False)
        return users

    def evaluate(self, parameters: np.ndarray, model_version: int = -1) -> dict[str, float]:
        """On a held-out device: the rows the keyboard would show, personalised for
        ``parameters``, at each of its sends in the span (its final text, ranked on the
        device as :meth:`use` ranks), and whether the sent sticker is in them;
        ``{"hits", "impressions"}`` (counts). Nothing is stored. Other devices: ``{}``."""
        if not self.held_out:
            return {}
        window = [x for x in self._user.sends if x.ts < self.end_s]
        if not window:
            return {}
        users = self.personalize(parameters)
        got = self._user.acq_ts < window[-1].ts
        self._arrive([x.package_id for x in window] + self._user.acq_package_id[got].tolist())
        keystroke, self.every_keystroke = self.every_keystroke, False
        try:
            typed = self._type(window, self._user.acq_ts[got], self._user.acq_package_id[got],
                               parameters, model_version, users)
        finally:
            self.every_keystroke = keystroke
            self._suggester = None
        hits = sum(x.sticker_id in row.tolist() for x, (_, row) in zip(window, typed,
                                                                         strict=True))
        return {"hits": float(hits), "impressions": float(len(window))}


def _logged(s: RowSessions, j: int, typed: Typed) -> Send:
    """Session ``j``'s send as the keyboard logged it then (the match of its text)."""
    a, b = int(s.sig_ptr[s.sig[j]]), int(s.sig_ptr[s.sig[j] + 1])
    return Send(typed.ts, typed.sticker_id, typed.package_id, s.sig_label[a:b].copy(),
                s.sig_strength[a:b].copy(), s.sig_kind[a:b].copy())

