"""TFLite lowering conformance: the ONNX backend node tests through lower() and LiteRT's interpreter.

    python -m bench.backends.conformance      # writes bench/backends/conformance.{json,md}

A case is in scope when every op type of its model has a lowering (the keys of LOWERINGS); its
recorded inputs go in and its recorded outputs are the reference. The node tests feed weights
and shape operands as graph inputs; a deployed model holds them as initializers, and the
lowering takes them as constants, so every input that feeds a parameter position (anything but
the data operands of the ops in DATA_OPERANDS) is frozen into an initializer with its recorded
value before loading.

Statuses: `pass`; `unsupported` (lower() refused with its one-line EdgecError: attributes or
dtypes it says it does not handle); `fail: wrong numbers`; `fail: error` (any other exception,
from the lowering or the interpreter). Float outputs pass when every element satisfies
|got - ref| <= ATOL + RTOL * |ref| (numpy.allclose with RTOL = 1e-4, ATOL = 1e-5; NaN matches
NaN, equal infinities agree; a float16 reference, which the lowering computes in float32, uses
its own step 2^-10 as RTOL); other dtypes must be equal. The bar: passes / claimed >= 95%, where
claimed = in-scope cases not refused as unsupported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path("/usr/share/libonnx-testdata/data/node")
HERE = Path(__file__).parent
RTOL, ATOL = 1e-4, 1e-5
BAR = 0.95
# Ops whose every input is data (a TFLite kernel takes it at run time); at other ops only input 0 is.
DATA_OPERANDS = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "MatMul", "Concat", "PRelu"}


@dataclass
class Result:
    case: str
    ops: list[str]
    status: str
    max_abs_error: float | None = None
    tolerance_used: float | None = None  # max over elements of |got-ref| / (ATOL + RTOL*|ref|); <= 1 passes
    error: str = ""
    outputs: list[str] = field(default_factory=list)

    @property
    def claimed(self) -> bool:
        return self.status != "unsupported"


def op_types(proto: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in proto.graph.node})


def cases(lowerings) -> list[Path]:
    """Node-test folders whose every op has a lowering."""
    found = []
    for model in sorted(ROOT.glob("*/model.onnx")):
        proto = onnx.load(str(model), load_external_data=False)
        if proto.graph.node and set(op_types(proto)) <= set(lowerings):
            found.append(model.parent)
    return found


def _load_tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda f: int(f.stem.split("_")[1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]


def _parameter_inputs(proto: onnx.ModelProto) -> set[str]:
    """Graph inputs read at a parameter position (weights, bounds, shapes, axes, indices)."""
    names = set()
    for node in proto.graph.node:
        first = len(node.input) if node.op_type in DATA_OPERANDS else 1
        names.update(node.input[first:])
    return names


def prepared(case: Path) -> tuple[onnx.ModelProto, dict, list[np.ndarray]]:
    """The case's model with parameter inputs frozen, its run-time feeds, and the expected outputs."""
    proto = onnx.load(str(case / "model.onnx"))
    data = case / "test_data_set_0"
    values = dict(zip((i.name for i in proto.graph.input), _load_tensors(data, "input"), strict=True))
    frozen = _parameter_inputs(proto) & set(values)
    kept = [i for i in proto.graph.input if i.name not in frozen]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in sorted(frozen))
    if frozen:  # IR 3 lists every initializer among the graph inputs; from IR 4 on they may stand alone
        proto.ir_version = max(proto.ir_version, 4)
    feeds = {i.name: values[i.name] for i in kept}
    return proto, feeds, _load_tensors(data, "output")


def compare(reference: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |got - ref|, max share of the tolerance used); exact dtypes use 0 or inf."""
    reference, got = np.asarray(reference), np.asarray(got)
    if reference.shape != got.shape:
        raise ValueError(f"output shape {got.shape}, expected {reference.shape}")
    if not np.issubdtype(reference.dtype, np.floating):
        same = np.array_equal(reference, got)
        return (0.0, 0.0) if same else (float("inf"), float("inf"))
    ref, out = reference.astype(np.float64), got.astype(np.float64)
    agree = (ref == out) | (np.isnan(ref) & np.isnan(out))
    diff = np.where(agree, 0.0, np.abs(out - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if not diff.size:
        return 0.0, 0.0
    rtol = max(RTOL, float(np.finfo(reference.dtype).eps))  # a float16 reference is good to its own step
    used = diff / (ATOL + rtol * np.abs(np.where(np.isfinite(ref), ref, 0.0)))
    return float(diff.max()), float(used.max())


def _interpret(connection) -> None:
    """The worker loop: run each (flatbuffer, feeds) in LiteRT, answer outputs by name or the error."""
    from ai_edge_litert.interpreter import Interpreter

    while True:
        data, feeds = connection.recv()
        try:
            interpreter = Interpreter(model_content=data, num_threads=1)
            interpreter.allocate_tensors()
            for detail in interpreter.get_input_details():
                value = feeds[detail["name"]]
                if np.issubdtype(value.dtype, np.floating) and np.issubdtype(detail["dtype"], np.floating):
                    value = value.astype(detail["dtype"])  # float16 models compute in float32
                interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
            got = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
            connection.send(("ok", got))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {str(exc).strip()[:300]}"))


class Sandbox:
    """LiteRT in a child process: a malformed flatbuffer can abort() inside the interpreter,
    which would otherwise end the whole run; the child is restarted after a crash."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.process = None

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_interpret, args=(child,), daemon=True)
        self.process.start()

    def run(self, data: bytes, feeds: dict) -> dict:
        if self.process is None or not self.process.is_alive():
            self._start()
        self.connection.send((data, feeds))
        if not self.connection.poll(self.timeout_s) and self.process.is_alive():
            self.close()
            raise TimeoutError(f"interpreter ran over {self.timeout_s:g} s")
        try:
            kind, payload = self.connection.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            self.process = None
            raise RuntimeError(f"interpreter crashed (exit code {code})") from None
        if kind == "error":
            raise RuntimeError(payload)
        return payload

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None


def run_case(case: Path, sandbox: Sandbox) -> Result:
    from edgec import ir
    from edgec.backends.tflite.lowering import lower
    from edgec.errors import EdgecError

    proto, feeds, expected = prepared(case)
    result = Result(case.name, op_types(proto), "pass", outputs=[o.name for o in proto.graph.output])
    try:
        model = ir.from_proto(proto, source=case.name)
    except Exception as exc:
        result.status, result.error = "fail: error", f"loading: {type(exc).__name__}: {exc}"
        return result
    try:
        data = lower(model)
    except EdgecError as exc:
        result.status, result.error = "unsupported", str(exc)
        return result
    except Exception as exc:
        result.status, result.error = "fail: error", f"lowering: {type(exc).__name__}: {exc}"
        return result
    try:
        got = sandbox.run(data, feeds)
        errors = [compare(ref, got[name]) for name, ref in zip(result.outputs, expected, strict=True)]
    except Exception as exc:
        result.status, result.error = "fail: error", f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        return result
    result.max_abs_error = max(e[0] for e in errors)
    result.tolerance_used = max(e[1] for e in errors)
    if result.tolerance_used > 1.0:
        result.status = "fail: wrong numbers"
    return result


def run_all(progress=None) -> list[Result]:
    from edgec.backends.tflite.ops import LOWERINGS

    results, sandbox = [], Sandbox()
    try:
        for case in cases(LOWERINGS):
            results.append(run_case(case, sandbox))
            if progress:
                progress(results[-1])
    finally:
        sandbox.close()
    return results


def summary(results: list[Result]) -> dict:
    claimed = [r for r in results if r.claimed]
    passed = [r for r in claimed if r.status == "pass"]
    return {
        "cases": len(results),
        "claimed": len(claimed),
        "passed": len(passed),
        "unsupported": len(results) - len(claimed),
        "wrong_numbers": sum(r.status == "fail: wrong numbers" for r in results),
        "errors": sum(r.status == "fail: error" for r in results),
        "pass_rate": len(passed) / len(claimed) if claimed else 0.0,
        "bar": BAR,
        "tolerance": f"|got - ref| <= {ATOL:g} + {RTOL:g} * |ref| per element (float16 references: rtol 2^-10)",
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _by_ops(results: list[Result]) -> list[str]:
    """One row per op set: how many of its cases pass, fail, or are refused."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(", ".join(r.ops), []).append(r)
    lines = ["| ops | cases | pass | fail | unsupported |", "|---|---|---|---|---|"]
    for ops, members in sorted(groups.items()):
        passed = sum(r.status == "pass" for r in members)
        refused = sum(not r.claimed for r in members)
        lines.append(f"| {ops} | {len(members)} | {passed} | {len(members) - passed - refused} | {refused} |")
    return lines


def markdown(results: list[Result], totals: dict, seconds: float) -> str:
    lines = [
        "# TFLite lowering: ONNX node-test conformance",
        "",
        "Generated by `python -m bench.backends.conformance` from Debian libonnx-testdata "
        f"({ROOT}): every node test whose ops all have a TFLite lowering, lowered and run in LiteRT's "
        "interpreter against the recorded outputs. Parameter inputs (weights, shapes, axes) are "
        "frozen into initializers.",
        "",
        f"Tolerance: {totals['tolerance']}; non-float outputs exactly equal.",
        "",
        f"**{totals['passed']} / {totals['claimed']} claimed cases pass ({100 * totals['pass_rate']:.1f}%)**, "
        f"bar {100 * BAR:.0f}%; {totals['cases']} cases in scope, {totals['unsupported']} refused as unsupported, "
        f"{totals['wrong_numbers']} wrong numbers, {totals['errors']} errors; {seconds:.1f} s.",
        "",
        *_by_ops(results),
        "",
        "| case | ops | status | max abs error | tolerance used | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        err = "" if r.max_abs_error is None else f"{r.max_abs_error:.3g}"
        used = "" if r.tolerance_used is None else f"{r.tolerance_used:.3g}"
        lines.append(f"| {r.case} | {', '.join(r.ops)} | {r.status} | {err} | {used} | {_cell(r.error)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def show(r: Result) -> None:
        if not args.quiet and r.status != "pass":
            print(f"{r.case}: {r.status} {r.error[:160]}")

    results = run_all(show)
    seconds = time.perf_counter() - start
    totals = summary(results) | {"seconds": round(seconds, 1)}
    report = {"summary": totals, "cases": [asdict(r) for r in results]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conformance.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "conformance.md").write_text(markdown(results, totals, seconds))
    print(
        f"{totals['passed']} / {totals['claimed']} claimed pass ({100 * totals['pass_rate']:.1f}%), "
        f"{totals['cases']} in scope, {totals['unsupported']} unsupported, {seconds:.1f} s"
    )
    return 0 if totals["pass_rate"] >= BAR else 1


if __name__ == "__main__":
    raise SystemExit(main())
