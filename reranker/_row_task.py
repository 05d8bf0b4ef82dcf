"""The sticker row as the federated task: sticker candidates, on-device history features.

:class:`RowTask` implements ``federated.FederatedTask`` for the row model
``s_i = v_iᵀ(Wᵀu + c) + aᵀK_i + b r_i + eᵀH_i``. Every device's impressions are
assembled as its phone would at each send (:func:`reranker._sessions.walk_impressions`:
history features from earlier sends only); ``local_train`` returns only shared-weight
deltas — history features, counts and the personal embedding stay in this object (the
"phones").

Split (``data.time_split``): devices train on their sends before ``test_start``;
validation devices (``is_validation_device``) never train, and the per-round metric
(:meth:`RowTask.evaluate`) is measured on their sends in ``[validation_start,
test_start)`` — never on the report's devices or window — beside the no-model
baselines on the same sessions (recents row, owned rows, device counts, stage-1 order).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from candidate_gen import Stage1Artifact
from data import ComponentConfig, ConfigError, open_dataset
from federated import LocalResult, TaskContext
from keyword_index import FEATURE_NAMES
from reranker._artifact import write_model_files
from reranker._context import RankingContext
from reranker._device_state import DeviceStateMixin
from reranker._local import fold_in
from reranker._model import ParameterLayout, initial_parameters
from reranker._row import HISTORY_FEATURE_NAMES, RowConfig, StickerCatalog
from reranker._segment import SegmentPopularity
from reranker._sessions import (
    RowImpressions,
    RowSessions,
    build_row_sessions,
    walk_impressions,
)

__all__ = ["PipelineSplit", "RowTask", "RowTaskConfig", "make_row_task", "pipeline_split",
           "row_hits", "row_local_sgd", "row_scores"]


class RowTaskConfig(ComponentConfig):
    """Settings of the sticker row as a federated task."""

    config_name: ClassVar[str] = "reranker row task config"

    row: RowConfig = Field(default_factory=RowConfig, description="Candidates and features.")
    eval_devices: int = Field(2000, ge=1, description=(
        "Validation devices (with sends in the validation window) evaluated each round."))
    max_impressions: int = Field(64, ge=1, description=(
        "Most recent impressions a device trains on per participation."))
    top_k: int = Field(5, ge=1, description="Length of the visible sticker row.")
    steps: int = Field(5, ge=1, description="Local full-batch gradient steps.")
    learning_rate: float = Field(0.5, gt=0, description="Local step size (shared weights).")
    embedding_learning_rate: float = Field(0.2, ge=0, description=(
        "Local step size of the personal user embedding."))
    embedding_l2: float = Field(0.1, ge=0, description="Pull of the embedding to its fold-in.")
    proximal: float = Field(0.01, ge=0, description="Pull toward the global weights.")
    device_batch: int = Field(256, ge=1, description="Devices trained together (memory).")
    seed: int = Field(0, description="Seed of the evaluation sample.")
    train_until: Literal["test_start", "validation_start"] = Field("test_start", description=(
        "End of the training window: `test_start` for a model that is reported, "
        "`validation_start` when tuning, so nothing trains (or personalises) on the "
        "validation window's time, not even on other devices."))


@dataclass(frozen=True)
class PipelineSplit:
    """The pipeline's one split (``data.TimeSplit``'s fields used here)."""

    validation_start: float
    test_start: float
    validation_share: float
    salt: str

    def is_validation_device(self, user_ids: np.ndarray) -> np.ndarray:
        """``sha256(salt, user id)`` below ``validation_share`` (as ``data.TimeSplit``)."""
        ids = np.asarray(user_ids)
        if ids.size == 0 or self.validation_share <= 0:
            return np.zeros(ids.shape, bool)
        prefix = self.salt.encode() + b"\x00"
        buckets = np.fromiter(
            (int.from_bytes(hashlib.sha256(prefix + str(u).encode()).digest()[:8], "big")
             for u in ids.ravel().tolist()), dtype=np.uint64, count=ids.size).reshape(ids.shape)
        return buckets < np.uint64(int(min(self.validation_share, 1.0) * 2.0**64))


def pipeline_split(dataset: Any) -> PipelineSplit:
    """The dataset's split: ``data.time_split`` when available, else the same default
    (0.65 / 0.8 quantiles of the interaction times, 10 % validation devices)."""
    import data

    if hasattr(data, "time_split"):
        s = data.time_split(dataset)
        return PipelineSplit(float(s.validation_start), float(s.test_start),
                             float(s.validation_share), str(s.salt))
    import polars as pl

    ts = (dataset.scan("interactions").select(pl.col("ts").cast(pl.Int64)).collect()
          ["ts"].to_numpy() / 1000.0)
    val, test = (float(x) for x in np.quantile(ts, [0.65, 0.8]))
    return PipelineSplit(val, test, 0.1, "sticker-suggest/validation-devices")


def _context_index(layout: ParameterLayout) -> np.ndarray:
    """Positions in θ of ``[a, b, e]`` (the weights of ``[K, r, H]``)."""
    d, k, h = layout.n_factors, layout.n_keyword_features, layout.n_history_features
    base = d * d
    return np.concatenate([np.arange(base, base + k + 1),
                           np.arange(layout.n_parameters - h, layout.n_parameters)])


def row_scores(theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
               imp: RowImpressions, pk_factor: np.ndarray) -> np.ndarray:
    """Scores (R,) of every row of ``imp`` under global θ (P,); ``users`` (B, d) is indexed
    by ``imp.device``."""
    w, _, _, c = layout.unpack(theta)
    z = users @ w + c  # (B, d): Wᵀu + c per device
    dev = np.repeat(imp.device, imp.sizes)
    ctx_w = theta[_context_index(layout)]
    return (np.einsum("rd,rd->r", pk_factor[imp.package], z[dev])
            + imp.context_features() @ ctx_w).astype(np.float32)


def row_hits(scores: np.ndarray, imp: RowImpressions, k: int, explore_slots: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """Whether the sent sticker is in the row of ``k`` (E,), and its rank (E,; -1 absent).

    Ties rank in candidate order. With ``explore_slots`` the last slots go to the best
    candidates from packages new to the device (history column ``package_new``) when
    the row has none; the sent sticker is in the row if it holds one of those slots.
    """
    e = imp.n_impressions
    ok = imp.pos >= 0
    rank = np.full(e, -1, np.int64)
    hit = np.zeros(e, bool)
    new_col = HISTORY_FEATURE_NAMES.index("package_new")
    for i in np.flatnonzero(ok).tolist():
        lo, hi = imp.ptr[i], imp.ptr[i + 1]
        s = scores[lo:hi]
        p = int(imp.pos[i])
        r = int((s > s[p]).sum() + (s[:p] == s[p]).sum())
        rank[i] = r
        if explore_slots <= 0:
            hit[i] = r < k
            continue
        order = np.argsort(-s, kind="stable")
        row = list(order[:k])
        new = imp.history[lo:hi, new_col] > 0
        if not new[row].any():
            extra = [j for j in order[k:] if new[j]][:min(explore_slots, k)]
            if extra:
                row = row[: k - len(extra)] + extra
        hit[i] = p in row
    return hit, rank


def row_local_sgd(theta: np.ndarray, layout: ParameterLayout, users: np.ndarray,
                  imp: RowImpressions, pk_factor: np.ndarray, n_devices: int, steps: int,
                  learning_rate: float, embedding_learning_rate: float, proximal: float,
                  embedding_l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local training of ``n_devices`` devices on their impressions (every ``pos >= 0``).

    Listwise softmax cross-entropy of the sent sticker among each impression's candidates,
    ``steps`` full-batch gradient steps from θ (FedProx pull ``proximal``); the personal
    embedding moves with its own step size, pulled to its fold-in.

    Returns
    -------
    local : ndarray of float32, shape (B, P)
    users : ndarray of float32, shape (B, d)
    loss : ndarray of float32, shape (B,)
        Mean cross-entropy before training (NaN for a device without impressions).
    """
    d = layout.n_factors
    b_ = n_devices
    sizes = imp.sizes
    starts = imp.ptr[:-1]
    n_imp = np.bincount(imp.device, minlength=b_).astype(np.float64)
    has = n_imp > 0
    dev_row = np.repeat(imp.device, sizes)
    v = pk_factor[imp.package].astype(np.float64)  # (R, d)
    ctx = imp.context_features().astype(np.float64)  # (R, k+1+h)
    target = starts + imp.pos
    v_pos, ctx_pos = v[target], ctx[target]
    cidx = _context_index(layout)
    local = np.broadcast_to(theta.astype(np.float64), (b_, theta.size)).copy()
    u = users.astype(np.float64).copy()
    u0 = u.copy()
    loss = np.full(b_, np.nan)
    dev_starts = np.searchsorted(imp.device, np.arange(b_))
    active = np.flatnonzero(has)
    for step in range(steps):
        w = local[:, : d * d].reshape(b_, d, d)
        c = local[:, layout.n_parameters - layout.n_history_features - d:
                  layout.n_parameters - layout.n_history_features]
        z = np.einsum("bd,bde->be", u, w) + c
        s = np.einsum("rd,rd->r", v, z[dev_row]) + np.einsum("rc,rc->r", ctx,
                                                               local[:, cidx][dev_row])
        gmax = np.maximum.reduceat(s, starts)
        ex = np.exp(s - np.repeat(gmax, sizes))
        den = np.add.reduceat(ex, starts)
        pi = ex / np.repeat(den, sizes)
        if step == 0:
            logp = s[target] - gmax - np.log(den)
            loss[active] = -np.add.reduceat(logp, dev_starts[active]) / n_imp[active]
        g_v_imp = v_pos - np.add.reduceat(pi[:, None] * v, starts)  # (E, d)
        g_c_imp = ctx_pos - np.add.reduceat(pi[:, None] * ctx, starts)
        g_v = np.zeros((b_, d))
        g_c = np.zeros((b_, ctx.shape[1]))
        g_v[active] = np.add.reduceat(g_v_imp, dev_starts[active]) / n_imp[active, None]
        g_c[active] = np.add.reduceat(g_c_imp, dev_starts[active]) / n_imp[active, None]
        g_u = np.einsum("bde,be->bd", w, g_v)
        grad = np.zeros_like(local)
        grad[:, : d * d] = (u[:, :, None] * g_v[:, None, :]).reshape(b_, d * d)
        grad[:, cidx] = g_c
        grad[:, layout.n_parameters - layout.n_history_features - d:
             layout.n_parameters - layout.n_history_features] = g_v
        step_ = learning_rate * (grad - proximal * (local - theta))
        local[has] += step_[has]
        u[has] += embedding_learning_rate * (g_u - embedding_l2 * (u - u0))[has]
    return local.astype(np.float32), u.astype(np.float32), loss.astype(np.float32)


class RowTask(DeviceStateMixin):
    """The sticker row, trainable by the federated platform.

    Parameters
    ----------
    context : RankingContext
    catalog : StickerCatalog
    sessions : RowSessions
        Every device's sends.
    split : PipelineSplit
    config : RowTaskConfig
    """

    name = "reranker"

    def __init__(self, context: RankingContext, catalog: StickerCatalog, sessions: RowSessions,
                 split: PipelineSplit, config: RowTaskConfig | None = None) -> None:
        self.context = context
        self.catalog = catalog
        self.sessions = sessions
        self.split = split
        self.config = config or RowTaskConfig()
        base = context.layout
        self.layout = ParameterLayout(base.n_factors, base.n_keyword_features,
                                      len(HISTORY_FEATURE_NAMES))
        self.n_parameters = self.layout.n_parameters
        self.n_devices = sessions.n_devices
        s1 = context.stage1
        self._factors = s1.package_factors.astype(np.float32)
        self._gram = self._factors.T.astype(np.float64) @ self._factors.astype(np.float64)
        self._reg = float(s1.config.regularization)
        self._alpha = float(s1.config.als.alpha)
        self.validation = split.is_validation_device(sessions.user_ids)
        dev = sessions.device
        self.alive = np.ones(sessions.n_sessions, bool)
        # a validation device's history ends where its evaluation window starts; when
        # tuning, every device's does
        train_end = (split.validation_start if self.config.train_until == "validation_start"
                     else split.test_start)
        self.history_until = np.where(self.validation, split.validation_start, train_end)
        self.train = ~self.validation[dev] & (sessions.ts < train_end)
        self.eval_window = (self.validation[dev] & (sessions.ts >= split.validation_start)
                            & (sessions.ts < split.test_start))
        self.user_state = np.zeros((self.n_devices, self.layout.n_factors), np.float32)
        self.has_state = np.zeros(self.n_devices, bool)
        rng = np.random.default_rng(self.config.seed)
        held = np.unique(dev[self.eval_window])
        self.eval_devices = (np.sort(rng.choice(held, size=min(held.size,
                                                               self.config.eval_devices),
                                                replace=False)) if held.size else held)
        self.split_ts = float(train_end)  # nothing trained on or after this time
        self._segment: SegmentPopularity | None = None
        self._fold_in_only: dict[tuple[str, str], dict[str, float]] = {}

    @property
    def segment_popularity(self) -> SegmentPopularity:
        """The server's segment popularity as of ``validation_start`` (built once).

        The per-round metric evaluates on ``[validation_start, test_start)``; the server
        knows only its log before that window.
        """
        if self._segment is None:
            self._segment = SegmentPopularity(self.context.dataset,
                                              self.split.validation_start)
        return self._segment

    # ------------------------------------------------------------------ helpers
    def _fold_in(self, devices: np.ndarray) -> np.ndarray:
        """Ridge fold-in (B, d) from each device's live sends before its history end."""
        s = self.sessions
        chunks, owners = [], []
        for i, dv in enumerate(devices.tolist()):
            idx = np.arange(s.dev_ptr[dv], s.dev_ptr[dv + 1])
            idx = idx[self.alive[idx] & (s.ts[idx] < self.history_until[dv])]
            chunks.append(idx)
            owners.append(np.full(idx.size, i))
        idx = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        own = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        return fold_in(own, s.sent_row[idx], devices.size, self._factors, self._gram,
                       self._reg, self._alpha)

    def _train_impressions(self, devices: np.ndarray, cap: int | None) -> RowImpressions:
        """Trainable impressions of ``devices``: each one's ``cap`` most recent live
        training sends whose sticker is a candidate."""
        s = self.sessions
        emit = np.zeros(s.n_sessions, bool)
        for dv in devices.tolist():
            idx = np.arange(s.dev_ptr[dv], s.dev_ptr[dv + 1])
            idx = idx[self.alive[idx] & self.train[idx]]
            emit[idx[-cap:] if cap else idx] = True
        imp = walk_impressions(s, self.catalog, self.config.row, devices, emit,
                               self.alive, self.config.row.train_candidates)
        return _only_reachable(imp)

    def _local(self, theta: np.ndarray, devices: np.ndarray, users: np.ndarray,
               imp: RowImpressions, shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        return row_local_sgd(theta, self.layout, users, imp, self.catalog.pk_factor,
                             devices.size, cfg.steps, cfg.learning_rate if shared else 0.0,
                             cfg.embedding_learning_rate, cfg.proximal if shared else 0.0,
                             cfg.embedding_l2)

    def personalize(self, parameters: np.ndarray, devices: np.ndarray) -> np.ndarray:
        """Personal embeddings (B, d) the phones derive for global ``parameters``: the
        fold-in of their history, refined against the fixed weights (no upload)."""
        devices = np.asarray(devices, np.int64)
        theta = np.asarray(parameters, np.float32)
        out = np.zeros((devices.size, self.layout.n_factors), np.float32)
        for lo in range(0, devices.size, self.config.device_batch):
            batch = devices[lo: lo + self.config.device_batch]
            users = self._fold_in(batch)
            s = self.sessions
            emit = np.zeros(s.n_sessions, bool)
            for dv in batch.tolist():
                idx = np.arange(s.dev_ptr[dv], s.dev_ptr[dv + 1])
                idx = idx[self.alive[idx] & (s.ts[idx] < self.history_until[dv])]
                emit[idx[-self.config.max_impressions:]] = True
            imp = _only_reachable(walk_impressions(s, self.catalog, self.config.row, batch,
                                                   emit, self.alive,
                                                   self.config.row.train_candidates))
            if imp.n_impressions:
                _, users, _ = self._local(theta, batch, users, imp, shared=False)
            out[lo: lo + batch.size] = users
        return out

    # ------------------------------------------------------------------ FederatedTask
    def initial_parameters(self) -> np.ndarray:
        """Keyword-first, stage-1-ordered weights; no personal or history term, (P,)."""
        return initial_parameters(self.layout)

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        """Train ``devices`` locally from ``parameters``; deltas (B, P), counts (B,).

        Validation devices never train (they return zero deltas and no examples).
        """
        devices = np.asarray(devices, np.int64)
        theta = np.asarray(parameters, np.float32)
        deltas = np.zeros((devices.size, self.n_parameters), np.float32)
        n_examples = np.zeros(devices.size, np.int64)
        loss = np.full(devices.size, np.nan, np.float32)
        for lo in range(0, devices.size, self.config.device_batch):
            batch = devices[lo: lo + self.config.device_batch]
            trainable = batch[~self.validation[batch]]
            if not trainable.size:
                continue
            users = self.user_embeddings(trainable)
            imp = self._train_impressions(trainable, self.config.max_impressions)
            if not imp.n_impressions:
                continue
            local, u_new, l_b = self._local(theta, trainable, users, imp, shared=True)
            counts = np.bincount(imp.device, minlength=trainable.size)
            at = lo + np.flatnonzero(~self.validation[batch])
            active = counts > 0
            deltas[at[active]] = local[active] - theta
            loss[at[active]] = l_b[active]
            n_examples[at] = counts
            self.user_state[trainable[active]] = u_new[active]
            self.has_state[trainable[active]] = True
        return LocalResult(deltas=deltas, n_examples=n_examples, loss=loss)

    def user_embeddings(self, devices: np.ndarray) -> np.ndarray:
        """Personal embeddings (B, d): trained state, else the fold-in."""
        out = self._fold_in(devices)
        has = self.has_state[devices]
        out[has] = self.user_state[devices[has]]
        return out

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        """Validation metrics of ``parameters`` beside the no-model baselines.

        On the validation devices' sends in ``[validation_start, test_start)`` (each
        phone personalised for ``parameters`` from its history before
        ``validation_start``; history features from all its earlier sends): ``hit@k`` of
        the model, of the recents row, the owned rows (held stickers sent-first, and
        best-match-first), device counts, segment popularity (the server's log before
        ``validation_start``), fold-in only (the initial weights with each phone's own
        personalisation; computed once per evaluation set) and stage-1 order, the
        strongest of the no-model rows (stage-1 order excluded) and the model's margin
        over it, the same
        on sends whose package is new to the device, and the displayable ceiling (sent
        sticker among the candidates).
        """
        return self.evaluate_sessions(parameters, self.eval_devices, self.eval_window)

    def evaluate_sessions(self, parameters: np.ndarray, devices: np.ndarray,
                          window: np.ndarray) -> dict[str, float]:
        """:meth:`evaluate` on any devices and sessions (``window`` (S,) bool)."""
        k = self.config.top_k
        theta = np.asarray(parameters, np.float32)
        theta0 = np.asarray(self.initial_parameters(), np.float32)
        key = (hashlib.sha256(np.asarray(devices, np.int64).tobytes()).hexdigest(),
               hashlib.sha256(np.packbits(np.asarray(window, bool)).tobytes()).hexdigest())
        fold_in_cached = self._fold_in_only.get(key)
        fold_in_acc: dict[str, float] = {}
        acc: dict[str, float] = {}
        n = 0
        for lo in range(0, devices.size, self.config.device_batch):
            batch = np.asarray(devices[lo: lo + self.config.device_batch], np.int64)
            users = self.personalize(theta, batch)
            imp = walk_impressions(self.sessions, self.catalog, self.config.row, batch,
                                   window, self.alive, self.config.row.cap,
                                   segment=self.segment_popularity)
            if not imp.n_impressions:
                continue
            scores = row_scores(theta, self.layout, users, imp, self.catalog.pk_factor)
            for name, value in _row_metrics(scores, imp, k, self.config.row.explore_slots
                                            ).items():
                acc[name] = acc.get(name, 0.0) + value
            if fold_in_cached is None:
                # the initial weights with each phone's own personalisation: what
                # federated training itself adds is the model's margin over this row
                scores0 = row_scores(theta0, self.layout, self.personalize(theta0, batch), imp,
                                     self.catalog.pk_factor)
                hit0, _ = row_hits(scores0, imp, k)
                new = imp.info[:, 3] == 1
                fold_in_acc["fold_in_only"] = fold_in_acc.get("fold_in_only", 0.0) + hit0.sum()
                fold_in_acc["n_new_fold_in_only"] = (fold_in_acc.get("n_new_fold_in_only", 0.0)
                                                     + (hit0 & new).sum())
            n += imp.n_impressions
        if fold_in_cached is None:
            fold_in_cached = self._fold_in_only[key] = {x: float(v)
                                                        for x, v in fold_in_acc.items()}
        for name, value in fold_in_cached.items():
            acc[name] = value
        out = {name: value / max(n, 1) for name, value in acc.items()
               if not name.startswith("n_new")}
        n_new = max(acc.get("n_new", 0.0), 1.0)
        for name in ("hit", "hit_explore", *_BASELINES, "fold_in_only"):
            out[f"{name}_new_package"] = acc.get(f"n_new_{name}", 0.0) / n_new
        rename = {"hit_explore": f"hit@{k}_explore",
                  **{name: f"hit@{k}_{name}" for name in (*_BASELINES, "fold_in_only")}}
        result = {rename.get(x, x): v for x, v in out.items()}
        if n:
            # stage-1 order is shown, never the reference: the strongest no-model row is
            strongest_name = max(_STRONGEST_FROM, key=lambda a: result[f"hit@{k}_{a}"])
            strongest = result[f"hit@{k}_{strongest_name}"]
            result[f"hit@{k}_strongest_baseline"] = strongest
            result[f"hit@{k}_minus_strongest"] = result[f"hit@{k}"] - strongest
        result["share_new_package"] = acc.get("n_new", 0.0) / max(n, 1)
        result["eval_sessions"] = float(n)
        return result

    def device_app(self, device: int, path: Path, *, start_s: float | None = None,
                   end_s: float | None = None) -> Any:
        """The keyboard app of device ``device`` on the real device client, its private
        store at ``path`` (``federated.DeviceApp``; see :mod:`reranker._keyboard`; the
        run's span ``[start_s, end_s)`` defaults to ``[validation_start, test_start)``)."""
        from reranker._keyboard import KeyboardApp, RowFunctions

        return KeyboardApp.install(self, device, path, RowFunctions(
            row_scores, row_local_sgd, row_hits, _only_reachable), start_s=start_s, end_s=end_s)

    def export(self, parameters: np.ndarray, directory: Path) -> list[str]:
        """Write ``model.onnx`` and ``reranker.json`` (layout, row settings, stage 1)."""
        return write_model_files(directory, parameters, self.layout, {
            "keyword_features": list(FEATURE_NAMES),
            "history_features": list(HISTORY_FEATURE_NAMES),
            "row": self.config.row.model_dump(mode="json"),
            "stage1_version": self.context.stage1.version,
            "dataset": str(self.context.dataset.root),
            "top_k": self.config.top_k,
            "split_ts": self.split_ts,
            "validation_start": self.split.validation_start,
        })

    def train_central(self, epochs: int = 3, batch_devices: int = 512, learning_rate: float = 1.0,
                      rng: np.random.Generator | None = None, show_progress: bool = False
                      ) -> np.ndarray:
        """Centrally trained, non-private θ (mean local deltas of device minibatches)."""
        # validation devices never train, not even the non-private reference
        return self._central_sgd(np.flatnonzero(~self.validation), epochs, batch_devices,
                                 learning_rate, rng, show_progress)


def _only_reachable(imp: RowImpressions) -> RowImpressions:
    """The impressions whose sent sticker is a candidate (trainable)."""
    keep = imp.pos >= 0
    if keep.all():
        return imp
    sizes = imp.sizes
    rows = np.repeat(keep, sizes)
    ptr = np.zeros(int(keep.sum()) + 1, np.int64)
    np.cumsum(sizes[keep], out=ptr[1:])
    return RowImpressions(session=imp.session[keep], device=imp.device[keep], ptr=ptr,
                          sticker=imp.sticker[rows], package=imp.package[rows],
                          keyword=imp.keyword[rows], prior=imp.prior[rows],
                          history=imp.history[rows], pos=imp.pos[keep], info=imp.info[keep])


_BASELINES: dict[str, int] = {"recents": 0, "stage1_order": 1, "device_counts": 2,
                               "owned": 6, "owned_by_match": 7, "segment_popularity": 8}
"""The no-model rows of the per-round metric: column of their rank in ``imp.info``."""

_STRONGEST_FROM: tuple[str, ...] = ("recents", "device_counts", "owned", "owned_by_match",
                                    "segment_popularity", "fold_in_only")
"""Baselines the model's margin is taken against: the report's (``evaluation``'s
``BASELINE_ARMS``) except global popularity, which the per-round metric does not
compute (it never came near the strongest in a report); stage-1 order is shown only."""


def _row_metrics(scores: np.ndarray, imp: RowImpressions, k: int, explore_slots: int
                 ) -> dict[str, float]:
    """Sums over impressions of each metric (divided by the caller): every metric of the
    report's registry (:data:`evaluation.metrics.METRICS`, from the send-time ranks; ties
    in candidate order), then the row with exploration, the ceiling, the no-model rows and
    the new-package counts."""
    # evaluation imports this package (its report replays the row): looked up when run
    from evaluation.metrics import session_metrics

    hit, rank = row_hits(scores, imp, k)
    hit_x, _ = row_hits(scores, imp, k, max(explore_slots, 1))
    new = imp.info[:, 3] == 1
    out = {name: float(values.sum()) for name, values in session_metrics(rank, k).items()}
    out.update({"hit_explore": float(hit_x.sum()), "ceiling": float((imp.pos >= 0).sum()),
                "n_new": float(new.sum()), "n_new_hit": float((hit & new).sum()),
                "n_new_hit_explore": float((hit_x & new).sum())})
    for name, col in _BASELINES.items():
        in_row = (imp.info[:, col] >= 0) & (imp.info[:, col] < k)
        out[name] = float(in_row.sum())
        out[f"n_new_{name}"] = float((in_row & new).sum())
    return out


def make_row_task(context: TaskContext, config: RowTaskConfig | None = None) -> RowTask:
    """The sticker row's task: ``--task reranker`` (``tasks/reranker.py``) builds it.

    Options: ``stage1`` (version, default ``latest``), ``dataset`` (path or name; default:
    the one stage 1 was built from), ``max_devices`` (a seeded sample of N devices, for
    quick runs), ``cap``/``explore_slots``/``train_candidates`` (row settings) and any
    other :class:`RowTaskConfig` field. A ready ``config`` (the reranker CLI's
    ``--config FILE --set K=V``) replaces the config fields of the options.
    """
    opts: dict[str, Any] = dict(context.options)
    stage1 = Stage1Artifact.load(context.var, opts.pop("stage1", "latest"))
    dataset = opts.pop("dataset", None)
    if dataset is not None and not Path(dataset).is_dir():
        dataset = context.var / "data" / dataset
    max_devices = int(opts.pop("max_devices", 0))
    row_opts = {key: opts.pop(key) for key in list(opts) if key in RowConfig.model_fields}
    opts.pop("split_quantile", None)  # the package task's option: the split is the dataset's
    if config is None:
        try:
            config = RowTaskConfig(seed=context.seed, row=RowConfig(**row_opts), **opts)
        except ValueError as exc:
            raise ConfigError(f"invalid reranker task option: {exc}") from exc
    elif opts or row_opts:
        raise ConfigError(f"task options {sorted({**opts, **row_opts})} given beside a "
                          "config: set them in the config")
    ctx = RankingContext.build(stage1, None if dataset is None else open_dataset(dataset))
    catalog = StickerCatalog.build(ctx)
    logs = ctx.dataset.table("device_logs")
    users = None
    if max_devices:
        everyone = np.unique(logs["user_id"].to_numpy())
        rng = np.random.default_rng(context.seed)
        users = np.sort(rng.choice(everyone, size=min(max_devices, everyone.size),
                                   replace=False))
    sessions = build_row_sessions(ctx, catalog, logs, user_ids=users)
    return RowTask(ctx, catalog, sessions, pipeline_split(ctx.dataset), config)
