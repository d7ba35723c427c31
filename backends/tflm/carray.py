"""model_data.cc / model_data.h: the flatbuffer as an aligned C array, as `xxd -i` would print it."""

from __future__ import annotations

import re

BYTES_PER_LINE = 12  # xxd -i's layout
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"'{name}' is not a C identifier")
    return name


def source(data: bytes, array: str = "g_model_data", header: str = "model_data.h") -> str:
    """The .cc: `alignas(16)` because TFLM reads the flatbuffer in place and its tables hold
    aligned scalars (and SIMD kernels read weights directly from it)."""
    check_identifier(array)
    lines = [", ".join(f"0x{b:02x}" for b in data[i : i + BYTES_PER_LINE]) for i in range(0, len(data), BYTES_PER_LINE)]
    body = ",\n".join(f"  {line}" for line in lines)
    return (
        f'#include "{header}"\n\n'
        f"alignas(16) const unsigned char {array}[] = {{\n{body}\n}};\n"
        f"const unsigned int {array}_len = {len(data)};\n"
    )


def header(array: str = "g_model_data", arena_size: int = 0, guard: str = "EDGEC_MODEL_DATA_H_") -> str:
    check_identifier(array)
    check_identifier(guard)
    return (
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {array}[];\n"
        f"extern const unsigned int {array}_len;\n\n"
        "// Bytes for the tensor arena: declare it `alignas(16) uint8_t arena[kTensorArenaSize];`.\n"
        f"constexpr int kTensorArenaSize = {arena_size};\n\n"
        f"#endif  // {guard}\n"
    )
