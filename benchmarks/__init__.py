"""Benchmarks (run as scripts: ``python benchmarks/bench_metrics.py --help``)."""
