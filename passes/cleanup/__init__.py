"""Exact cleanup passes: each leaves the model computing the same function."""
