"""Package discovery for the setuptools build (the rest of the metadata is in pyproject.toml).

`passes/`, `backends/` and `models/` sit at the top of the repository but install as
`edgec.passes`, `edgec.backends` and `edgec.models` (pyproject's package-dir). setuptools'
find_packages runs under each of those roots, so every subpackage (e.g. edgec.backends.tflite.ops)
is in the wheel without a hand-kept list.
"""

from setuptools import find_packages, setup

ROOTS = {"edgec": "edgec", "edgec.passes": "passes", "edgec.backends": "backends", "edgec.models": "models"}


def discover() -> list[str]:
    packages = []
    for name, directory in ROOTS.items():
        packages += [name] + [f"{name}.{sub}" for sub in find_packages(directory)]
    return sorted(set(packages))


setup(packages=discover())
