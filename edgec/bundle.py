"""The build output directory: staged beside its destination and swapped into place only when whole.

What edgec may replace (`check_destination`): an edgec bundle (manifest.json with format
"edgec-bundle"), an edgec failure report (marked by FAILURE_MARKER), or an empty directory;
anything else only with `force`, and never a directory holding one of the build's inputs or the
current directory.

How it commits (`Staging.commit`): the new bundle is written and fsynced in a sibling
`.NAME.edgec-stage-PID-XXXX` directory, then exchanged with NAME in one atomic
renameat2(RENAME_EXCHANGE) (Linux), the parent directory fsynced, and the old bundle (now under
the staging name) removed. A crash at any instant leaves the old or the new bundle at NAME. Where
the kernel or filesystem cannot exchange, the fallback is two renames (NAME → `.NAME.edgec-old-PID-…`,
stage → NAME); a crash between them is repaired by the next run, which moves the old bundle back.
Leftovers of killed runs are removed by the next run for the same destination once their owning
process is gone.

A failed build never replaces a bundle: its report goes beside it, to NAME.failed/ (`failure_dir`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Iterable

from edgec.errors import EdgecError

MANIFEST_FORMAT = "edgec-bundle"
MANIFEST_VERSION = 1
FAILURE_MARKER = ".edgec-failed-build"  # a file in a failure-report directory: {"format": FAILURE_FORMAT}
FAILURE_FORMAT = "edgec-failure-report"
FAILURE_SUFFIX = ".failed"
# Room left in a 255-byte file name for the staging prefix/suffix and ".failed".
MAX_NAME_BYTES = 200
# Tests set this to a commit step name to SIGKILL the process there (see tests/test_outputs.py).
CRASH_HOOK = "EDGEC_TEST_CRASH_AT"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.edgec-(?:stage|old)-(?P<pid>\d+)-[0-9a-f]+$")


class OutputError(EdgecError):
    """An output directory edgec must not or cannot write (exit code 2)."""


# --- what may be replaced --------------------------------------------------------------------


def is_bundle(path: Path) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def is_failure_report(path: Path) -> bool:
    try:
        marker = json.loads((path / FAILURE_MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        marker = None
    if isinstance(marker, dict) and marker.get("format") == FAILURE_FORMAT:
        return True
    # Failure reports written before the marker existed: exactly report.json + report.md, not ok.
    try:
        names = sorted(p.name for p in path.iterdir())
        report = json.loads((path / "report.json").read_text()) if names == ["report.json", "report.md"] else None
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(report, dict) and report.get("ok") is False


def replaceable(path: Path) -> bool:
    """An edgec bundle, an edgec failure report, or an empty directory."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        empty = not any(path.iterdir())
    except OSError:
        return False
    return empty or is_bundle(path) or is_failure_report(path)


def check_destination(out: str | os.PathLike, inputs: Iterable[Any] = (), force: bool = False) -> Path:
    """Refuse (OutputError, exit 2) an output directory edgec must not replace. `inputs`: the
    build's input paths (model, data, plugins; non-paths are ignored), never inside `out`."""
    out = Path(out)
    name = out.resolve().name if out.name in ("", ".", "..") else out.name
    if len(name.encode()) > MAX_NAME_BYTES:
        raise OutputError(
            f"-o {_short(out)}: the directory name is {len(name.encode())} bytes; at most {MAX_NAME_BYTES}"
        )
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(f"-o {out}: is the current directory or contains it; give a new directory, e.g. -o build/out")
    if resolved.parent == resolved:
        raise OutputError(f"-o {out}: is a filesystem root")
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)):
            continue
        source = os.fspath(source)
        if source.startswith("plugin:"):
            source = source[len("plugin:") :]
        elif source.startswith(("zoo:", "random:")):
            continue  # names, not paths edgec could delete
        try:
            src = Path(source).resolve()
        except (OSError, RuntimeError):
            continue
        if src == resolved or resolved in src.parents:
            raise OutputError(f"-o {out}: holds the build's input {source}; choose another output directory")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"-o {out}: exists and is not a directory; edgec writes a directory there")
    existing = next((p for p in out.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(f"-o {out}: cannot write there: {existing} is a file, not a directory")
    if out.exists() and not force and not replaceable(out):
        raise OutputError(
            f"-o {out}: exists and is not an edgec bundle; edgec replaces only its own outputs "
            "(give an empty or new directory, or --force to replace it)"
        )
    return out


def failure_dir(out: str | os.PathLike) -> Path:
    """Where a failed build's report goes: NAME.failed beside NAME (or NAME.failed-2, ... when
    NAME.failed is something edgec did not write)."""
    out = Path(out)
    base = out.with_name(out.name + FAILURE_SUFFIX)
    candidate, n = base, 1
    while candidate.exists() and not replaceable(candidate):
        n += 1
        candidate = out.with_name(f"{base.name}-{n}")
    return candidate


# --- staging and the atomic commit ------------------------------------------------------------


class Staging:
    """`with Staging(out) as stage: ...write into stage.path...; stage.commit()`. Until commit,
    `out` is untouched; on an exception the staged files are deleted. `failure=True` marks the
    directory as a failure report. `force`: replace `out` even if it is not edgec's."""

    def __init__(self, destination: str | os.PathLike, force: bool = False, failure: bool = False):
        self.destination = Path(destination)
        self.force = force
        self.failure = failure
        self.path: Path | None = None
        self.committed = False

    def __enter__(self) -> "Staging":
        parent = self.destination.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(self.destination)
            self.path = parent / f".{self.destination.name}.edgec-stage-{os.getpid()}-{secrets.token_hex(4)}"
            self.path.mkdir()
        except OSError as exc:
            raise os_error(exc, self.destination) from exc
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed and self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, EdgecError):
            mapped = os_error(exc, self.path or self.destination)
            if isinstance(mapped, EdgecError):
                raise mapped from exc

    def commit(self) -> Path:
        """Swap the staged directory into place; afterwards the old bundle is removed."""
        dest = self.destination
        try:
            if self.failure:
                write_json(self.path / FAILURE_MARKER, {"format": FAILURE_FORMAT})
            _fsync_tree(self.path)
            _crash_point("staged")
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                raise OutputError(f"-o {dest}: exists and is not a directory; edgec writes a directory there")
            if dest.exists() and not self.force and not replaceable(dest):
                raise OutputError(f"-o {dest}: exists and is not an edgec bundle (--force replaces it)")
            with _signals_deferred():  # Ctrl-C or --timeout lands after the swap, never inside it
                old = None
                if not dest.exists():
                    os.rename(self.path, dest)
                    self.committed = True
                    _fsync_dir(dest.parent)
                    _crash_point("committed")
                elif exchange(self.path, dest):
                    self.committed = True
                    old = self.path
                    _fsync_dir(dest.parent)
                    _crash_point("exchanged")
                else:  # no atomic exchange here: two renames, repaired by clean_leftovers after a crash
                    old = dest.parent / f".{dest.name}.edgec-old-{os.getpid()}-{secrets.token_hex(4)}"
                    os.rename(dest, old)
                    _crash_point("moved-old")
                    os.rename(self.path, dest)
                    self.committed = True
                    _fsync_dir(dest.parent)
            if old is not None:
                _remove_tree(old)
            _crash_point("removed-old")
        except OSError as exc:
            raise os_error(exc, dest) from exc
        if not self.failure:  # a good build makes an earlier failure report beside it stale
            stale = dest.with_name(dest.name + FAILURE_SUFFIX)
            if stale.is_dir() and not stale.is_symlink() and is_failure_report(stale):
                shutil.rmtree(stale, ignore_errors=True)
        return dest


def clean_leftovers(destination: Path) -> list[Path]:
    """Remove staging and old directories of `destination` whose owning process is gone; if a
    killed two-rename commit left no `destination`, its old bundle is moved back first."""
    parent = destination.parent
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in sorted(entries, key=lambda p: ".edgec-stage-" in p.name):  # old bundles first
        match = _LEFTOVER.match(entry.name)
        if not match or match["name"] != destination.name or _alive(int(match["pid"])):
            continue
        if ".edgec-old-" in entry.name and not destination.exists() and not destination.is_symlink():
            os.rename(entry, destination)
            continue
        _remove_tree(entry)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGALRM (the build's --timeout) are recorded while the bundle is swapped and
    handed to their handlers right after, so an exception can never leave the swap half done.
    (Python runs signal handlers in the main thread only, so swapping them is what defers them;
    a thread mask would not, as the kernel may deliver the signal to any other thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    previous = {sig: signal.signal(sig, lambda s, f: pending.append((s, f))) for sig in (signal.SIGINT, signal.SIGALRM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig, frame in pending:
            handler = previous[sig]
            if callable(handler):
                handler(sig, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "riscv64": 276}


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    if os.environ.get("EDGEC_NO_RENAME_EXCHANGE") or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    args = (_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        result = fn(
            ctypes.c_int(args[0]),
            ctypes.c_char_p(args[1]),
            ctypes.c_int(args[2]),
            ctypes.c_char_p(args[3]),
            ctypes.c_uint(args[4]),
        )
    elif platform.machine() in _SYSCALL_RENAMEAT2:
        result = libc.syscall(_SYSCALL_RENAMEAT2[platform.machine()], *args)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    first = True
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        if first:
            _crash_point("removing-old")
            first = False
    shutil.rmtree(path, ignore_errors=True)


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_HOOK) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def os_error(exc: OSError, path: Path) -> Exception:
    """Disk full, quota, read-only or too-long names are the user's environment: one line, exit 2."""
    where = exc.filename or path
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left on device writing {where}")
    if exc.errno == errno.ENAMETOOLONG:
        return OutputError(f"file name too long: {_short(Path(str(where)))}")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {where}: {exc.strerror}")
    if exc.errno == errno.ENOTDIR:
        return OutputError(f"cannot write {where}: a parent of it is a file, not a directory")
    return exc


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-20:]}"


# --- files ------------------------------------------------------------------------------------


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
