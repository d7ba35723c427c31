"""Shared test settings: hypothesis without per-example deadlines (CI machines have 2 slow cores)."""

from hypothesis import settings

settings.register_profile("edgec", deadline=None, print_blob=True)
settings.load_profile("edgec")
