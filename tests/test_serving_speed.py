"""Serving speed work (issues #19 and #15): what the workers do so suggest keeps up.

Each gunicorn worker freezes its heap once its app is built (the models are ~300k
objects that every full garbage collection would otherwise traverse, 0.6 s each on the
tiny world), and a model swap collects and freezes again, so a replaced set's cycles
are still collected.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from test_serving_support import build_var, fake_app

from serving import ServingConfig
from serving.http import GunicornServer, freeze_heap


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("serving-speed-var"))


class _Cycle:
    """An object in a reference cycle (freed only by the collector)."""

    def __init__(self) -> None:
        self.me = self


def test_each_gunicorn_worker_freezes_its_heap_after_building_its_app(tmp_path: Path) -> None:
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
