"""Device profiles: what a target is made of, read from profiles.toml (data, not code)."""

from __future__ import annotations

import os
import platform
import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Mapping

from edgec.errors import EdgecError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
QUANT_SCHEMES = ("onnx", "tflite", "tensorrt", "openvino")
_SIZE = re.compile(r"\s*([\d.]+)\s*(B|KB|MB|GB|KiB|MiB|GiB)\s*")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@dataclass(frozen=True)
class Cpu:
    triple: str
    model: str
    cores: int
    freq_ghz: float
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComputeUnit:
    unit: str  # cpu, gpu, tpu, vpu, npu
    name: str
    peak_gops: Mapping[str, float]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cpu: Cpu
    ram_bytes: int
    flash_bytes: int | None
    memory_bandwidth_gbps: float
    compute: tuple[ComputeUnit, ...]
    backends: tuple[str, ...]
    precisions: Mapping[str, tuple[str, ...]]
    quant_scheme: str
    weights_in_flash: bool = False
    external_ram_bytes: int = 0
    notes: tuple[str, ...] = ()
    detect_host: bool = False

    @property
    def int8_pair_sums_saturate(self) -> bool:
        """x86 CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, which adds each pair of products
        into a saturating int16: full-range int8 weights (255 * 127 * 2 > 32767) then overflow in
        onnxruntime's and OpenVINO's int8 kernels. Weights in [-64, 64] cannot."""
        return self.cpu.triple.startswith("x86_64") and not {"+avx512_vnni", "+avx_vnni"} & set(self.cpu.features)

    def best_unit(self, precision: str) -> ComputeUnit | None:
        """The fastest compute unit that runs `precision` natively, if any."""
        able = [u for u in self.compute if precision in u.peak_gops]
        return max(able, key=lambda u: u.peak_gops[precision]) if able else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "cpu": {
                "triple": self.cpu.triple,
                "model": self.cpu.model,
                "cores": self.cpu.cores,
                "freq_ghz": self.cpu.freq_ghz,
                "features": list(self.cpu.features),
            },
            "ram_bytes": self.ram_bytes,
            "external_ram_bytes": self.external_ram_bytes,
            "flash_bytes": self.flash_bytes,
            "weights_in_flash": self.weights_in_flash,
            "memory_bandwidth_gbps": self.memory_bandwidth_gbps,
            "compute": [{"unit": u.unit, "name": u.name, "peak_gops": dict(u.peak_gops)} for u in self.compute],
            "backends": list(self.backends),
            "precisions": {k: list(v) for k, v in self.precisions.items()},
            "quant_scheme": self.quant_scheme,
            "notes": list(self.notes),
        }


def parse_size(text: str | int, where: str) -> int:
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(text)
    if not m:
        raise EdgecError(f"{where}: size {text!r} is not like '4 GiB' or '256 KiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def from_dict(name: str, data: Mapping[str, Any], where: str = "target") -> Target:
    """Build a Target from one profile table, rejecting unknown keys and precisions."""
    where = f"{where} '{name}'"
    known = {
        "description",
        "cpu",
        "ram",
        "external_ram",
        "flash",
        "weights_in_flash",
        "memory_bandwidth_gbps",
        "compute",
        "backends",
        "precisions",
        "quant_scheme",
        "notes",
        "detect_host",
    }
    unknown = set(data) - known
    if unknown:
        raise EdgecError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        compute = tuple(ComputeUnit(u["unit"], u["name"], dict(u["peak_gops"])) for u in data["compute"])
        precisions = {backend: tuple(p) for backend, p in data["precisions"].items()}
        target = Target(
            name=name,
            description=data["description"],
            cpu=Cpu(**{**data["cpu"], "features": tuple(data["cpu"].get("features", ()))}),
            ram_bytes=parse_size(data["ram"], where),
            external_ram_bytes=parse_size(data.get("external_ram", 0), where),
            flash_bytes=parse_size(data["flash"], where) if "flash" in data else None,
            memory_bandwidth_gbps=float(data["memory_bandwidth_gbps"]),
            compute=compute,
            backends=tuple(data["backends"]),
            precisions=precisions,
            quant_scheme=data["quant_scheme"],
            weights_in_flash=bool(data.get("weights_in_flash", False)),
            notes=tuple(data.get("notes", ())),
            detect_host=bool(data.get("detect_host", False)),
        )
    except (KeyError, TypeError) as exc:
        raise EdgecError(f"{where}: missing or malformed field {exc}") from exc
    bad = {p for u in compute for p in u.peak_gops} | {p for ps in precisions.values() for p in ps}
    bad -= set(PRECISIONS)
    if bad:
        raise EdgecError(f"{where}: unknown precision(s) {', '.join(sorted(bad))} (known: {', '.join(PRECISIONS)})")
    if target.quant_scheme not in QUANT_SCHEMES:
        raise EdgecError(f"{where}: quant_scheme must be one of {', '.join(QUANT_SCHEMES)}")
    return target


def load_builtin() -> dict[str, Target]:
    text = resources.files(__package__).joinpath("profiles.toml").read_text()
    table = tomllib.loads(text)
    targets = {name: from_dict(name, data, "profiles.toml") for name, data in table.items()}
    return {name: refine_for_host(t) if t.detect_host else t for name, t in targets.items()}


# --- the host -------------------------------------------------------------------------------


def refine_for_host(target: Target) -> Target:
    """Replace the baseline x86-64 numbers with what this machine reports, where it reports them."""
    flags = _cpu_flags()
    if not flags:
        return target
    cores = os.cpu_count() or target.cpu.cores
    ghz = _cpu_ghz() or target.cpu.freq_ghz
    scale = cores * ghz / (target.cpu.cores * target.cpu.freq_ghz)
    wide = 64 if "avx512f" in flags else 32  # fp32 ops/cycle: two FMA pipes of 16 or 8 lanes
    int8_factor = 4 if ("avx512_vnni" in flags or "avx_vnni" in flags) else 2
    fp32 = target.compute[0].peak_gops["fp32"] * scale * wide / 32
    peaks = {"fp32": round(fp32, 1), "int8": round(fp32 * int8_factor, 1)}
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        peaks["bf16"] = round(fp32 * 2, 1)
    features = tuple(
        f"+{f}" for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags
    )
    unit = replace(target.compute[0], name=f"{cores}-core {_cpu_model() or 'x86-64'} @ {ghz:.2f} GHz", peak_gops=peaks)
    return replace(
        target,
        cpu=replace(
            target.cpu, cores=cores, freq_ghz=round(ghz, 2), features=features, model=_cpu_model() or target.cpu.model
        ),
        ram_bytes=_mem_total() or target.ram_bytes,
        compute=(unit,),
    )


def host_int8_pair_sums_saturate() -> bool:
    """Whether this machine's int8 kernels saturate full-range weights (see Target.int8_pair_sums_saturate)."""
    return platform.machine() in ("x86_64", "AMD64") and not {"avx512_vnni", "avx_vnni"} & _cpu_flags()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_field(key: str) -> str | None:
    m = re.search(rf"^{key}\s*:\s*(.*)$", _read("/proc/cpuinfo"), re.MULTILINE)
    return m.group(1).strip() if m else None


def _cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def _cpu_model() -> str | None:
    return _cpuinfo_field("model name")


def _cpu_ghz() -> float | None:
    mhz = _cpuinfo_field("cpu MHz")
    try:
        return float(mhz) / 1000 if mhz else None
    except ValueError:
        return None


def _mem_total() -> int | None:
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read("/proc/meminfo"), re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None
