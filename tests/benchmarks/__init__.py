"""Benchmarks and the load-and-faults run: ``python -m tests.benchmarks [--short]``,
``python -m tests.benchmarks.faults``. Not part of the default test run."""
