"""Where passes, backends and targets come from: built-ins, entry points, and --plugin files."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from edgec import pipeline_text, targets
from edgec.backend import Backend
from edgec.errors import EdgecError, PipelineError, PluginError
from edgec.pass_infra import Pass

# Imported on first use, so `edgec --help` never pays for a pass it does not run.
BUILTIN_PASSES = {
    "fold-constants": "edgec.passes.cleanup.fold_constants:FoldConstantsPass",
    "eliminate-dead-code": "edgec.passes.cleanup.eliminate_dead_code:EliminateDeadCodePass",
    "remove-identity": "edgec.passes.cleanup.remove_identity:RemoveIdentityPass",
    "fold-batchnorm": "edgec.passes.cleanup.fold_batchnorm:FoldBatchNormPass",
    "fuse-bias-add": "edgec.passes.cleanup.fuse_bias_add:FuseBiasAddPass",
    "merge-duplicate-initializers": "edgec.passes.cleanup.merge_duplicate_initializers:MergeDuplicateInitializersPass",
    "simplify-shapes": "edgec.passes.cleanup.simplify_shapes:SimplifyShapesPass",
    "cancel-transpose-reshape": "edgec.passes.cleanup.cancel_transpose_reshape:CancelTransposeReshapePass",
    "topological-sort": "edgec.passes.cleanup.topological_sort:TopologicalSortPass",
    "unroll-recurrent": "edgec.passes.cleanup.unroll_recurrent:UnrollRecurrentPass",
    "quantize": "edgec.passes.quantize.quantize:QuantizePass",
    "convert-fp16": "edgec.passes.quantize.convert_fp16:ConvertFp16Pass",
    "float-integer-ops": "edgec.passes.quantize.float_integer_ops:FloatIntegerOpsPass",
    "quantize-minmax-inputs": "edgec.passes.quantize.quantize_minmax_inputs:QuantizeMinmaxInputsPass",
    "protect-float-layers": "edgec.passes.quantize.protect_float_layers:ProtectFloatLayersPass",
    "equalize-cross-layer": "edgec.passes.quantize.equalize_cross_layer:EqualizeCrossLayerPass",
    "smooth-quant": "edgec.passes.quantize.smooth_quant:SmoothQuantPass",
    "correct-bias": "edgec.passes.quantize.correct_bias:CorrectBiasPass",
    "prune-magnitude": "edgec.passes.prune.prune_magnitude:PruneMagnitudePass",
    "prune-channels": "edgec.passes.prune.prune_channels:PruneChannelsPass",
    "prune-gradual": "edgec.passes.prune.prune_gradual:PruneGradualPass",
    "weight-share": "edgec.passes.share.weight_share:WeightSharePass",
    "share-finetune": "edgec.passes.share.share_finetune:ShareFinetunePass",
    "huffman": "edgec.passes.huffman.huffman:HuffmanPass",
    "finetune": "edgec.passes.finetune.finetune:FinetunePass",
}
BUILTIN_BACKENDS = {
    "onnx": "edgec.backends.onnx:OnnxBackend",
    "tflite": "edgec.backends.tflite:TfliteBackend",
    "tflm": "edgec.backends.tflm:TflmBackend",
    "openvino": "edgec.backends.openvino:OpenvinoBackend",
    "tvm": "edgec.backends.tvm:TvmBackend",
    "tensorrt": "edgec.backends.tensorrt:TensorrtBackend",
}
ENTRY_POINT_GROUPS = {"passes": "edgec.passes", "backends": "edgec.backends", "targets": "edgec.targets"}


@dataclass
class Entry:
    """A registered name. `error` marks a placeholder for a plugin that failed to load."""

    name: str
    ref: Any  # "module:attr" string, or the object itself
    origin: str
    error: str | None = None

    def resolve(self) -> Any:
        if self.error:
            raise PluginError(f"'{self.name}' from {self.origin} is unavailable: {self.error}")
        if isinstance(self.ref, str):
            module, _, attr = self.ref.partition(":")
            self.ref = getattr(importlib.import_module(module), attr)
        return self.ref


class Registry:
    def __init__(self, entry_points: bool = True):
        self.passes = {name: Entry(name, ref, "edgec") for name, ref in BUILTIN_PASSES.items()}
        self.backends = {name: Entry(name, ref, "edgec") for name, ref in BUILTIN_BACKENDS.items()}
        self.targets = {name: Entry(name, t, "edgec") for name, t in targets.load_builtin().items()}
        self.warnings: list[str] = []
        if entry_points:
            self._load_entry_points()

    # --- lookups -----------------------------------------------------------------------------

    def pass_class(self, name: str) -> type[Pass]:
        if name not in self.passes:
            raise PipelineError(f"unknown pass '{name}' (passes: {', '.join(sorted(self.passes))})")
        return self.passes[name].resolve()

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            raise EdgecError(f"unknown backend '{name}' (backends: {', '.join(sorted(self.backends))})")
        return self.backends[name].resolve()()

    def target(self, name: str) -> targets.Target:
        if name not in self.targets:
            raise EdgecError(f"unknown target '{name}' (targets: {', '.join(sorted(self.targets))})")
        return self.targets[name].resolve()

    def build_pipeline(self, text: str) -> list[Pass]:
        return [self.pass_class(spec.name).from_options(spec.option_dict()) for spec in pipeline_text.parse(text)]

    # --- plugins -----------------------------------------------------------------------------

    def load_plugin(self, spec: str) -> list[str]:
        """Load a plugin named on the command line: a .py file or an importable module.

        The user asked for it by name, so failure is an error (exit 2), not a warning.
        Returns the names it registered.
        """
        try:
            module = _import_file(Path(spec)) if spec.endswith(".py") else importlib.import_module(spec)
        except FileNotFoundError:
            raise PluginError(f"plugin {spec}: no such file") from None
        except ModuleNotFoundError as exc:
            if exc.name == spec:
                raise PluginError(f"plugin {spec}: no module of that name") from None
            raise PluginError(f"plugin {spec} failed to import: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise PluginError(f"plugin {spec} failed to import: {type(exc).__name__}: {exc}") from exc
        except SystemExit as exc:  # sys.exit() at import time must not end the command as a success
            raise PluginError(f"plugin {spec} called sys.exit({exc.code!r}) while being imported") from exc
        names = self.register_module(module, origin=f"plugin {spec}")
        if not names:
            raise PluginError(f"plugin {spec} defines no Pass or Backend subclass and no Target")
        return names

    def register_module(self, module: ModuleType, origin: str) -> list[str]:
        names = []
        for _, obj in inspect.getmembers(module):
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                if issubclass(obj, Pass) and obj is not Pass:
                    names.append(self._add(self.passes, obj.name, obj, origin, "pass"))
                elif issubclass(obj, Backend) and obj is not Backend:
                    names.append(self._add(self.backends, obj.name, obj, origin, "backend"))
            elif isinstance(obj, targets.Target):
                names.append(self._add(self.targets, obj.name, obj, origin, "target"))
        return names

    def _add(self, table: dict[str, Entry], name: str, obj: Any, origin: str, kind: str) -> str:
        if name in table and table[name].origin != origin:
            raise PluginError(f"{origin}: {kind} '{name}' is already defined by {table[name].origin}")
        table[name] = Entry(name, obj, origin)
        return name

    def _load_entry_points(self) -> None:
        """Installed third-party plugins. A broken one becomes a placeholder plus a warning."""
        tables = {"passes": self.passes, "backends": self.backends, "targets": self.targets}
        for kind, group in ENTRY_POINT_GROUPS.items():
            for ep in metadata.entry_points(group=group):
                origin = f"entry point {ep.value} ({ep.dist.name if ep.dist else 'unknown package'})"
                try:
                    for name, obj in _entry_point_objects(kind, ep):
                        self._add(tables[kind], name, obj, origin, kind[:-1])
                except (Exception, SystemExit) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    tables[kind].setdefault(ep.name, Entry(ep.name, None, origin, error=message))
                    self.warnings.append(f"plugin {origin} failed to load and was skipped: {message}")


def _entry_point_objects(kind: str, ep: metadata.EntryPoint) -> Iterable[tuple[str, Any]]:
    obj = ep.load()
    if kind == "targets":
        found = obj() if callable(obj) else obj
        found = [found] if isinstance(found, targets.Target) else list(found)
        return [(t.name, t) for t in found]
    return [(getattr(obj, "name", ep.name), obj)]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"edgec_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building the class
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
