"""The real device client: enrol, fetch tokens, download the model, train, run SecAgg+ over HTTP.

Application-agnostic: the app gives it a ``trainer`` (global parameters (P,) → its local
delta (P,), computed from the app's private on-device state) and a ``conditions``
callable (charging, idle, free storage: what the phone's OS reports). Everything the
client keeps lives in one local SQLite file (:class:`DeviceStore`): its enrolment
credential, unspent tokens, the downloaded model and its ETag, and its daily upload tally.
Nothing leaves the device but what the protocol sends: blinded token requests, one token
per round, public keys, encrypted shares, the masked (clipped, noised, encoded) input,
a signature and the unmasking shares.

One round (:meth:`DeviceClient.participate`): check eligibility on the device's own
clock; redeem a token at check-in; poll for each protocol message and answer it with
:class:`SecAggClient`; stop cleanly at any stage — a deadline missed, the server gone, an
abandoned round, or a scripted drop-out — discarding the round's secrets.
"""

from __future__ import annotations

import base64
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from federated._config import DeviceConfig
from federated._ddg import DiscreteGaussianEncoding, secure_noise_generator
from federated._device import DAY_S, _is_night
from federated._local_dp import clip_deltas
from federated._secagg import Message, SecAggAbandoned, SecAggClient, SecAggProtocolError
from federated._tokens import Token, finalize_tokens, request_tokens, token_day
from federated._transport import HttpResponse, HttpTransport, TransportError

__all__ = [
    "DeviceClient",
    "DeviceConditions",
    "DeviceStore",
    "LocalStore",
    "RoundParticipation",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS tokens (input BLOB PRIMARY KEY, authenticator BLOB NOT NULL,
                                   day INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (day INTEGER PRIMARY KEY, count INTEGER NOT NULL);
"""

_STAGE_OF_KIND = {"round_setup": "advertise", "neighbour_keys": "share",
                  "forwarded_shares": "mask", "survivor_list": "consistency",
                  "unmask_request": "unmask"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class LocalStore:
    """One SQLite file on the device with a ``name → value`` table; subclasses name their
    ``schema`` (which creates ``values_table (name TEXT PRIMARY KEY, value BLOB)``) and add
    their own tables. Several stores may share one file.

    Parameters
    ----------
    path : Path
        The file; created with the subclass's schema if absent.
    """

    schema: str = ""
    values_table: str = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.executescript(self.schema)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def get(self, name: str) -> bytes | None:
        """A stored value (None if unset)."""
        row = self._conn.execute(f"SELECT value FROM {self.values_table} WHERE name=?",
                                 (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, name: str, value: bytes) -> None:
        """Set a value."""
        self._conn.execute(f"INSERT OR REPLACE INTO {self.values_table} VALUES (?, ?)",
                           (name, value))


class DeviceStore(LocalStore):
    """The device's private SQLite store (one file per device).

    Parameters
    ----------
    path : Path
        The file; created with its schema if absent.
    """

    schema = _SCHEMA
    values_table = "settings"

    def add_tokens(self, tokens: list[Token]) -> None:
        """Keep finalized tokens until they are spent."""
        self._conn.executemany("INSERT INTO tokens VALUES (?, ?, ?)",
                               [(t.input, t.authenticator, t.day) for t in tokens])

    def count_tokens(self, day: int) -> int:
        """Unspent tokens of ``day``."""
        return int(self._conn.execute("SELECT COUNT(*) FROM tokens WHERE day=?", (day,)
                                      ).fetchone()[0])

    def take_token(self, today: int) -> Token | None:
        """Remove and return one token still valid today (oldest day first), or None."""
        self._conn.execute("DELETE FROM tokens WHERE day < ?", (today - 1,))
        row = self._conn.execute("SELECT input, authenticator FROM tokens ORDER BY day "
                                 "LIMIT 1").fetchone()
        if row is None:
            return None
        self._conn.execute("DELETE FROM tokens WHERE input=?", (row[0],))
        return Token(bytes(row[0]), bytes(row[1]))

    def uploads_on(self, day: int) -> int:
        """Masked inputs sent on ``day`` (the daily cap counts these)."""
        row = self._conn.execute("SELECT count FROM uploads WHERE day=?", (day,)).fetchone()
        return 0 if row is None else int(row[0])

    def count_upload(self, day: int) -> None:
        """Count one upload on ``day``."""
        self._conn.execute("INSERT INTO uploads VALUES (?, 1) ON CONFLICT(day) DO UPDATE "
                           "SET count = count + 1", (day,))


@dataclass(frozen=True)
class DeviceConditions:
    """What the phone reports about itself at one moment.

    Attributes
    ----------
    charging : bool
    battery : float
        Fraction in [0, 1].
    idle : bool
        The user is not using the phone.
    free_storage_mb : float
    """

    charging: bool = True
    battery: float = 1.0
    idle: bool = True
    free_storage_mb: float = 4096.0


@dataclass
class RoundParticipation:
    """What one round was like for one device (kept on the device; tests read it).

    Attributes
    ----------
    round : int or None
    status : str
        ``ineligible``, ``no_round``, ``no_token``, ``refused``, ``dropped`` (scripted or
        deadline), ``abandoned``, ``completed`` (every stage answered), ``failed``.
    last_stage : str or None
        The last stage this device answered.
    masked_sent : bool
        Its masked input was acknowledged (it counts in the sum unless the round is
        abandoned).
    report : ndarray or None, shape (D,), uint32
        Its encoded input (what the sum adds up); stays on the device.
    detail : str
    reason : str
        The server's problem slug (``dropped_out``, ``round_closed`` ...) or
        ``unreachable`` when the participation ended on a transport error.
    """

    round: int | None
    status: str
    last_stage: str | None = None
    masked_sent: bool = False
    report: np.ndarray | None = field(default=None, repr=False)
    detail: str = ""
    reason: str = ""


class DeviceClient:
    """One device's federated client.

    Parameters
    ----------
    transport : HttpTransport
    store : DeviceStore
    trainer : callable
        ``trainer(parameters (P,) float32) -> delta (P,)``: local training on the app's
        private data (runs on the device; the delta never leaves it unencoded). None:
        nothing to train on now (the device does not check in and keeps its token).
    device_config : DeviceConfig, optional
        Eligibility thresholds (charging, battery, storage, idle, night).
    conditions : callable, optional
        Returns the phone's current :class:`DeviceConditions` (default: always ready).
    max_uploads_per_day : int
        The device's own daily cap.
    clock : callable
        Unix time of the device.
    poll_interval_s : float
        First wait between polls when the server says "not yet" (then ×1.5 per poll,
        with jitter, up to ``max_poll_interval_s``; back to this after each message).
    max_poll_interval_s : float, optional
        Longest wait between polls (default 4 × ``poll_interval_s``).
    announce_leave : bool
        On a scripted drop-out, tell the server (a phone that stops on purpose can;
        one that loses its network cannot: False keeps the drop-out silent).
    """

    def __init__(self, transport: HttpTransport, store: DeviceStore,
                 trainer: Callable[[np.ndarray], np.ndarray | None], *,
                 device_config: DeviceConfig | None = None,
                 conditions: Callable[[], DeviceConditions] = DeviceConditions,
                 max_uploads_per_day: int = 2, clock: Callable[[], float] = time.time,
                 poll_interval_s: float = 0.25, max_poll_interval_s: float | None = None,
                 announce_leave: bool = True) -> None:
        self.transport = transport
        self.store = store
        self.trainer = trainer
        self.device_config = device_config or DeviceConfig(require_charging=True,
                                                           require_idle=True)
        self.conditions = conditions
        self.max_uploads_per_day = max_uploads_per_day
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s or 4 * poll_interval_s
        self.announce_leave = announce_leave
        self.transient_failures = 0
        """Requests that found the server unreachable after the transport's retries and
        were tried again (a loaded server)."""

    # ------------------------------------------------------------ set-up steps

    def enrol(self) -> None:
        """Get an enrolment credential once (kept in the device store)."""
        if self.store.get("credential") is None:
            answer = self.transport.request("POST", "/v1/secure/enrolments")
            self.store.put("credential", base64.b64decode(answer.body["credential"]))

    def refill_tokens(self, n: int) -> int:
        """Fetch today's tokens up to ``n`` unspent ones; returns how many it holds.

        All at once, well before spending any (issuance and redemption times apart).
        """
        day = token_day(self.clock())
        have = self.store.count_tokens(day)
        if have >= n:
            return have
        credential = self.store.get("credential")
        if credential is None:
            raise RuntimeError("refill_tokens() before enrol()")
        pending = request_tokens(day, n - have)
        answer = self.transport.request(
            "POST", "/v1/secure/tokens", {"blinded": [_b64(b) for b in pending.blinded]},
            headers={"Authorization": f"Bearer {_b64(credential)}"})
        if int(answer.body["day"]) != day:
            return have  # the day turned meanwhile; try again next time
        key = self.transport.request("GET", "/v1/secure/tokens/key").body
        public_key = base64.b64decode(answer.body["public_key"])
        if base64.b64decode(key["public_key"]) != public_key:
            raise TransportError(None, "key_mismatch", "the issuer used another public key "
                                 "than the one it publishes to everyone")
        tokens = finalize_tokens(pending, [base64.b64decode(e) for e in
                                           answer.body["evaluations"]], public_key)
        self.store.add_tokens(tokens)
        return have + len(tokens)

    def sync_model(self) -> tuple[int, np.ndarray]:
        """Download the global parameters if they changed (ETag); (version, params)."""
        etag = self.store.get("model_etag")
        headers = {"If-None-Match": etag.decode()} if etag else {}
        answer = self.transport.request("GET", "/v1/secure/model", headers=headers)
        if answer.status == 200:
            self.store.put("model", base64.b64decode(answer.body["parameters"]))
            self.store.put("model_version", str(answer.body["model_version"]).encode())
            self.store.put("model_etag", answer.headers["etag"].encode())
        raw, version = self.store.get("model"), self.store.get("model_version")
        assert raw is not None and version is not None
        return int(version), np.frombuffer(raw, "<f4").astype(np.float32)

    def eligible(self) -> tuple[bool, str]:
        """Whether the device may train now, on its own clock and conditions."""
        cfg, now, c = self.device_config, self.clock(), self.conditions()
        checks = [
            (c.free_storage_mb >= cfg.min_free_storage_mb, "low storage"),
            (c.charging or not cfg.require_charging, "not charging"),
            (c.battery >= cfg.min_battery, "battery low"),
            (c.idle or not cfg.require_idle, "in use"),
            (_is_night(now, cfg) or not cfg.require_night, "not night"),
            (self.store.uploads_on(int(now // DAY_S)) < self.max_uploads_per_day,
             "daily cap reached"),
        ]
        for ok, why in checks:
            if not ok:
                return False, why
        return True, "eligible"

    # ------------------------------------------------------------------ round

    def participate(self, *, drop_after: str | None = None, deadline_s: float = 600.0
                    ) -> RoundParticipation:
        """Take part in the open round, from check-in to the unmasking stage.

        Parameters
        ----------
        drop_after : str, optional
            Leave cleanly right after answering this stage (``advertise``, ``share``,
            ``mask``, ``consistency``): how tests and runs script drop-outs.
        deadline_s : float
            Give up (drop out) after this long on the device's clock.
        """
        ok, why = self.eligible()
        if not ok:
            return RoundParticipation(None, "ineligible", detail=why)
        try:
            info = self.transport.request("GET", "/v1/secure/round").body
        except TransportError as exc:
            return RoundParticipation(None, "no_round", detail=str(exc))
        round_ = int(info["round"])
        if info["stage"] != "checkin":
            return RoundParticipation(round_, "no_round", detail=f"round {round_} is past "
                                      "check-in")
        version, params = self.sync_model()
        if version != int(info["model_version"]):
            return RoundParticipation(round_, "no_round", detail="model changed meanwhile")
        # train first: a device with nothing to learn from keeps its token
        delta = self.trainer(params)
        if delta is None:
            return RoundParticipation(round_, "ineligible", detail="nothing to train on")
        token = self.store.take_token(token_day(self.clock()))
        if token is None:
            return RoundParticipation(round_, "no_token", detail="no unspent token today")
        report = self._encode(delta, info)
        try:
            answer = self.transport.request("POST", f"/v1/secure/rounds/{round_}/checkins", {
                "token": {"input": _b64(token.input),
                          "authenticator": _b64(token.authenticator)}})
        except TransportError as exc:
            return RoundParticipation(round_, "refused", detail=str(exc))
        ticket = answer.body["ticket"]
        return self._run_protocol(round_, ticket, report, drop_after, deadline_s)

    def _encode(self, update: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        delta = np.asarray(update, np.float32).reshape(1, -1)
        raw = info["encoding"]
        enc = DiscreteGaussianEncoding(**{f.name: raw[f.name]
                                          for f in fields(DiscreteGaussianEncoding)})
        clipped = clip_deltas(delta, enc.clip_norm)
        # rounding and DP noise each from their own CSPRNG-seeded stream
        return enc.encode(clipped, int(info["rotation_seed"]), secure_noise_generator(),
                          secure_noise_generator())[0]

    def _patient(self, method: str, path: str, body: Any, auth: dict[str, str],
                 give_up: float) -> HttpResponse:
        """A protocol request that outlasts a busy server: when the transport's own
        retries are spent without an answer (timeouts, 5xx), try again until the
        device's round deadline; an answer of the server (4xx) ends it at once."""
        while True:
            try:
                return self.transport.request(method, path, body, headers=auth)
            except TransportError as exc:
                if exc.reason != "unreachable" or self.clock() >= give_up:
                    raise
                self.transient_failures += 1
                time.sleep(self.max_poll_interval_s * random.random())

    def _leave(self, round_: int, auth: dict[str, str]) -> None:
        """Tell the server this device is gone (best effort: silence works too)."""
        with contextlib.suppress(TransportError):
            self.transport.request("POST", f"/v1/secure/rounds/{round_}/leave", headers=auth)

    def _run_protocol(self, round_: int, ticket: str, report: np.ndarray,
                      drop_after: str | None, deadline_s: float) -> RoundParticipation:
        client = SecAggClient(report)
        auth = {"Authorization": f"Bearer {ticket}"}
        result = RoundParticipation(round_, "failed", report=report)
        give_up = self.clock() + deadline_s
        wait = self.poll_interval_s
        unconfirmed_mask = False
        try:
            while self.clock() < give_up:
                answer = self._patient("GET", f"/v1/secure/rounds/{round_}/message", None,
                                       auth, give_up)
                if answer.status == 202:
                    # back off while the stage runs (fewer polls on a loaded server);
                    # jitter keeps a cohort from polling in step
                    time.sleep(wait * (0.75 + 0.5 * random.random()))
                    wait = min(wait * 1.5, self.max_poll_interval_s)
                    continue
                wait = self.poll_interval_s
                msg = Message.from_bytes(base64.b64decode(answer.body["message"]))
                stage = _STAGE_OF_KIND[msg.kind]
                if unconfirmed_mask:  # a message after the mask stage: our input was summed
                    unconfirmed_mask = False
                    result.masked_sent = True
                    self.store.count_upload(int(self.clock() // DAY_S))
                reply = client.handle(msg)
                confirmed = True
                try:
                    self._patient("POST", f"/v1/secure/rounds/{round_}/messages",
                                  {"message": _b64(reply.to_bytes())}, auth, give_up)
                except TransportError as exc:
                    # a retry of a reply the server stored before the answer was lost: the
                    # same stage (replayed) or, if the stage closed meanwhile, a later one;
                    # whether it counted shows at the next poll (a message, or 410)
                    if exc.reason not in ("replayed_message", "wrong_stage"):
                        raise
                    confirmed = exc.reason == "replayed_message"
                result.last_stage = stage
                if stage == "mask":
                    if confirmed:
                        result.masked_sent = True
                        self.store.count_upload(int(self.clock() // DAY_S))
                    else:
                        unconfirmed_mask = True
                if stage == "unmask":
                    result.status = "completed"
                    return result
                if stage == drop_after:
                    result.status, result.detail = "dropped", f"left after {stage}"
                    result.reason = "scripted"
                    if self.announce_leave:
                        self._leave(round_, auth)
                    return result
            result.status, result.detail = "dropped", "gave up at the device's deadline"
            result.reason = "device_deadline"
            self._leave(round_, auth)
        except TransportError as exc:
            if exc.reason == "round_closed":
                result.status = "abandoned" if not result.masked_sent else "closed"
            else:
                result.status = "dropped"
            result.detail = str(exc)
            result.reason = exc.reason
        except SecAggAbandoned as exc:
            result.status, result.detail = "abandoned", str(exc)
        except SecAggProtocolError as exc:
            result.status, result.detail = "refused", str(exc)
        return result
