"""Does the build fit the device: the flatbuffer in flash, the tensor arena in RAM (or PSRAM)."""

from __future__ import annotations

from edgec.errors import EdgecError


def kib(size: int) -> str:
    return f"{size:,} bytes ({size / 1024:,.1f} KiB)"


def summary(target, flash_bytes: int, arena_bytes: int, kernels: str) -> str:
    flash = f" of {kib(target.flash_bytes)}" if target.flash_bytes is not None else ""
    return (
        f"tensor arena (kTensorArenaSize, {kernels} kernels): {kib(arena_bytes)} of {kib(target.ram_bytes)} RAM; "
        f"model.tflite: {kib(flash_bytes)}{flash} flash"
    )


def check(target, flash_bytes: int, arena_bytes: int) -> list[str]:
    """Raise a one-line EdgecError when something does not fit; return notes about where the
    arena goes otherwise. A target without weights_in_flash copies the model into RAM too."""
    if target.flash_bytes is not None and flash_bytes > target.flash_bytes:
        raise EdgecError(
            f"tflm: model.tflite is {kib(flash_bytes)}, more than {target.name}'s flash of "
            f"{kib(target.flash_bytes)}; quantize it (-O int8) or choose a smaller model"
        )
    ram_needed = arena_bytes + (0 if target.weights_in_flash else flash_bytes)
    what = "the tensor arena" if target.weights_in_flash else "the tensor arena and the model copy"
    if ram_needed <= target.ram_bytes:
        return []
    if target.external_ram_bytes and ram_needed <= target.external_ram_bytes:
        return [
            f"{what} needs {kib(ram_needed)}, more than the {kib(target.ram_bytes)} of internal RAM: "
            f"place it in external RAM ({kib(target.external_ram_bytes)} PSRAM on {target.name}), "
            "e.g. heap_caps_malloc(kTensorArenaSize, MALLOC_CAP_SPIRAM); it runs slower there"
        ]
    room = f"{kib(target.ram_bytes)} of RAM"
    if target.external_ram_bytes:
        room += f" and {kib(target.external_ram_bytes)} of external RAM"
    raise EdgecError(f"tflm: {what} needs {kib(ram_needed)}, more than {target.name}'s {room}")
