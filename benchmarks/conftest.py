"""Benchmarks compare each native kernel with its NumPy reference (tests/reference.py) in the same run."""
