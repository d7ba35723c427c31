"""The build output directory: staged beside its destination and moved into place only when whole."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "edgec-bundle"
MANIFEST_VERSION = 1


class Staging:
    """`with Staging(out) as stage: ...write into stage...; stage_commit()`. Until commit, `out`
    is untouched; on an exception the staged files are deleted, so nothing half-written remains."""

    def __init__(self, destination: str | os.PathLike):
        self.destination = Path(destination)
        self.path: Path | None = None
        self.committed = False

    def __enter__(self) -> "Staging":
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(
            tempfile.mkdtemp(prefix=f".{self.destination.name}.", suffix=".staging", dir=self.destination.parent)
        )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed and self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staged directory into place (a rename on the same filesystem)."""
        old = None
        if self.destination.exists():
            if not self.destination.is_dir():
                raise FileExistsError(f"{self.destination} exists and is not a directory")
            old = self.destination.with_name(f".{self.destination.name}.old-{os.getpid()}")
            os.replace(self.destination, old)
        os.replace(self.path, self.destination)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.destination


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    return {str(f): {"bytes": (root / f).stat().st_size, "sha256": sha256_file(root / f)} for f in sorted(files)}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
