"""NumPy's OpenBLAS runs single-threaded inside edgec's builds.

NumPy's bundled OpenBLAS (scipy-openblas 64-bit) hands a level-1 product to its worker threads
and spins until they finish; after OpenVINO's CPU plugin had run in the same process, a worker
now and then never took the job and the build spun forever in `np.linalg.norm` (the equivalence
check, compare._metrics): 1 in 2-9 runs of tests/quant/test_depthwise_inputs.py, never in 20
with OPENBLAS_NUM_THREADS=1. edgec's NumPy products are small next to its onnxruntime runs, and
on the 2-4 cores of build hosts a BLAS thread only competes with onnxruntime's own.
"""

from __future__ import annotations

import functools


def single_threaded(function):
    """Run `function` with NumPy's BLAS limited to one thread (restored afterwards: a library
    must not change its caller's settings for good)."""

    @functools.wraps(function)
    def limited(*args, **kwargs):
        import numpy  # noqa: F401 - threadpoolctl limits only the libraries already loaded
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return limited
