"""The ELF header of a written shared library: which machine it is for, read from the file itself."""

from __future__ import annotations

import struct
from pathlib import Path

from edgec.errors import EdgecError

# e_machine values (System V ABI, "ELF header"): what edgec's TVM backend links for.
MACHINES = {62: "x86-64", 183: "aarch64"}
MACHINE_OF_ARCH = {"x86_64": 62, "aarch64": 183}
ET_DYN = 3


def machine(path: Path) -> int:
    """e_machine of an ELF file; EdgecError when the file is not a 64-bit little-endian ELF."""
    header = path.read_bytes()[:20]
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise EdgecError(f"{path.name}: not an ELF file")
    elf_class, data = header[4], header[5]
    if elf_class != 2 or data != 1:  # ELFCLASS64, ELFDATA2LSB: both of edgec's TVM architectures
        raise EdgecError(f"{path.name}: not a 64-bit little-endian ELF file (class {elf_class}, data {data})")
    e_type, e_machine = struct.unpack_from("<HH", header, 16)
    if e_type != ET_DYN:
        raise EdgecError(f"{path.name}: ELF type {e_type}, not a shared object")
    return e_machine


def require_machine(path: Path, arch: str) -> dict:
    """The library's machine as report info; EdgecError when it is not `arch`'s."""
    found, wanted = machine(path), MACHINE_OF_ARCH[arch]
    if found != wanted:
        raise EdgecError(
            f"{path.name} is an ELF for machine {found} ({MACHINES.get(found, 'unknown')}), "
            f"not {wanted} ({MACHINES[wanted]}): the linker did not build for {arch}"
        )
    return {"e_machine": found, "name": MACHINES[found]}
