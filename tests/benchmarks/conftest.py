"""Nothing here is a test: the benchmarks run as ``python -m tests.benchmarks``."""

collect_ignore_glob = ["*.py"]
