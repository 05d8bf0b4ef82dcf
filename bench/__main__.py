"""Run benchmarks: ``python -m bench`` (all), ``python -m bench world keyword_index``, or
one benchmark with its own options: ``python -m bench keyword_index --baseline HEAD``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all ``bench_*.py`` when none is named)."""
    here = Path(__file__).parent
    found = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    unknown = sorted(set(names) - set(found))
    if unknown or (options and len(names) != 1):
        print(f"usage: python -m bench [NAME ...] | python -m bench NAME [OPTIONS]; "
              f"names: {', '.join(found)}" + (f" (unknown: {', '.join(unknown)})"
                                              if unknown else ""), file=sys.stderr)
        return 2
    # the world benchmark generates var/data/large, which the stage-1 benchmark reads
    names = names or sorted(found, key=lambda name: (name != "world", name))
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== bench {name} ==", flush=True)
        module.main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
