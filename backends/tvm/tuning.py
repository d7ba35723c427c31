"""MetaSchedule tuning of a fused Relax module's kernels on this host, into a JSON database."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import EdgecError

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
# A candidate kernel builds in well under a second; the limit only catches a pathological one.
BUILD_TIMEOUT_S = 60.0


@dataclass
class Tuned:
    database: object  # tvm.s_tir.meta_schedule.database.JSONDatabase
    info: dict


def require_tuning_support() -> None:
    """MetaSchedule ships its candidates to worker processes with cloudpickle (not a TVM dependency)."""
    if importlib.util.find_spec("cloudpickle") is None:
        raise EdgecError("--tune-trials needs cloudpickle for MetaSchedule's worker processes: pip install cloudpickle")


def tune(fused, tvm_target: dict, trials: int, database_dir: Path, seed: int = 0) -> Tuned:
    """Tune every kernel of `fused` (relax's zero pipeline output) with `trials` measurements in
    all, the gradient task scheduler spreading them over the kernels; records go to database_dir."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    require_tuning_support()
    start = time.perf_counter()
    target = tvm.target.Target(tvm_target)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    if not tasks:
        raise EdgecError("nothing to tune: the model has no kernels")
    cost_model = "xgb" if all(importlib.util.find_spec(m) for m in ("xgboost", "psutil")) else "random"
    print(
        f"tvm: tuning {len(tasks)} kernels, {trials} trials on this host (MetaSchedule, {cost_model} cost model)...",
        file=sys.stderr,
        flush=True,
    )
    # MetaSchedule logs every round to stdout at INFO; its per-task log files keep all of it.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    database_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(
        path_workload=str(database_dir / DATABASE_FILES[0]),
        path_tuning_record=str(database_dir / DATABASE_FILES[1]),
    )
    workers = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="edgec-tvm-tuning-") as work_dir:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir, num_threads=workers, seed=seed
        )
        builder = _persistent_builder(workers)
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=work_dir,
                max_trials_global=trials,
                # Small rounds, so a small budget still reaches every kernel before it runs out.
                num_trials_per_iter=min(64, max(1, math.ceil(trials / len(contexts)))),
                builder=builder,
                runner=ms.runner.LocalRunner(),
                database=database,
                cost_model=cost_model,
            )
        finally:
            builder.shutdown()
    records = database.get_all_tuning_records()
    return Tuned(
        database,
        {
            "trials": trials,
            "records": len(records),  # one per measured candidate
            "kernels": len(tasks),
            "cost_model": cost_model,
            "seconds": round(time.perf_counter() - start, 1),
            "database": [f"{database_dir.name}/{name}" for name in DATABASE_FILES],
        },
    )


def _persistent_builder(workers: int):
    """MetaSchedule's LocalBuilder starts fresh worker processes for every round, and its build
    function imports tvm.s_tir.tensor_intrin (~20 s here, mostly CUDA intrinsics), so building
    took longer than measuring. These workers live for the whole tuning run and build with
    build_candidate, which skips that import."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=workers, timeout=BUILD_TIMEOUT_S)

        def build(self, build_inputs):
            jobs = [(build_candidate, None, i.mod, i.target, _serialize_params(i.params)) for i in build_inputs]
            results = []
            for outcome in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if outcome.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(outcome.value, None))
                else:
                    results.append(BuilderResult(None, f"build failed ({outcome.status}): {outcome.value}"))
            return results

        def shutdown(self):
            self.pool.shutdown()

    return PersistentBuilder()


def build_candidate(mod, target, _params):
    """MetaSchedule's default_build without its tensor_intrin import: a candidate arrives with its
    schedule applied (a tensorized block already holds the intrinsic's body), so building it
    needs no intrinsic registry."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)
