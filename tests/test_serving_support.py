"""Shared pieces of the serving tests: artifact builders, test doubles, a server process.

Imported by the ``test_serving_*`` modules (it holds no tests itself). The test double
``FakeSuggester`` stands in for ``reranker.Suggester`` where a test is about serving
(HTTP contract, store, registry), not about ranking quality; the end-to-end tests use the
real reranker when it is importable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import data
from candidate_gen import Stage1Artifact, Stage1Config, build_stage1
from federated import FederatedConfig
from serving import ModelRegistry, ServingConfig, create_app
from serving.versions import BOARD_ENV, VersionBoard

STAGE1_CONFIG = Stage1Config().with_overrides(["candidates.n_candidates=40",
                                               "als.iterations=4"])
FED_CONFIG = FederatedConfig.model_validate({
    "rounds": {"min_reports": 2, "max_examples": 100, "deadline_s": 300.0},
    "privacy": {"clip_norm": 1.0, "noise_multiplier": 0.5, "target_epsilon": None},
})
N_PARAMETERS = 16
LANGUAGES = ["en", "ja", "ko", "th", "zh-hant"]


@dataclass
class FakeSuggestion:
    sticker_id: int
    package_id: int
    labels: list[str]
    emojis: list[str]
    character: str
    score: float


@dataclass
class FakeContext:
    """The suggester's context as serving reads it; request checks are the reranker's own."""

    stage1: Stage1Artifact
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))

    # imported on use: the server scripts that import this module stay light
    def check_language(self, language: str) -> None:
        from reranker import check_language

        check_language(language, self.languages)

    def check_cluster(self, cluster_id: int) -> None:
        from reranker import check_cluster

        check_cluster(cluster_id, self.stage1)


@dataclass
class FakeSuggester:
    """Ranks a cluster's candidates by a hash of (text, package): text changes the row."""

    context: FakeContext
    reranker_version: str | None
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    n_factors: int = 4

    @property
    def stage1(self) -> Stage1Artifact:
        return self.context.stage1

    def rank(self, *, language: str, text: str, cluster_id: int,
             user_embedding: np.ndarray | None, limit: int
             ) -> tuple[list[int], list[int], list[float]]:
        candidates = self.stage1.candidates(cluster_id)
        scores = [int(hashlib.sha256(f"{text}/{p}".encode()).hexdigest()[:8], 16) / 2**32
                  for p in candidates]
        order = np.argsort(scores)[::-1][:limit]
        return ([int(candidates[i]) * 100 for i in order], [int(candidates[i]) for i in order],
                [float(scores[i]) for i in order])

    def describe(self, sticker_id: int, package_id: int, score: float = 0.0
                 ) -> FakeSuggestion:
        return FakeSuggestion(sticker_id, package_id, ["thanks"], ["🙏"], f"char{package_id}",
                              score)

    def suggest(self, *, language: str, text: str, cluster_id: int,
                user_embedding: np.ndarray | None, limit: int) -> list[FakeSuggestion]:
        ranking = self.rank(language=language, text=text, cluster_id=cluster_id,
                            user_embedding=user_embedding, limit=limit)
        return [self.describe(*entry) for entry in zip(*ranking, strict=True)]

    def bundle(self, cluster_id: int, language: str) -> dict[str, bytes]:
        return {"candidates.json": json.dumps(self.stage1.candidates(cluster_id).tolist()
                                              ).encode(),
                f"keywords-{language}.kwi": b"index", "model.onnx": b"onnx"}


@dataclass
class FakeRerankerArtifact:
    version: str
    model_bytes: bytes
    sha256: str
    privacy: dict[str, Any]
    n_parameters: int
    clip_norm: float
    layout: Any = None


def fake_suggester_loader(var: Path, *, stage1_version: str, reranker_version: str | None,
                          dataset: str | None) -> FakeSuggester:
    return FakeSuggester(FakeContext(Stage1Artifact.load(var, stage1_version)),
                         reranker_version)


def fake_reranker_loader(var: Path, version: str) -> FakeRerankerArtifact:
    directory = data.resolve_artifact(Path(var) / "reranker", version)
    manifest = data.read_manifest(directory, verify=True, kind="reranker")
    model = manifest.file("model.onnx").read_bytes()
    return FakeRerankerArtifact(directory.name, model, hashlib.sha256(model).hexdigest(),
                                json.loads(manifest.file("privacy.json").read_text()),
                                N_PARAMETERS, 1.0)


def publish_fake_reranker(var: Path, *, model_version: int = 0, tag: str = "a",
                          latest: bool = True) -> Path:
    """A reranker-kind artifact with the files serving reads (weights, privacy, config);
    ``latest=False`` publishes it without moving ``LATEST`` (a candidate)."""
    destination = var / "reranker" / data.new_version(salt=tag)
    with data.publish_artifact(destination, kind="reranker", parameters={
            "task": "reranker", "n_parameters": N_PARAMETERS,
            "config": FED_CONFIG.model_dump(mode="json")},
            update_latest=latest) as writer:
        (writer.path / "model.onnx").write_bytes(f"fake onnx {tag}".encode())
        np.save(writer.path / "global_weights.npy", np.zeros(N_PARAMETERS, np.float32))
        writer.write_json("privacy.json", {"epsilon": {"secure_sum": 1.0}, "delta": 1e-6})
        writer.metrics = {"model_version": model_version}
    return destination


def build_var(tiny_world: Path, root: Path) -> Path:
    """A var root with a stage-1 version of the tiny world and a (fake) reranker version."""
    build_stage1(tiny_world, STAGE1_CONFIG, root)
    publish_fake_reranker(root)
    return root


TRAIN_CONFIG = FederatedConfig.model_validate({
    "rounds": {"rounds": 1, "sampling_rate": 0.5, "min_reports": 3},
    "privacy": {"target_epsilon": None, "noise_multiplier": 0.5}})


def build_real_var(tiny_world: Path, root: Path) -> Path:
    """Stage 1 of the tiny world and a reranker from a one-round federated run of the real
    task (200 devices), published the way ``stickers federated train`` publishes it."""
    from federated import FederatedTrainer, TaskContext, publish_model
    from reranker import make_task

    build_stage1(tiny_world, STAGE1_CONFIG, root)
    task = make_task(TaskContext(var=root, seed=0, options={"max_devices": "200",
                                                            "eval_devices": "50"}))
    trainer = FederatedTrainer(task, TRAIN_CONFIG).fit(np.random.default_rng(0))
    publish_model(trainer, task, root / task.name, seed=0)
    return root


def fake_registry(config: ServingConfig) -> ModelRegistry:
    requested = [config.reranker_version, *(config.arm_version(a)
                                             for a in config.experiment.arms)]
    board = os.environ.get(BOARD_ENV)  # under gunicorn: the workers' version board
    # the doubles match the part of Suggester / RerankerArtifact serving reads, structurally;
    # the registry's loader types name the concrete classes (no Protocol to satisfy)
    return ModelRegistry(config.var, config.stage1_version, requested, config.dataset,
                         suggester_loader=fake_suggester_loader,  # type: ignore[arg-type]
                         reranker_loader=fake_reranker_loader,  # type: ignore[arg-type]
                         board=VersionBoard(Path(board)) if board else None)


def fake_app(var: Path, **overrides: Any) -> Any:
    """``create_app`` over ``var`` with the test doubles and no polling thread."""
    config = ServingConfig.load(environ={}, var=var, reload_interval_s=0, **overrides)
    app = create_app(config, registry=fake_registry(config))
    app.testing = True
    return app


def upload(round_: int = 0, model_version: int = 0, *, scale: float = 0.1,
           n: int = N_PARAMETERS, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A well-formed upload payload with a fresh nonce."""
    rng = np.random.default_rng(seed)
    return {"round": round_, "model_version": model_version,
            "delta": (rng.standard_normal(n) * scale).tolist(), "n_examples": 5,
            "nonce": secrets.token_hex(16), **extra}


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from serving import ServingConfig
from serving.http import GunicornServer, enable_multiprocess_metrics
from test_serving_support import fake_registry
import serving
import json
config = ServingConfig.load(environ={{}}, var={var!r}, port={port}, workers={workers},
                            **{{"reload_interval_s": 0, **json.loads({overrides!r})}})
enable_multiprocess_metrics(config.var / "serving" / "prometheus")
fake = {fake!r}
factory = (lambda: serving.create_app(config, registry=fake_registry(config))) if fake \
    else (lambda: serving.create_app(config))
GunicornServer(config, app_factory=factory).run()
"""


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the gunicorn master and its workers (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(var: Path, *, fake: bool = True, workers: int = 2, port: int | None = None,
                 timeout_s: float = 30.0, **overrides: Any) -> ServerProcess:
    """gunicorn on 127.0.0.1 in a new process group; returns once /readyz says ready.

    ``overrides`` are serving config fields (JSON values), e.g. ``worker_class="sync"``.
    """
    port = port or free_port()
    script = SERVER_SCRIPT.format(tests=str(Path(__file__).parent), var=str(var), port=port,
                                  workers=workers, fake=fake, overrides=json.dumps(overrides))
    log = open(Path(var) / f"server-{port}.log", "ab")  # noqa: SIM115 (lives with the process)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log,
                               start_new_session=True)
    server = ServerProcess(process, port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"server not ready within {timeout_s} s; see {log.name}")


def post_json(url: str, payload: Any, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
