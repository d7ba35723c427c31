"""Builds run NumPy's BLAS on one thread (edgec.blas): threaded OpenBLAS now and then spun forever
in the equivalence check after OpenVINO had run in the process."""

import numpy as np
from threadpoolctl import threadpool_info

from edgec import blas, cli


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_is_single_threaded_inside_and_restored_after(monkeypatch):
    seen = []
    inside = blas.single_threaded(lambda: seen.append(_blas_threads()) or float(np.linalg.norm(np.ones(4))))
    before = _blas_threads()
    assert before  # NumPy's OpenBLAS is loaded
    assert inside() == 2.0
    assert seen == [[1] * len(before)]
    assert _blas_threads() == before


def test_the_cli_and_compile_run_single_threaded(monkeypatch):
    """Every CLI command (here `edgec targets`) and edgec.compile run inside the limit."""
    import edgec
    from edgec import frontends
    from edgec.errors import EdgecError

    seen = []

    def recording(*args, **kwargs):
        seen.append(_blas_threads())
        return 0

    monkeypatch.setattr(cli, "cmd_targets", recording)
    assert cli.main(["targets"]) == 0

    def refusing(*args, **kwargs):
        seen.append(_blas_threads())
        raise EdgecError("stop here")

    monkeypatch.setattr(frontends, "load", refusing)
    try:
        edgec.compile("model.onnx", "x86-64")
    except EdgecError:
        pass
    assert len(seen) == 2 and all(threads and set(threads) == {1} for threads in seen)
