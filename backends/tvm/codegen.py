"""What TVM generates for an edgec target: the LLVM target dict, the linker, and whether a CUDA module can be built."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable

from edgec.errors import EdgecError

ARCHES = ("aarch64", "x86_64")
# The GPUs' compute capabilities (NVIDIA's CUDA GPUs table: Jetson Nano 5.3, Jetson Orin 8.7);
# the profiles name the GPU but not its capability.
CUDA_ARCH = {"jetson-nano": "sm_53", "jetson-orin-nano": "sm_87"}
# /proc/cpuinfo flag spellings (as refine_for_host records them) -> LLVM's -mattr names.
X86_FEATURES = {
    "+avx512_vnni": "+avx512vnni",
    "+avx_vnni": "+avxvnni",
    "+avx512_bf16": "+avx512bf16",
    "+amx_int8": "+amx-int8",
}
INSTALL_CROSS = "run scripts/install-system-deps (Debian g++-aarch64-linux-gnu)"


@dataclass(frozen=True)
class Codegen:
    """`target` is the dict handed to tvm.target.Target; `cpu` its (host) LLVM part."""

    target: dict
    cpu: dict
    arch: str  # aarch64 | x86_64
    runs_here: bool  # the library can be loaded on this machine
    fcompile: Callable | None  # export_library's linker; None: TVM's default (the host's g++)
    linker: str
    cuda_arch: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def plan(target) -> Codegen:
    """The code TVM generates for `target`; EdgecError for a device it has no code generator for."""
    triple = target.cpu.triple
    arch, _, rest = triple.partition("-")
    units = {u.unit for u in target.compute}
    if arch not in ARCHES or "linux" not in rest:
        raise EdgecError(
            f"backend 'tvm' builds for aarch64 and x86-64 Linux CPUs; {target.name} is a {triple} "
            f"({target.cpu.model}) device: use --backend {' or '.join(target.backends)}"
        )
    if not units & {"cpu", "gpu"}:
        raise EdgecError(
            f"backend 'tvm' has no code generator for {target.name}'s {'/'.join(sorted(units))} "
            f"({target.compute[0].name}): use --backend {' or '.join(target.backends)}"
        )
    notes = []
    cpu = _llvm_target(target, arch, notes)
    runs_here = arch == host_arch() and platform.system() == "Linux" and "android" not in rest
    fcompile, linker = _linker(target, arch, rest, runs_here)
    tvm_target, cuda_arch = cpu, None
    sm = CUDA_ARCH.get(target.name) if "gpu" in units else None
    if sm:
        blockers = cuda_blockers(sm)
        if blockers:
            notes.append(f"no CUDA module for the {sm} GPU, the CPU module instead: {'; '.join(blockers)}")
        else:
            tvm_target, cuda_arch = {"kind": "cuda", "arch": sm, "host": cpu}, sm
    return Codegen(tvm_target, cpu, arch, runs_here, fcompile, linker, cuda_arch, tuple(notes))


def host_llvm_target() -> dict:
    """This machine's CPU, for the host twin of a module built for another one."""
    from tvm.target import codegen

    return {"kind": "llvm", "mtriple": f"{host_arch()}-linux-gnu", "mcpu": codegen.llvm_get_system_cpu()}


def _llvm_target(target, arch: str, notes: list[str]) -> dict:
    from tvm.target import codegen

    triple = target.cpu.triple
    if target.detect_host and arch == host_arch():
        # The build machine itself: LLVM's own host detection names the CPU (znver4, sapphirerapids).
        mcpu = codegen.llvm_get_system_cpu()
    else:
        mcpu = re.sub(r"\s+", "-", target.cpu.model.strip().lower())
    features = [X86_FEATURES.get(f, f) for f in target.cpu.features] if arch == "x86_64" else list(target.cpu.features)
    result = {"kind": "llvm", "mtriple": triple, "num-cores": int(target.cpu.cores)}
    if codegen.llvm_is_valid_cpu(mcpu, triple):
        result["mcpu"] = mcpu
    else:
        notes.append(
            f"LLVM knows no CPU named like '{target.cpu.model}': generic {arch} code with the profile's features"
        )
    if features:
        result["mattr"] = features
    return result


def _linker(target, arch: str, rest: str, runs_here: bool) -> tuple[Callable | None, str]:
    from tvm.support import cc

    if runs_here:
        return None, "g++"
    if "android" in rest:
        ndk = os.environ.get("TVM_NDK_CC")
        if not ndk:
            raise EdgecError(
                f"{target.name}: an Android library links with the NDK's clang++: set TVM_NDK_CC to "
                "<ndk>/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android24-clang++"
            )
        from tvm.support import ndk as ndk_support

        return ndk_support.create_shared, ndk
    compiler = f"{arch}-linux-gnu-g++"
    if shutil.which(compiler) is None:
        hint = INSTALL_CROSS if arch == "aarch64" else f"install {compiler} (Debian g++-x86-64-linux-gnu)"
        raise EdgecError(f"linking the TVM module for {target.name} needs the cross compiler {compiler}: {hint}")
    return cc.cross_compiler(compiler), compiler


def cuda_blockers(sm: str) -> list[str]:
    """Why this machine cannot build a loadable CUDA module for `sm` (empty: it can)."""
    import tvm

    blockers = []
    if tvm.get_global_func("target.build.cuda", allow_missing=True) is None:
        return ["this TVM build has no CUDA code generator"]
    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        # Without its CUDA runtime TVM's codegen keeps CUDA C source in the module (a fallback
        # module), which a device's TVM runtime cannot load: it needs a cubin/fatbin.
        blockers.append(
            "TVM's CUDA runtime (libtvm_runtime_cuda.so) is not loaded because this host has no NVIDIA driver "
            "(libcuda.so.1), so TVM would embed CUDA C source, not a binary the device can load"
        )
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        blockers.append("no nvcc on this host to compile the kernels")
    else:
        version, arches = _nvcc_info(nvcc)
        compute = "compute_" + sm.removeprefix("sm_")
        if arches and compute not in arches:
            blockers.append(f"nvcc {version} here cannot target {sm} (its oldest is {arches[0]})")
    return blockers


def _nvcc_info(nvcc: str) -> tuple[str, list[str]]:
    try:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?", []
    match = re.search(r"release ([\d.]+)", version)
    arches = sorted(set(listed.split()), key=lambda a: int(a.split("_")[1]))
    return (match.group(1) if match else "?"), arches
