


def machine() -> str:
    """Cores, CPU model and its int8 instructions: int8 results depend on them (without VNNI,
    onnxruntime's and OpenVINO's u8 x s8 kernels sum pairs in 16 bits and edgec measures its
    weight range; with AMX, OpenVINO runs other kernels). Build hosts differ between sessions."""
    import os
    import platform
    from pathlib import Path

    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    int8 = [name for flag, name in (("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8"))
            if flag in flags]
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, {' + '.join(int8) or 'no VNNI'}"

