"""Issue #19: schemathesis against the app — every operation, every check, 0 failures.

The app (test doubles for the ML side, a real stage-1 artifact, a real update store with
an open round) is loaded from its own ``/openapi.json``, which states the served
languages, clusters, embedding length, feature values and the open round. For every
operation schemathesis generates schema-valid (positive) and schema-invalid (negative)
requests, a bounded number of each, and runs all of its checks on every response: no
5xx, documented statuses, content types and headers, responses matching their schemas,
invalid requests refused and valid ones accepted. (Driven through schemathesis's Python
API: its pytest plugin does not run under this pytest.)

Reproducible: the cases come from a fixed seed (``STICKERS_SCHEMATHESIS_SEED``, default 0;
set another to explore other cases), and a failure names the seed and prints the failing
case as a curl command with its body.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

import math  # noqa: E402
import os  # noqa: E402

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import CHECKS, load_all_checks  # noqa: E402
from test_serving_support import build_var, fake_app  # noqa: E402

EXAMPLES = 30  # per operation and mode: ~500 requests in all
SEED = int(os.environ.get("STICKERS_SCHEMATHESIS_SEED", "0"))
"""Seed of every operation's generated cases (the same cases on every run)."""
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())  # every built-in check, whatever the defaults enable


@pytest.fixture(scope="module")
def app(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):
    var = build_var(tiny_world, tmp_path_factory.mktemp("schemathesis-var"))
    return fake_app(var, store_path=var / "updates.sqlite3")


def within_norm(case):
    """A schema-valid upload scaled into the round's L2 ball, the one constraint of the
    upload that JSON Schema cannot state (the document carries it as
    ``x-l2-norm-maximum``; each entry's bound, which it implies, is in the schema)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("delta"), list) and body["delta"]:
        norm_max = _norm_maximum(case.operation)
        norm = math.sqrt(sum(float(x) ** 2 for x in body["delta"]))
        if norm_max is not None and norm > norm_max:
            scale = norm_max / norm * (1 - 1e-6)
            body["delta"] = [float(x) * scale for x in body["delta"]]
    return case


def _norm_maximum(operation) -> float | None:
    schema = operation.schema.raw_schema["components"]["schemas"]["Upload"]
    return schema["properties"]["delta"].get("x-l2-norm-maximum")


CALLS: list[int] = []


def _runner(strategy, seen: set[int], failing: list[str]):
    """A hypothesis test calling the app with each generated case and running every check;
    it records the statuses it saw in ``seen`` (and each call in ``CALLS``), and the last
    failing case (hypothesis replays the minimal one last) in ``failing``."""

    @seed(SEED)
    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        try:
            seen.add(case.call_and_validate(checks=ALL_CHECKS).status_code)
        except BaseException:
            failing[:] = [f"{case.as_curl_command(base_url='http://localhost')}\n"
                          f"body: {case.body!r:.2000}"]
            raise
        CALLS.append(1)

    return run


def test_every_operation_passes_every_check(app) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9  # the document's operations, all of them
    statuses: dict[tuple[str, str], set[int]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE and operation.label.endswith("/updates"):
                strategy = strategy.map(within_norm)

            failing: list[str] = []
            run = _runner(strategy, statuses.setdefault((operation.label, mode.value), set()),
                          failing)

            try:
                run()
            except Unsatisfiable:
                # no parameters and no body: there is no schema-violating request to make
                assert mode is GenerationMode.NEGATIVE and not operation.body
                assert not any(True for _ in operation.iter_parameters())
            except BaseException as exc:  # one entry per operation and mode
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{operation.label} [{mode.value}], seed {SEED}: "
                                f"{str(exc).strip()[:2000]}\nfailing case: "
                                f"{failing[0] if failing else '(none recorded)'}")
    assert len(CALLS) > 200, len(CALLS)
    assert not failures, "\n\n".join(failures)
    # the generated valid requests really were served, not refused
    for label in ("POST /v1/suggest", "POST /v1/assign", "GET /v1/clusters/{cluster_id}/bundle",
                  "GET /v1/models/reranker", "POST /v1/federated/updates"):
        assert statuses[(label, "positive")] & {200, 202, 304}, (label, statuses)
