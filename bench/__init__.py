"""Benchmarks: ``python -m bench [NAME ...]`` runs ``bench/bench_<NAME>.py`` scripts.

Each script has a ``main(argv)`` that prints a table and writes JSON under
``var/bench/``. Speed targets are ratios measured in one run (ours vs a baseline),
never absolute times, because shared machines are noisy.
"""
