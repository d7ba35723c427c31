"""Progress on stderr: a line rewritten in place on a terminal, plain lines elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`with Progress(total, "training") as p: p.update(note="loss 0.31")`."""

    def __init__(
        self,
        total: int | None,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        min_interval: float = 0.2,
    ):
        self.total, self.label, self.count = total, label, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval if self.tty else 10.0  # logs get a line every 10 s at most
        self.start = self.last = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, note: str = "") -> None:
        self.count += n
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.min_interval or self.count == self.total):
            self.last = now
            self._write(note)

    def _write(self, note: str) -> None:
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        bar = ""
        if self.total:
            filled = int(20 * self.count / self.total)
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        line = f"{self.label} {bar}{done} {time.perf_counter() - self.start:.1f}s {note}".rstrip()
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def say(message: str, enabled: bool = True, stream: TextIO | None = None) -> None:
    if enabled:
        stream = stream or sys.stderr
        stream.write(message + "\n")
        stream.flush()
