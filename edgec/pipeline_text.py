"""Pipeline text: `fold-constants,fuse-bn,quantize{scheme=tflite,skip=[fc1,fc2]}` parsed and printed.

Grammar (whitespace between tokens is ignored):

    pipeline := [ item { "," item } ]
    item     := NAME [ "{" [ option { "," option } ] "}" ]
    option   := KEY "=" value
    value    := scalar | "[" [ scalar { "," scalar } ] "]"
    scalar   := BARE | '"' chars with \\" and \\\\ escapes '"'

Values stay strings here; each pass converts them to its option types. `format(parse(t))` gives
the canonical spelling of t, and `parse(format(specs)) == specs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from edgec.errors import PipelineError

Value = Union[str, tuple[str, ...]]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_BARE = re.compile(r"[^\s,{}\[\]=\"]+")


@dataclass(frozen=True)
class PassSpec:
    name: str
    options: tuple[tuple[str, Value], ...] = ()

    def option_dict(self) -> dict[str, Value]:
        return dict(self.options)

    def __str__(self) -> str:
        return format_spec(self)


def parse(text: str) -> list[PassSpec]:
    return _Parser(text).pipeline()


def format(specs: list[PassSpec]) -> str:  # noqa: A001 - mirrors parse()
    return ",".join(format_spec(s) for s in specs)


def format_spec(spec: PassSpec) -> str:
    if not spec.options:
        return spec.name
    body = ",".join(f"{key}={format_value(value)}" for key, value in spec.options)
    return f"{spec.name}{{{body}}}"


def format_value(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_format_scalar(v) for v in value) + "]"
    return _format_scalar(value)


def _format_scalar(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> PipelineError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of text"
        return PipelineError(
            f"malformed pipeline text at column {self.pos + 1}: expected {expected}, found {found} in {self.text!r}"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(repr(char))
        self.pos += 1

    def match(self, pattern: re.Pattern, what: str) -> str:
        self.skip_space()
        m = pattern.match(self.text, self.pos)
        if not m:
            raise self.fail(what)
        self.pos = m.end()
        return m.group()

    def pipeline(self) -> list[PassSpec]:
        specs: list[PassSpec] = []
        if self.peek() == "":
            return specs
        while True:
            specs.append(self.item())
            if self.peek() == "":
                return specs
            self.expect(",")

    def item(self) -> PassSpec:
        name = self.match(_NAME, "a pass name")
        options: list[tuple[str, Value]] = []
        if self.peek() == "{":
            self.pos += 1
            seen: set[str] = set()
            if self.peek() != "}":
                while True:
                    key = self.match(_KEY, "an option name")
                    if key in seen:
                        raise PipelineError(f"malformed pipeline text: option '{key}' given twice for pass '{name}'")
                    seen.add(key)
                    self.expect("=")
                    options.append((key, self.value()))
                    if self.peek() != ",":
                        break
                    self.pos += 1
            self.expect("}")
        return PassSpec(name, tuple(options))

    def value(self) -> Value:
        if self.peek() == "[":
            self.pos += 1
            items: list[str] = []
            if self.peek() != "]":
                while True:
                    items.append(self.scalar())
                    if self.peek() != ",":
                        break
                    self.pos += 1
            self.expect("]")
            return tuple(items)
        return self.scalar()

    def scalar(self) -> str:
        if self.peek() != '"':
            return self.match(_BARE, "a value")
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise PipelineError(
            f"malformed pipeline text at column {start + 1}: quoted value never closed in {self.text!r}"
        )
