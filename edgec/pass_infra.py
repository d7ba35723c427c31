"""The pass contract: declaration (name, summary, options, numerics) and the one place it is enforced."""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec import external_data, ir, pipeline_text
from edgec.compare import EXACT, LOSSLESS, LOSSY_DEFAULT, Tolerance
from edgec.errors import EdgecError, InternalPassError, PassError, PipelineError, PluginError

_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def option(default: Any, *, min: float | None = None, max: float | None = None, below: float | None = None) -> Any:
    """A numeric pass option with bounds, checked by the base class for every instance:

    iterations: int = option(4, min=1)
    sparsity: float = option(0.5, min=0, below=1)   # 0 <= sparsity < 1
    """
    bounds = {k: v for k, v in (("min", min), ("max", max), ("below", below)) if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds})


class Numerics(str, enum.Enum):
    """What a pass promises about the numbers, which decides how it is checked."""

    EXACT = "exact"  # same function; only floating point reassociation (compared to the previous step)
    LOSSLESS = "lossless"  # decodes to identical numbers (compared bit for bit to the previous step)
    LOSSY = "lossy"  # approximates (compared to the original model within a budget)

    def default_tolerance(self) -> Tolerance:
        return {Numerics.EXACT: EXACT, Numerics.LOSSLESS: LOSSLESS, Numerics.LOSSY: LOSSY_DEFAULT}[self]


@dataclass
class PassResult:
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """What a pass may know besides the graph. Data (calibration, training) arrives here, never via globals."""

    target: Any = None  # edgec.targets.Target
    samples: list = field(default_factory=list)  # real or seeded inputs, as used by the checks
    calibration: Any = None  # edgec.calib.CalibrationSet, from --calib
    training: Any = None  # edgec.quant.evaluation.EvalSet, from --train (labels optional)
    teacher: Any = None  # edgec.ir.Model: the model before the pipeline, for distillation
    progress: bool = False  # passes with long loops show a progress bar
    cache: dict = field(default_factory=dict)  # expensive results passes may share (calibration stats)
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class Pass:
    """Base class of every pass. Subclasses declare options as annotated class attributes:

        class PruneMagnitudePass(Pass):
            name = "prune-magnitude"
            summary = "Zero the smallest weights of each layer."
            numerics = Numerics.LOSSY
            sparsity: float = 0.5

    and become dataclasses automatically, so `PruneMagnitudePass(sparsity=0.8)` works.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    numerics: ClassVar[Numerics] = Numerics.EXACT
    # The budget a lossy pass is checked against; None takes the numerics kind's default.
    tolerance: ClassVar[Tolerance | None] = None
    # Passes that read ctx.calibration; the build refuses to start them without --calib.
    requires_calibration: ClassVar[bool] = False
    # Passes that read ctx.training (--train); the build refuses to start them without it.
    requires_training: ClassVar[bool] = False
    # Passes that recover accuracy lost by the lossy passes before them (fine-tuning): those
    # passes' checks are measured and reported, and judged by this pass's check instead.
    recovers: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(cls.__dict__.get("name", None), str) or not _KEBAB.fullmatch(cls.name):
            raise TypeError(f"{where}: a pass needs a kebab-case `name`, e.g. name = 'fold-constants'")
        if not isinstance(getattr(cls, "summary", None), str) or not cls.summary.strip():
            raise TypeError(f"{where}: a pass needs a one-line `summary`")
        if not isinstance(cls.numerics, Numerics):
            raise TypeError(f"{where}: `numerics` must be a Numerics member, not {cls.numerics!r}")
        for option, annotation in cls.__dict__.get("__annotations__", {}).items():
            if option.startswith("_") or "ClassVar" in str(annotation):
                continue
            if not hasattr(cls, option):
                raise TypeError(f"{where}: option '{option}' needs a default value")
            default = getattr(cls, option)
            if isinstance(default, (list, dict, set)):  # each instance gets its own copy
                setattr(cls, option, dataclasses.field(default_factory=lambda value=default: copy.copy(value)))
        dataclasses.dataclass(cls)

    def __post_init__(self) -> None:
        self.check_options()

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def check_options(self) -> None:
        """Declared bounds (see `option`) and finiteness of every numeric option, in one place:
        PipelineError naming the pass and the option."""
        for f in self.option_fields():
            value = getattr(self, f.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                where = f"pass '{self.name}' option {f.name}={_to_text(value)}"
                if isinstance(v, float) and not math.isfinite(v):
                    raise PipelineError(f"{where}: must be a finite number")
                bounds = f.metadata.get("bounds", {})
                if "min" in bounds and v < bounds["min"]:
                    raise PipelineError(f"{where}: must be >= {bounds['min']}")
                if "max" in bounds and v > bounds["max"]:
                    raise PipelineError(f"{where}: must be <= {bounds['max']}")
                if "below" in bounds and v >= bounds["below"]:
                    raise PipelineError(f"{where}: must be < {bounds['below']}")

    # --- options ---------------------------------------------------------------------------

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    @classmethod
    def from_options(cls, options: dict[str, pipeline_text.Value]) -> "Pass":
        fields = {f.name: f for f in cls.option_fields()}
        hints = typing.get_type_hints(cls)
        values = {}
        for key, raw in options.items():
            if key not in fields:
                valid = ", ".join(fields) or "none"
                raise PipelineError(f"pass '{cls.name}' has no option '{key}' (options: {valid})")
            values[key] = _convert(raw, hints[key], f"{cls.name}{{{key}}}")
        return cls(**values)

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.option_fields()}

    def spec(self, full: bool = True) -> pipeline_text.PassSpec:
        """The pass as pipeline text; `full` prints every option, defaults included."""
        items = []
        for f in self.option_fields():
            value = getattr(self, f.name)
            if full or value != _default_of(f):
                items.append((f.name, _to_text(value)))
        return pipeline_text.PassSpec(self.name, tuple(items))

    def check_tolerance(self) -> Tolerance:
        return self.tolerance or self.numerics.default_tolerance()


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _to_text(value: Any) -> pipeline_text.Value:
    if isinstance(value, (list, tuple)):
        return tuple(str(_to_text(v)) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _convert(raw: pipeline_text.Value, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw == "" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(raw, inner[0], where)
    if origin in (list, tuple):
        items = raw if isinstance(raw, tuple) else (raw,)  # a bare value is a one-element list
        item_type = args[0] if args else str
        converted = [_convert(item, item_type, where) for item in items]
        return tuple(converted) if origin is tuple else converted
    if isinstance(raw, tuple):
        raise PipelineError(f"{where}: expected a single value, got a list")
    if origin is typing.Literal:
        if raw not in args:
            raise PipelineError(f"{where}: '{raw}' is not one of {', '.join(map(str, args))}")
        return raw
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw)
        except ValueError:
            raise PipelineError(f"{where}: '{raw}' is not one of {', '.join(m.value for m in hint)}") from None
    if hint is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise PipelineError(f"{where}: '{raw}' is not a boolean (true/false)")
    if hint in (int, float):
        try:
            return hint(raw)
        except ValueError:
            raise PipelineError(f"{where}: '{raw}' is not {'an integer' if hint is int else 'a number'}") from None
    return raw


# --- running one pass: the contract, enforced in one place ---------------------------------


def apply_pass(pass_: Pass, graph: gs.Graph, ctx: PassContext, before: list[str] = ()) -> PassResult:
    """Run a pass and hold it to its contract; any failure names the pass and what ran before it."""
    where = f"pass '{pass_.name}'" + (f" (after {', '.join(before[-3:])})" if before else "")
    # A built-in pass that crashes or breaks its contract is edgec's bug (exit code 3); a plugin's
    # is the plugin's (exit code 2). A deliberate EdgecError keeps its own exit code.
    broken = InternalPassError if _builtin(pass_) else PassError
    try:
        result = pass_.run(graph, ctx)
    except EdgecError as exc:
        error = PassError(f"{where}: {exc}")
        error.exit_code = exc.exit_code
        raise error from exc
    except Exception as exc:
        raise broken(f"{where} raised {type(exc).__name__}: {_first_line(exc)}") from exc
    except SystemExit as exc:  # a plugin's sys.exit() must not end the build as if it succeeded
        raise PluginError(f"{where} called sys.exit({exc.code!r}) instead of returning a PassResult") from exc
    if not isinstance(result, PassResult):
        raise broken(f"{where} returned {type(result).__name__}, not PassResult")
    result.stats = _plain(result.stats, f"{where} stats", broken)
    if result.modified:
        _validate_graph(graph, where, broken)
    return result


def _builtin(pass_: Pass) -> bool:
    module = type(pass_).__module__
    return module == "edgec" or module.startswith("edgec.")


def _validate_graph(graph: gs.Graph, where: str, broken: type[PassError] = PassError) -> None:
    try:
        # A large model's weights would have to be written out for the checker to read them;
        # there the equivalence check's onnxruntime load is the validation.
        if not external_data.needed(graph):
            onnx.checker.check_model(ir.export_graph(graph), full_check=False)
    except Exception as exc:
        raise broken(f"{where} left an invalid graph: {_first_line(exc)}") from exc


def _plain(value: Any, where: str, broken: type[PassError] = PassError) -> Any:
    """Stats go into report.json: numpy scalars become Python numbers, anything else must be plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v, where, broken) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, broken) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise broken(f"{where}: {type(value).__name__} is not JSON-serializable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
