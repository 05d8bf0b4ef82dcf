"""The sticker reranker as a federated task: the platform trains it without knowing stickers.

:class:`RerankerTask` implements ``federated.FederatedTask``: global parameters are the
flat θ of :class:`~reranker._model.ParameterLayout`; each simulated device holds its own
impressions (from its private typing log) and its user embedding, both of which stay
in this object (the "phone"); ``local_train`` returns only weight deltas and example
counts. It knows nothing about rounds, sampling or privacy.

Time: the platform's simulated clock (seconds) starts at the split between training
and held-out sessions, so ``forget_before(t)`` deletes sessions older than
``split + t`` (the retention window), and held-out sessions are never trained on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from candidate_gen import Stage1Artifact
from data import ComponentConfig, ConfigError, open_dataset, time_split
from federated import LocalResult, TaskContext
from keyword_index import FEATURE_NAMES
from reranker._artifact import write_model_files
from reranker._context import RankingContext
from reranker._device_state import DeviceStateMixin
from reranker._local import LocalTrainingConfig, fold_in, local_sgd, score_impressions
from reranker._model import ParameterLayout, initial_parameters
from reranker._sessions import SessionTable, build_sessions, split_time

__all__ = ["RerankerTask", "RerankerTaskConfig", "hits_at", "make_task"]


class RerankerTaskConfig(ComponentConfig):
    """Settings of the reranker as a federated task."""

    config_name: ClassVar[str] = "reranker task config"

    split_quantile: float | None = Field(None, gt=0, lt=1, description=(
        "Split at this quantile of the sessions' send times instead of the dataset's "
        "one split (`data.time_split`): for experiments only, never for a reported model."))
    window: Literal["test", "validation"] = Field("test", description=(
        "'test': train before the dataset's test_start (a model to report); 'validation': "
        "train before validation_start and evaluate [validation_start, test_start) on "
        "validation devices: what tuning (σ, learning rates, clip) must use."))
    eval_devices: int = Field(3000, ge=1, description=(
        "Devices (with held-out sessions) sampled once for evaluation."))
    max_impressions: int = Field(64, ge=1, description=(
        "Most recent impressions a device trains on per participation."))
    top_k: int = Field(5, ge=1, description="Length of the visible sticker row.")
    steps: int = Field(5, ge=1, description="Local full-batch gradient steps.")
    learning_rate: float = Field(0.5, gt=0, description="Local step size (shared weights).")
    embedding_learning_rate: float = Field(0.2, ge=0, description=(
        "Local step size of the personal user embedding."))
    proximal: float = Field(0.01, ge=0, description="Pull toward the global weights.")
    device_batch: int = Field(256, ge=1, description="Devices trained together (memory).")
    seed: int = Field(0, description="Seed of the evaluation sample.")

    def local(self) -> LocalTrainingConfig:
        """The on-device training hyper-parameters."""
        return LocalTrainingConfig(steps=self.steps, learning_rate=self.learning_rate,
                                   embedding_learning_rate=self.embedding_learning_rate,
                                   proximal=self.proximal)


def hits_at(scores: np.ndarray, pos: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """Whether the sent item is in the top ``k`` of each impression (ties: earlier first).

    ``scores`` (S, n); ``pos`` (S,) position of the sent package (``-1`` = absent);
    ``ok`` (S,) the sticker shown for it is the one sent. Returns (S,) bool.
    """
    rows = np.arange(scores.shape[0])
    p = np.maximum(pos, 0)
    s_pos = scores[rows, p]
    before = (scores > s_pos[:, None]).sum(1)
    ties = ((scores == s_pos[:, None]) & (np.arange(scores.shape[1]) < p[:, None])).sum(1)
    return (pos >= 0) & ok & (before + ties < k)


class RerankerTask(DeviceStateMixin):
    """The on-device sticker reranker, trainable by the federated platform.

    Parameters
    ----------
    context : RankingContext
        Stage-1 candidates, factors and keyword machinery.
    sessions : SessionTable
        Every device's impressions (train and held-out).
    config : RerankerTaskConfig
    split_ts : float, optional
        Send time (s since the epoch) splitting training from held-out sessions; default:
        the dataset's ``test_start`` (:func:`data.time_split`), or the
        ``config.split_quantile`` quantile of the sessions' send times when that is set.
        The per-round metric (:meth:`evaluate`) uses validation devices only
        (``TimeSplit.is_validation_device``), which no report evaluates.
    """

    name = "reranker"

    def __init__(self, context: RankingContext, sessions: SessionTable,
                 config: RerankerTaskConfig | None = None, *,
                 split_ts: float | None = None) -> None:
        self.context = context
        self.sessions = sessions
        self.config = config or RerankerTaskConfig()
        self.layout: ParameterLayout = context.layout
        self.n_parameters = self.layout.n_parameters
        self.n_devices = sessions.n_devices
        s1 = context.stage1
        self._factors = s1.package_factors.astype(np.float32)
        self._gram = self._factors.T.astype(np.float64) @ self._factors.astype(np.float64)
        self._reg = float(s1.config.regularization)
        self._alpha = float(s1.config.als.alpha)
        split = time_split(context.dataset)
        tuning = self.config.window == "validation"
        if split_ts is not None:
            self.split_ts = float(split_ts)
        elif self.config.split_quantile is not None:
            self.split_ts = split_time(sessions, self.config.split_quantile)
        else:
            self.split_ts = split.validation_start if tuning else split.test_start
        # in tuning, nothing at or after test_start exists for this task: not even held out
        self.eval_end = split.test_start if tuning else np.inf
        self.alive = np.asarray(sessions.ts < self.eval_end)
        self.train = sessions.ts < self.split_ts
        self._starts = sessions.device_starts()
        self.user_state = np.zeros((self.n_devices, self.layout.n_factors), np.float32)
        self.has_state = np.zeros(self.n_devices, dtype=bool)
        rng = np.random.default_rng(self.config.seed)
        held = np.unique(sessions.device[~self.train & self.alive])
        # tuning reads this metric: validation devices only, never the report's devices
        held = held[split.is_validation_device(sessions.user_ids[held])]
        self.eval_devices = np.sort(rng.choice(held, size=min(held.size,
                                                             self.config.eval_devices),
                                               replace=False)) if held.size else held

    # ------------------------------------------------------------------ helpers
    def _sessions_of(self, devices: np.ndarray, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """Session indices of ``devices`` (grouped by device) and per-device counts."""
        chunks, counts = [], np.zeros(devices.size, np.int64)
        for i, dev in enumerate(devices.tolist()):
            idx = np.arange(self._starts[dev], self._starts[dev + 1])
            keep = self.alive[idx] & (self.train[idx] if train else ~self.train[idx])
            idx = idx[keep]
            chunks.append(idx)
            counts[i] = idx.size
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.int64)), counts

    def _fold_in(self, devices: np.ndarray) -> np.ndarray:
        idx, counts = self._sessions_of(devices, train=True)
        return fold_in(np.repeat(np.arange(devices.size), counts), self.sessions.sent_row[idx],
                       devices.size, self._factors, self._gram, self._reg, self._alpha)

    def _training_impressions(self, batch: np.ndarray, cap: int | None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """Trainable impressions of ``batch`` (grouped by device) and per-device counts.

        Live pre-split sessions whose package stage 1 shortlisted; with ``cap``, only
        each device's ``cap`` most recent ones (sessions are in time order).
        """
        idx, counts = self._sessions_of(batch, train=True)
        dev_of = np.repeat(np.arange(batch.size), counts)
        trainable = self.sessions.pos[idx] >= 0
        idx, dev_of = idx[trainable], dev_of[trainable]
        if cap is not None and idx.size:
            ends = np.searchsorted(dev_of, np.arange(batch.size), side="right")
            keep = ends[dev_of] - 1 - np.arange(idx.size) < cap
            idx, dev_of = idx[keep], dev_of[keep]
        return idx, np.bincount(dev_of, minlength=batch.size)

    def _impressions(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cl = self.sessions.cluster[idx]
        n_cand = self.context.candidate_ids.shape[1]
        keyword = self.sessions.keyword_tensor(idx, n_cand, self.layout.n_keyword_features)
        return self.context.candidate_factors[cl], keyword, self.context.candidate_mask[cl]

    def user_embeddings(self, devices: np.ndarray) -> np.ndarray:
        """Personal embeddings (B, d) of ``devices``: trained state, else the fold-in."""
        out = self._fold_in(devices)
        has = self.has_state[devices]
        out[has] = self.user_state[devices[has]]
        return out

    def personalize(self, parameters: np.ndarray, devices: np.ndarray) -> np.ndarray:
        """Personal embeddings (B, d) a phone derives for the global ``parameters``.

        What every phone does when a new model version arrives, with no upload: fold its
        embedding in from its own pre-split history, then refine only the embedding by
        the local gradient steps of :meth:`local_train` against the fixed global
        weights. Nothing on the task changes.
        """
        devices = np.asarray(devices, dtype=np.int64)
        # a sticker-row model's θ starts with the package model's (history weights last)
        theta = np.asarray(parameters, dtype=np.float32)[: self.n_parameters]
        out = np.zeros((devices.size, self.layout.n_factors), np.float32)
        config = dataclasses.replace(self.config.local(), learning_rate=0.0, proximal=0.0)
        for lo in range(0, devices.size, self.config.device_batch):
            batch = devices[lo: lo + self.config.device_batch]
            users = self._fold_in(batch)
            idx, n_b = self._training_impressions(batch, cap=None)
            active = np.flatnonzero(n_b > 0)
            if active.size:
                starts = np.concatenate([[0], np.cumsum(n_b[active])])
                cand, keyword, mask = self._impressions(idx)
                _, refined, _ = local_sgd(theta, self.layout, users[active], starts, cand,
                                          keyword, self.context.prior, mask,
                                          self.sessions.pos[idx], config)
                users[active] = refined
            out[lo: lo + batch.size] = users
        return out

    # ------------------------------------------------------------------ FederatedTask
    def initial_parameters(self) -> np.ndarray:
        """Keyword-first, stage-1-ordered weights with no personal term, (P,) float32."""
        return initial_parameters(self.layout)

    def local_train(self, parameters: np.ndarray, devices: np.ndarray,
                    rng: np.random.Generator) -> LocalResult:
        """Train ``devices`` locally from ``parameters``; deltas (B, P), counts (B,)."""
        devices = np.asarray(devices, dtype=np.int64)
        theta = np.asarray(parameters, dtype=np.float32)
        deltas = np.zeros((devices.size, self.n_parameters), np.float32)
        n_examples = np.zeros(devices.size, np.int64)
        loss = np.full(devices.size, np.nan, np.float32)
        for lo in range(0, devices.size, self.config.device_batch):
            batch = devices[lo: lo + self.config.device_batch]
            users = self._fold_in(batch)
            idx, n_b = self._training_impressions(batch, cap=self.config.max_impressions)
            active = np.flatnonzero(n_b > 0)
            if active.size:
                starts = np.concatenate([[0], np.cumsum(n_b[active])])
                cand, keyword, mask = self._impressions(idx)
                local, u_new, l_b = local_sgd(theta, self.layout, users[active], starts, cand,
                                              keyword, self.context.prior, mask,
                                              self.sessions.pos[idx], self.config.local())
                out = lo + active
                deltas[out] = local - theta
                loss[out] = l_b
                self.user_state[batch[active]] = u_new
                self.has_state[batch[active]] = True
            n_examples[lo: lo + batch.size] = n_b
        return LocalResult(deltas=deltas, n_examples=n_examples, loss=loss)

    def evaluate(self, parameters: np.ndarray) -> dict[str, float]:
        """Held-out metrics of ``parameters`` and of the stage-1 order on the eval sample.

        Each evaluated phone first personalises its embedding for ``parameters``
        (:meth:`personalize`, from pre-split history only). ``hit@k``: the sent sticker
        is in the visible row of ``top_k`` at the text it was sent with; sessions whose
        package stage 1 did not shortlist count as misses.
        """
        k = self.config.top_k
        hits = hits_ctl = hit1 = n = reachable = 0
        mrr = 0.0
        theta = np.asarray(parameters, dtype=np.float32)
        for lo in range(0, self.eval_devices.size, self.config.device_batch):
            batch = self.eval_devices[lo: lo + self.config.device_batch]
            users = self.personalize(theta, batch)
            idx, counts = self._sessions_of(batch, train=False)
            if not idx.size:
                continue
            cand, keyword, mask = self._impressions(idx)
            u = np.repeat(users, counts, axis=0)
            scores = score_impressions(theta, self.layout, u, cand, keyword,
                                       self.context.prior, mask)
            pos, ok = self.sessions.pos[idx], self.sessions.sticker_ok[idx]
            control = stage1_order_scores(keyword, self.context.prior, mask)
            hits += int(hits_at(scores, pos, ok, k).sum())
            hit1 += int(hits_at(scores, pos, ok, 1).sum())
            hits_ctl += int(hits_at(control, pos, ok, k).sum())
            rows = np.arange(idx.size)
            rank = (scores > scores[rows, np.maximum(pos, 0)][:, None]).sum(1)
            mrr += float(np.where((pos >= 0) & ok, 1.0 / (rank + 1), 0.0).sum())
            reachable += int(((pos >= 0) & ok).sum())
            n += idx.size
        n = max(n, 1)
        return {f"hit@{k}": hits / n, f"hit@{k}_stage1_order": hits_ctl / n, "hit@1": hit1 / n,
                "mrr": mrr / n, "reachable": reachable / n, "eval_sessions": float(n)}

    def export(self, parameters: np.ndarray, directory: Path) -> list[str]:
        """Write ``model.onnx`` and ``reranker.json`` (layout, stage-1 version, features)."""
        return write_model_files(directory, parameters, self.layout, {
            "keyword_features": list(FEATURE_NAMES),
            "stage1_version": self.context.stage1.version,
            "dataset": str(self.context.dataset.root),
            "top_k": self.config.top_k,
            "split_ts": self.split_ts,
        })

    # ------------------------------------------------------------------ non-private reference
    def train_central(self, epochs: int = 3, batch_devices: int = 512, learning_rate: float = 1.0,
                      rng: np.random.Generator | None = None, show_progress: bool = False
                      ) -> np.ndarray:
        """Centrally trained, non-private θ on every device's training impressions.

        Minibatch SGD over devices (the mean local delta applied at once): the upper
        bound federated training chases. Personal embeddings are refined as on devices.
        """
        return self._central_sgd(np.arange(self.n_devices), epochs, batch_devices, learning_rate,
                                 rng, show_progress)


def stage1_order_scores(keyword: np.ndarray, prior: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The control order: keyword-matched candidates first, each group in stage-1 order."""
    matched = keyword[:, :, 0] > 0
    return np.where(mask, matched * 100.0 + prior, -np.inf)


def make_task(context: TaskContext) -> Any:
    """Factory for ``stickers federated train --task reranker`` (registered by
    ``tasks/reranker.py``): the sticker row (:func:`reranker._row_task.make_row_task`)."""
    from reranker._row_task import make_row_task

    return make_row_task(context)


def make_package_task(context: TaskContext) -> RerankerTask:
    """The previous package-level task (one sticker per stage-1 package).

    Options: ``stage1`` (version, default ``latest``), ``dataset`` (path or name; default:
    the one stage 1 was built from), ``eval_devices``, ``max_devices`` (first N devices
    only, for quick runs) and any :class:`RerankerTaskConfig` field.
    """
    opts: dict[str, Any] = dict(context.options)
    stage1 = Stage1Artifact.load(context.var, opts.pop("stage1", "latest"))
    dataset = opts.pop("dataset", None)
    if dataset is not None and not Path(dataset).is_dir():
        dataset = context.var / "data" / dataset
    max_devices = int(opts.pop("max_devices", 0))
    try:
        config = RerankerTaskConfig(seed=context.seed, **opts)
    except ValueError as exc:
        raise ConfigError(f"invalid reranker task option: {exc}") from exc
    ctx = RankingContext.build(stage1, None if dataset is None else open_dataset(dataset))
    logs = ctx.dataset.table("device_logs")
    users = None
    if max_devices:
        users = np.unique(logs["user_id"].to_numpy())[:max_devices]
    sessions = build_sessions(ctx, logs, user_ids=users)
    return RerankerTask(ctx, sessions, config)
