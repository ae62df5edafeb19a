"""Darkroom benchmarks: each figure is a ratio against a baseline measured in the same run.

Run ``./run bench`` (or ``./run bench --quick``); results go to ``bench/RESULTS.md``.
"""
