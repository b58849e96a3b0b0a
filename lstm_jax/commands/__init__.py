"""Thin absl entry points (flags, then one call into the package): evaluate, generate, sweep, aggregate, report,
crosscheck, benchmark, benchmark_population. Training is ``python -m lstm_jax.main``."""
