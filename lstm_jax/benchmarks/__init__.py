"""Benchmarks: our recurrences against the library cells, side by side in one run."""
