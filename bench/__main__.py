"""Run benchmarks: ``python -m bench`` (all) or ``python -m bench world keyword_index``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all ``bench_*.py`` when none is named)."""
    here = Path(__file__).parent
    found = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    # the world benchmark generates var/data/large, which the stage-1 benchmark reads
    names = argv or sorted(found, key=lambda name: (name != "world", name))
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== bench {name} ==", flush=True)
        module.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
