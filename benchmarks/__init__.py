"""Benchmarks: the bare engine, preprocessing and the HTTP service, side by side.

Run ``python -m benchmarks.run`` (or ``make bench``); see docs/BENCHMARKS.md.
"""
