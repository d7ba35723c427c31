"""A plugin with a bug at import time."""

raise RuntimeError("this plugin cannot find its config")
