"""The keyboard app on the device client: the sticker row computed on the phone.

One :class:`KeyboardApp` per device (``RowTask.device_app``; the platform's population
runner drives it through ``federated.DeviceApp``). Everything private lives in the
device's own SQLite file (:class:`KeyboardStore`, beside the protocol client's tables):

- ``keyboard_sends``: every sticker the user sent (time, sticker and package ids, and the
  keyword match of the text typed with it — the keyboard matches the text on the device
  and keeps the match, never the text);
- ``keyboard_acquisitions``: the packages the phone holds, with when it got them;
- ``keyboard_rows``: the row the keyboard showed at each send (model version, the
  sticker ids shown, whether the sent one was among them);
- ``keyboard_counts`` (a view): sends and last use per sticker — the on-device counts;
- ``keyboard_profile``: cluster, keyboard language, subscriber flag, the personal
  embedding, the downloaded bundle and its ETag.

The row at each send is computed from the store alone: the device's earlier sends and
holdings give the history features (:func:`reranker._sessions.walk_impressions` over a
one-device :class:`RowSessions` read from the store), the global weights come from the
model the client downloaded, the personal embedding from the store (its fold-in before
the first training). Local training (:meth:`KeyboardApp.train`) reads its examples from
the store and writes the refined embedding back; only the shared-weight delta goes to
the protocol client, which clips, encodes and masks it.

What the app shares with the server-side code is the installed part only (catalogue,
stage-1 factors, layout and settings: :class:`KeyboardBundle`); the simulated person
behind the device (:class:`_User`, the sends it has not made yet) is the harness's, and
the store is filled only by what the user does.
"""

from __future__ import annotations

import io
import json
import time
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from data import StickerSuggestError
from federated.device import LocalStore
from reranker._local import fold_in
from reranker._model import ParameterLayout
from reranker._row import RowConfig, StickerCatalog
from reranker._sessions import RowImpressions, RowSessions, walk_impressions

if TYPE_CHECKING:
    from federated.device import HttpTransport

__all__ = ["KeyboardApp", "KeyboardBundle", "KeyboardError", "KeyboardStore", "RowFunctions",
           "Send"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyboard_profile (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_sends (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, sticker_id INTEGER NOT NULL,
    package_id INTEGER NOT NULL, labels BLOB NOT NULL, strengths BLOB NOT NULL,
    kinds BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyboard_acquisitions (ts REAL NOT NULL, package_id INTEGER NOT NULL);
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

    def counts(self) -> dict[int, tuple[int, float]]:
        """The on-device counts: sticker id → (sends, last send time)."""
        return {int(st): (int(n), float(last)) for st, n, last in
                self._conn.execute("SELECT sticker_id, sends, last_ts FROM keyboard_counts")}


@dataclass(frozen=True)
class KeyboardBundle:
    """What the installed keyboard computes with: the same on every device.

    Attributes
    ----------
    catalog : StickerCatalog
    layout : ParameterLayout
    config : RowTaskConfig
        The task's settings (``top_k``, ``max_impressions``, local training's steps).
    functions : RowFunctions
    factors : ndarray of float32, shape (n_packages, d)
        Stage-1 package factors (the fold-in's item side).
    gram : ndarray of float64, shape (d, d)
    regularization, alpha : float
        ALS λ and α of the fold-in.
    package_row : dict
        Package id → stage-1 factor row.
    train_until : float
        No send at or after this time is trained on.
    stage1_version : str
    language : str
        The default keyboard language (a device keeps its own in its store).
    """

    catalog: StickerCatalog
    layout: ParameterLayout
    config: Any
    functions: RowFunctions
    factors: np.ndarray
    gram: np.ndarray
    regularization: float
    alpha: float
    package_row: dict[int, int]
    train_until: float
    stage1_version: str
    language: str

    @classmethod
    def of_task(cls, task: Any, functions: RowFunctions) -> KeyboardBundle:
        """The installed part of a ``RowTask`` (no device's data)."""
        return cls(catalog=task.catalog, layout=task.layout, config=task.config,
                   functions=functions, factors=task._factors, gram=task._gram,
                   regularization=task._reg, alpha=task._alpha,
                   package_row=dict(task.context.package_row), train_until=float(task.split_ts),
                   stage1_version=str(task.context.stage1.version),
                   language=str(task.context.languages[0]))

    @property
    def row(self) -> RowConfig:
        """Candidates and features."""
        return self.config.row


_LANGUAGES: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


def _keyboard_languages(task: Any) -> dict[int, str]:
    """User id → keyboard language (the users table's, when it has a keyword index);
    read once per task."""
    if task not in _LANGUAGES:
        users = task.context.dataset.table("users")
        served = set(task.context.languages)
        _LANGUAGES[task] = ({int(u): str(lang) for u, lang in zip(
            users["user_id"].to_list(), users["language"].to_list(), strict=True)
            if lang in served} if "language" in users.columns else {})
    return _LANGUAGES[task]


@dataclass
class _User:
    """The simulated person behind one device: the sends and holdings still ahead."""

    sends: list[Send]
    acq_ts: np.ndarray
    acq_package_id: np.ndarray


class KeyboardApp:
    """The keyboard on one device (implements ``federated.DeviceApp``).

    Parameters
    ----------
    bundle : KeyboardBundle
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
    clock : callable
        The device's Unix time.
    """

    bundle_check_s: float = 86400.0

    def __init__(self, bundle: KeyboardBundle, path: Path, user: _User, *, start_s: float,
                 end_s: float, held_out: bool) -> None:
        self.clock = time.time
        self.bundle = bundle
        self.store = KeyboardStore(path)
        self._user = user
        self.start_s = float(start_s)
        self.end_s = float(end_s)
        self.held_out = held_out
        self.bundle_bytes = 0

    # ------------------------------------------------------------------ install

    @classmethod
    def install(cls, task: Any, device: int, path: Path, functions: RowFunctions, *,
                start_s: float | None = None, end_s: float | None = None) -> KeyboardApp:
        """The keyboard of ``RowTask`` ``task``'s device ``device``, its store at ``path``.

        A new store gets the phone's past: the device's sends and holdings before
        ``start_s`` (default: ``validation_start``), its cluster and subscription; the
        sends from ``start_s`` on are the user's, made during the run (:meth:`use`).
        ``end_s`` defaults to the end of training (``test_start``). An existing store is
        reopened as it is (the user resumes after its last send).
        """
        start = float(task.split.validation_start if start_s is None else start_s)
        end = float(task.split_ts if end_s is None else end_s)
        if not start <= end:
            raise ValueError(f"start_s={start} should be <= end_s={end}")
        s, cat = task.sessions, task.catalog
        lo, hi = int(s.dev_ptr[device]), int(s.dev_ptr[device + 1])
        sends = []
        for j in range(lo, hi):
            st, pk = int(s.sticker[j]), int(s.package[j])
            a, b = int(s.sig_ptr[s.sig[j]]), int(s.sig_ptr[s.sig[j] + 1])
            sends.append(Send(float(s.ts[j]), int(cat.sticker_ids[st]) if st >= 0 else -1,
                              int(cat.package_ids[pk]) if pk >= 0 else -1,
                              s.sig_label[a:b].copy(), s.sig_strength[a:b].copy(),
                              s.sig_kind[a:b].copy()))
        alo, ahi = int(s.acq_ptr[device]), int(s.acq_ptr[device + 1])
        acq_ts = s.acq_ts[alo:ahi].astype(np.float64)
        acq_ids = cat.package_ids[s.acq_pk[alo:ahi]].astype(np.int64)
        store = KeyboardStore(path)
        try:
            if store.get("cluster") is None:
                store.add_sends([x for x in sends if x.ts < start])
                store.add_acquisitions(acq_ts[acq_ts < start], acq_ids[acq_ts < start])
                store.put("cluster", str(int(s.cluster[device])).encode())
                store.put("subscriber", b"1" if bool(s.subscriber[device]) else b"0")
                store.put("held_out", b"1" if bool(task.validation[device]) else b"0")
                store.put("language", _keyboard_languages(task).get(
                    int(s.user_ids[device]), str(task.context.languages[0])).encode())
            logged = store.sends()
            # a reopened store: the user resumes after its last logged send
            done_until = (float(np.nextafter(logged[-1].ts, np.inf))
                          if logged and logged[-1].ts >= start else start)
            held_out = store.get("held_out") == b"1"
        finally:
            store.close()
        later = acq_ts >= done_until
        user = _User([x for x in sends if x.ts >= done_until], acq_ts[later], acq_ids[later])
        return cls(KeyboardBundle.of_task(task, functions), path, user, start_s=start, end_s=end,
                   held_out=held_out)

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

    def _sessions(self, extra: list[Send]) -> tuple[RowSessions, int]:
        """A one-device :class:`RowSessions` of the store's sends then ``extra`` (sends
        after them), and how many came from the store."""
        logged = self.store.sends()
        allsends = logged + extra
        cat, b = self.bundle.catalog, self.bundle
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
        sessions = RowSessions(
            user_ids=np.zeros(1, np.int32),
            cluster=np.array([self.cluster], np.int32),
            subscriber=np.array([self.store.get("subscriber") == b"1"]),
            dev_ptr=np.array([0, n], np.int64),
            ts=np.array([x.ts for x in allsends], np.float64),
            sig=np.arange(n, dtype=np.int64), sticker=sticker.astype(np.int32),
            package=package.astype(np.int32),
            sent_row=np.array([b.package_row.get(int(p), -1) if p >= 0 else -1
                               for p in pk_ids.tolist()], np.int64),
            sig_ptr=sig_ptr, sig_label=cat_([x.labels for x in allsends], np.int32),
            sig_strength=cat_([x.strengths for x in allsends], np.float32),
            sig_kind=cat_([x.kinds for x in allsends], np.int8),
            acq_ptr=np.array([0, int(keep.sum())], np.int64),
            acq_pk=acq_pk[keep][order].astype(np.int32),
            acq_ts=acq_ts[keep][order].astype(np.float64))
        return sessions, len(logged)

    def _fold_in(self, sessions: RowSessions, n_logged: int) -> np.ndarray:
        """The ridge fold-in (1, d) of the store's sends."""
        b = self.bundle
        return fold_in(np.zeros(n_logged, np.int64), sessions.sent_row[:n_logged], 1,
                       b.factors, b.gram, b.regularization, b.alpha)

    def embedding(self) -> np.ndarray:
        """The personal embedding (1, d): the stored one, else the fold-in of the store."""
        raw = self.store.get("embedding")
        if raw is not None:
            return np.frombuffer(raw, "<f4").reshape(1, -1).copy()
        sessions, n_logged = self._sessions([])
        return self._fold_in(sessions, n_logged)

    def _walk(self, sessions: RowSessions, emit: np.ndarray, cap: int) -> RowImpressions:
        return walk_impressions(sessions, self.bundle.catalog, self.bundle.row,
                                np.zeros(1, np.int64), emit, np.ones(sessions.n_sessions, bool),
                                cap)

    def _scores(self, theta: np.ndarray, users: np.ndarray, imp: RowImpressions
                ) -> np.ndarray:
        return self.bundle.functions.scores(np.asarray(theta, np.float32), self.bundle.layout,
                                            users, imp, self.bundle.catalog.pk_factor)

    def rows_of(self, scores: np.ndarray, imp: RowImpressions) -> list[np.ndarray]:
        """The row shown at each impression: the top ``top_k`` candidates' sticker ids
        (ties in candidate order), one (≤ k,) int32 array per impression."""
        k = self.bundle.config.top_k
        out = []
        for e in range(imp.n_impressions):
            lo, hi = int(imp.ptr[e]), int(imp.ptr[e + 1])
            top = np.argsort(-scores[lo:hi], kind="stable")[:k]
            out.append(self.bundle.catalog.sticker_ids[imp.sticker[lo:hi][top]].astype(np.int32))
        return out

    def _local(self, theta: np.ndarray, users: np.ndarray, imp: RowImpressions, shared: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.bundle.config
        return self.bundle.functions.local_sgd(
            np.asarray(theta, np.float32), self.bundle.layout, users, imp,
            self.bundle.catalog.pk_factor, 1, cfg.steps, cfg.learning_rate if shared else 0.0,
            cfg.embedding_learning_rate, cfg.proximal if shared else 0.0, cfg.embedding_l2)

    # ------------------------------------------------------------------ DeviceApp

    def sync(self, transport: HttpTransport) -> None:
        """Download the cluster's bundle for the keyboard language if it changed (ETag)
        and check it is for the installed stage-1 version; at most once per
        ``bundle_check_s`` (the time of the last check is kept in the store).

        Raises
        ------
        KeyboardError
            The server's bundle is for another stage-1 version than the one the keyboard
            computes with.
        """
        checked = self.store.get("bundle_checked_at")
        now = self.clock()
        if checked is not None and now - float(checked) < self.bundle_check_s:
            return
        etag = self.store.get("bundle_etag")
        headers = {"If-None-Match": etag.decode()} if etag else {}
        language = (self.store.get("language") or self.bundle.language.encode()).decode()
        answer = transport.request(
            "GET", f"/v1/clusters/{self.cluster}/bundle?language={language}", headers=headers)
        if answer.status == 304:
            self.store.put("bundle_checked_at", repr(now).encode())
            return
        with zipfile.ZipFile(io.BytesIO(answer.raw)) as archive:
            # the zip's index (serving's BUNDLE_INDEX): versions and every file's sha256
            index = json.loads(archive.read("bundle-index.json"))
        if str(index.get("stage1")) != self.bundle.stage1_version:
            raise KeyboardError(f"the server's bundle is for stage 1 {index.get('stage1')!r}, "
                                f"the keyboard's is {self.bundle.stage1_version!r}")
        self.store.put("bundle", answer.raw)
        self.store.put("bundle_etag", answer.headers["etag"].encode())
        self.store.put("bundle_checked_at", repr(now).encode())
        self.bundle_bytes += len(answer.raw)

    def use(self, step: int, steps: int, parameters: np.ndarray, model_version: int) -> int:
        """The user types the sends of step ``step`` of ``steps``; each row is computed
        here from the store and ``parameters``, then the sends, the rows shown and the
        new holdings are appended to the store. Held-out devices type nothing."""
        if not 0 <= step < steps:
            raise ValueError(f"step={step} should be in [0, steps={steps})")
        if self.held_out:
            return 0
        until = self.start_s + (self.end_s - self.start_s) * (step + 1) / steps
        now = [x for x in self._user.sends if x.ts < until]
        if now:
            sessions, n_logged = self._sessions(now)
            emit = np.zeros(sessions.n_sessions, bool)
            emit[n_logged:] = True
            imp = self._walk(sessions, emit, self.bundle.row.cap)
            rows = self.rows_of(self._scores(parameters, self.embedding(), imp), imp)
            shown = [(model_version, row, x.sticker_id in row.tolist())
                     for x, row in zip(now, rows, strict=True)]
            self.store.add_sends(now, shown)
            self._user.sends = self._user.sends[len(now):]
        got = self._user.acq_ts < until
        if got.any():
            self.store.add_acquisitions(self._user.acq_ts[got], self._user.acq_package_id[got])
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
        train = np.flatnonzero(sessions.ts < self.bundle.train_until)
        if not train.size:
            return None
        emit = np.zeros(sessions.n_sessions, bool)
        emit[train[-self.bundle.config.max_impressions:]] = True
        imp = self.bundle.functions.reachable(
            self._walk(sessions, emit, self.bundle.row.train_candidates))
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
        emit[max(0, n_logged - self.bundle.config.max_impressions):n_logged] = True
        imp = self.bundle.functions.reachable(
            self._walk(sessions, emit, self.bundle.row.train_candidates))
        if imp.n_impressions:
            _, users, _ = self._local(parameters, users, imp, shared=False)
        return users

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        """On a held-out device: the rows the keyboard would show, personalised for
        ``parameters``, at each of its sends in the span, and whether the sent sticker
        is in them; ``{"hits", "impressions"}`` (counts). Nothing is stored. Other
        devices: ``{}``."""
        if not self.held_out:
            return {}
        window = [x for x in self._user.sends if x.ts < self.end_s]
        if not window:
            return {}
        users = self.personalize(parameters)
        sessions, n_logged = self._sessions(window)
        emit = np.zeros(sessions.n_sessions, bool)
        emit[n_logged:] = True
        imp = self._walk(sessions, emit, self.bundle.row.cap)
        hit, _ = self.bundle.functions.hits(self._scores(parameters, users, imp), imp,
                                            self.bundle.config.top_k)
        return {"hits": float(hit.sum()), "impressions": float(imp.n_impressions)}
