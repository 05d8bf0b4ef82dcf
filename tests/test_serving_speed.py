"""Serving speed work (issues #19 and #15): what the workers do so suggest keeps up.

Suggest's body is decided in one msgspec pass when the pass can prove it valid (the
keyboard's body); every other body goes through the strict JSON parser and pydantic, and
both give the same fields or the same problem for every body (tested below).

Each gunicorn worker freezes its heap once its app is built (the models are ~300k
objects that every full garbage collection would otherwise traverse, 0.6 s each on the
tiny world), and a model swap collects and freezes again, so a replaced set's cycles
are still collected.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serving_app import TRICKY_BODIES
from test_serving_support import build_var, fake_app

from serving import ApiError, ServingConfig
from serving.http import (
    GunicornServer,
    SuggestFields,
    SuggestRequest,
    freeze_heap,
    parse_body,
    parse_suggest,
)
from serving.versions import BOARD_ENV


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("serving-speed-var"))


class _Cycle:
    """An object in a reference cycle (freed only by the collector)."""

    def __init__(self) -> None:
        self.me = self


def test_each_gunicorn_worker_freezes_its_heap_after_building_its_app(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GunicornServer points the process at its version board; undone after the test, so
    # later apps in this process do not follow that board
    monkeypatch.setenv(BOARD_ENV, str(tmp_path / "board"))
    server = GunicornServer(ServingConfig.load(environ={}, var=tmp_path, port=0))
    hook = server.options["post_worker_init"]
    assert server.cfg.post_worker_init is hook  # what gunicorn calls in each worker
    cycle = _Cycle()
    try:
        gc.unfreeze()
        hook(None)
        assert gc.get_freeze_count() > 0
        frozen = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert frozen() is not None  # frozen: the collector no longer traverses it
    finally:
        gc.unfreeze()
        gc.collect()


def test_a_model_swap_collects_what_the_old_set_left_and_freezes_again(var: Path,
                                                                      tmp_path: Path) -> None:
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    registry = app.extensions["sticker_serving"].registry
    cycle = _Cycle()
    try:
        freeze_heap()
        left = weakref.ref(cycle)
        del cycle  # garbage frozen with the heap, as a replaced model set's cycles are
        registry.on_swap(registry.current)
        assert left() is None  # the swap unfroze, collected it, and froze again
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.collect()


def test_an_app_in_an_unfrozen_process_leaves_the_collector_alone(var: Path,
                                                                  tmp_path: Path) -> None:
    gc.unfreeze()
    app = fake_app(var, store_path=tmp_path / "updates.sqlite3")
    registry = app.extensions["sticker_serving"].registry
    registry.on_swap(registry.current)
    assert gc.get_freeze_count() == 0  # tests and `flask run` never freeze


# ------------------------------------------------- suggest's body in one msgspec pass

_KEYBOARD_BODY = b'{"language":"en","text":"thank you","cluster_id":3,"limit":8}'
# bodies at the edges of the one-pass subset (each also goes through the general path)
_EDGE_BODIES = [
    _KEYBOARD_BODY,
    b'{"language":"ja","text":"\\u3042\\ud83d\\ude00","cluster_id":0}',
    b'{"text":"ok","language":"en","cluster_id":9223372036854775807}',  # int64 max
    b'{"language":"en","text":"ok","cluster_id":9223372036854775808}',  # above: general
    b'{"language":"en","text":"ok","cluster_id":9999999999999999999}',  # 19 digits
    b'{"language":"en","text":"ok :) 10:30","cluster_id":1}',  # colons in the text
    b'{"language":"en","text":"a","cluster_id":0,"text":"b"}',  # repeated key
    b'{"language":"en","text":"a","features":{"age":"18-24","age":"25-34"}}',
    b'{"language":"en","text":"a","features":{"region":"x","subscriber":true,"n":-4}}',
    b'{"language":"en","text":"a","features":{}}',
    b'{"language":"en","text":"a","features":null,"cluster_id":2}',
    b'{"language":"en","text":"a","cluster_id":null,"features":{"region":"x"}}',
    b'{"language":"en","text":"a","cluster_id":null}',
    b'{"language":"en","text":"a"}',
    b'{"language":"en","text":"a","cluster_id":1,"features":{"region":"x"}}',
    b'{"language":"en","text":"a","cluster_id":1,"limit":null}',
    b'{"language":"en","text":"a","cluster_id":1,"limit":0}',
    b'{"language":"en","text":"a","cluster_id":1,"limit":true}',
    b'{"language":"en","text":"a","cluster_id":1,"user_embedding":null,"history":null}',
    b'{"language":"en","text":"a","cluster_id":1,"user_embedding":[0.5,-1,2e0,3]}',
    b'{"language":"en","text":"a","cluster_id":1,"history":{"subscriber":true}}',
    b'{"language":"","text":"a","cluster_id":1}',
    b'{"language":"' + b"e" * 17 + b'","text":"a","cluster_id":1}',
    b'{"language":"en","text":"' + b"a" * 4097 + b'","cluster_id":1}',
    b'{"language":"en","text":"a","features":{"' + b"k" * 65 + b'":"v"}}',
    b'{"language":"en","text":"a","features":{"k":"' + b"v" * 65 + b'"}}',
    b'{"language":"en","text":"a\x7f","cluster_id":1}',
    b'{"language":"en","text":"a\x1f","cluster_id":1}',
    b'{"language":"en","text":"\xed\xa0\x80","cluster_id":1}',  # a surrogate in UTF-8
    b'{"language":"en","text":"a","cluster_id":01}',
    b'{"language":"en","text":"a","cluster_id":1} {}',
]


def _either(raw: bytes, parse: Callable[[], object]) -> object:
    """``parse()`` in a request with body ``raw``: its fields, or the problem it raises."""
    app = Flask(__name__)
    with app.test_request_context("/v1/suggest", method="POST", data=raw,
                                  content_type="application/json"):
        try:
            body = parse()
        except ApiError as exc:
            return (exc.status, exc.reason, exc.detail, exc.extra)
    assert isinstance(body, SuggestRequest | SuggestFields)
    fields = tuple(getattr(body, name) for name in SuggestFields._fields)
    return [(type(x).__name__, x) for x in fields]  # bool vs int: a different value


def _same_as_the_general_path(raw: bytes) -> object:
    fast = _either(raw, lambda: parse_suggest(64 * 1024))
    general = _either(raw, lambda: parse_body(SuggestRequest, 64 * 1024))
    assert fast == general, raw[:200]
    return fast


@pytest.mark.parametrize("raw", _EDGE_BODIES + [raw for raw, _ in TRICKY_BODIES])
def test_suggest_parses_every_body_as_the_general_path_does(raw: bytes) -> None:
    _same_as_the_general_path(raw)


def _kind(raw: bytes) -> str:
    with Flask(__name__).test_request_context("/v1/suggest", method="POST", data=raw,
                                              content_type="application/json"):
        return type(parse_suggest(64 * 1024)).__name__


def test_the_keyboards_body_is_decided_in_one_pass_and_the_rest_by_the_general_path() -> None:
    assert _kind(_KEYBOARD_BODY) == "SuggestFields"
    assert _kind(b'{"language":"en","text":"a","features":{"region":"x","n":3}}') == (
        "SuggestFields")
    # what the one pass cannot prove valid goes to pydantic (same values, see above)
    assert _kind(b'{"language":"en","text":"10:30","cluster_id":1}') == "SuggestRequest"
    assert _kind(b'{"language":"en","text":"a","cluster_id":1.0}') == "SuggestRequest"
    assert _kind(b'{"language":"en","text":"a","cluster_id":1,'
                 b'"user_embedding":[0.5]}') == "SuggestRequest"


_KEYS = ["language", "text", "cluster_id", "features", "limit", "user_embedding", "history",
         "other"]
_SCALAR = (st.none() | st.booleans() | st.integers(-(2**66), 2**66) | st.floats()
           | st.sampled_from(["en", "ja", "", ":", "a:b", "\\ud800"]) | st.text(max_size=6))
_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3)
                      | st.lists(st.tuples(st.sampled_from(["region", "age", "n", "x"]),
                                           inner), max_size=3).map(lambda p: ("pairs", p)),
                      max_leaves=6)


def _encode(value: object) -> str:
    """JSON text of ``value``; ``("pairs", [(key, value), ...])`` is an object written
    pair by pair, so keys may repeat."""
    if isinstance(value, tuple) and value and value[0] == "pairs":
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value[1]) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, str) and value == "\\ud800":
        return '"\\ud800"'
    return json.dumps(value)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUE), max_size=7),
       st.sampled_from(["en", "ja"]), st.integers(0, 40), st.booleans())
def test_generated_suggest_bodies_parse_as_the_general_path_does(
        pairs: list[tuple[str, object]], language: str, cluster_id: int,
        keyboard: bool) -> None:
    if keyboard:  # most keyboard-shaped, so the one pass is exercised, not only refused
        pairs = [("language", language), ("text", "th"), ("cluster_id", cluster_id), *pairs]
    raw = _encode(("pairs", pairs)).encode()
    _same_as_the_general_path(raw)
