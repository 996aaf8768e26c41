"""Experiments the pack does not use, kept to reproduce the numbers in docs/BENCHMARKS.md.

Their tests live here, beside them: ``python -m pytest bench/experiments`` (on a CUDA machine). The
product's test run (``python -m pytest``, testpaths = tests) never collects them.
"""
