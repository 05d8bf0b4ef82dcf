"""World generation benchmark: time and peak RSS of ``stickers data generate``.

Targets (issue #2): the ``large`` world (1M users x 100k packages x >= 30M server
interactions) in <= 5 min and <= 4 GiB peak RSS. Generation runs in a child process so
its peak RSS is measured alone (``getrusage(RUSAGE_CHILDREN)``).

Usage: ``python -m bench.bench_world [--size large] [--name NAME]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._results import write_results
from data import open_dataset, var_root


def main(argv: list[str]) -> None:
    """Generate the world in a child process and report time, peak RSS and sizes."""
    parser = argparse.ArgumentParser(prog="bench_world")
    parser.add_argument("--size", default="large")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    name = args.name or args.size
    stickers = Path(sys.executable).with_name("stickers")
    cmd = [str(stickers), "-q", "data", "generate", "--size", args.size, "--name", name]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gib = usage.ru_maxrss / 2**20  # KiB -> GiB
    cpu_s = usage.ru_utime + usage.ru_stime
    load = os.getloadavg()[0]
    ds = open_dataset(var_root() / "data" / name, verify=False)
    rows = ds.manifest.metrics["rows"]
    table = [
        ("users", rows["users"], ""),
        ("packages", rows["packages"], ""),
        ("stickers", rows["stickers"], ""),
        ("server interactions", rows["interactions"], ">= 30M" if args.size == "large" else ""),
        ("device sessions", rows["device_logs"], ""),
        ("wall time (s)", round(seconds, 1), "<= 300" if args.size == "large" else ""),
        ("CPU time (s)", round(cpu_s, 1), "(less sensitive to a loaded machine)"),
        ("peak RSS (GiB)", round(peak_gib, 2), "<= 4" if args.size == "large" else ""),
        ("load average at end", round(load, 2), "2 cores"),
    ]
    write_results(f"world_{name}", ["measure", "value", "target"], table,
                  {"size": args.size, "seconds": seconds, "cpu_seconds": cpu_s,
                   "peak_rss_gib": peak_gib, "load_average": load,
                   "rows": rows})


if __name__ == "__main__":
    main(sys.argv[1:])
