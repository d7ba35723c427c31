"""Measure the per-layer cost table `-O int8` uses to decide where int8 pays (edgec.quant.op_costs).

    python -m bench.quant.op_costs     # rewrites edgec/targets/op_costs.json and bench/quant/op_costs.md

Each row is one layer as it sits inside an int8 model in onnxruntime (CPU provider, 1 thread,
graph optimizations on, the x86-64 target's deployment setting): uint8 in, uint8 out.
  int8:  u8 -> DequantizeLinear -> layer(DequantizeLinear(int8 weights)) -> QuantizeLinear -> u8,
         which onnxruntime fuses into one QLinearConv / MatMulInteger kernel;
  float: u8 -> DequantizeLinear -> layer(float32 weights) -> QuantizeLinear -> u8: a float island
         and the conversions it costs its int8 neighbours.
Layers: dense Conv (1x1 and 3x3), depthwise Conv (3x3, 5x5) and MatMul with constant weights,
over dot lengths K and output sizes that real vision, audio and text models have. Every pair
is timed in interleaved rounds (median of medians), so machine load moves both alike; the
table keeps the per-row ratio float/int8, which is what the build reads, and the absolute
times for scale. Measured once per target and committed: builds read the table and never time
anything, so the same command gives the same bytes under any load (issue 13).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.quant.speed import median_run_us

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "edgec" / "targets" / "op_costs.json"
MARKDOWN = Path(__file__).parent / "op_costs.md"
ROUNDS = 5
ROUND_SECONDS = 0.05  # runs per round: as many as fit, at least MIN_RUNS
MIN_RUNS = 5

# (kind, C_in, C_out, kernel, output H=W): K = C_in x kernel^2 for dense, kernel^2 for depthwise.
SHAPES = (
    [("conv", c, co, 3, hw) for c in (1, 3, 8, 16, 32, 64, 128, 256) for co in (16, 64, 256) for hw in (8, 32)]
    + [("conv", c, co, 1, hw) for c in (16, 64, 256, 1024) for co in (16, 64, 256) for hw in (8, 32)]
    + [("depthwise", c, c, k, hw) for c in (16, 64, 256, 1024) for k in (3, 5) for hw in (8, 32)]
    + [("matmul", c, co, 1, rows) for c in (16, 64, 256, 1024) for co in (16, 64, 256, 1024) for rows in (1, 64)]
)


def _layer_model(kind: str, c_in: int, c_out: int, kernel: int, size: int, int8: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    group = c_in if kind == "depthwise" else 1
    if kind == "matmul":
        in_shape, out_shape, w_shape = [size, c_in], [size, c_out], [c_in, c_out]
    else:
        pad = kernel // 2
        in_shape, out_shape = [1, c_in, size, size], [1, c_out, size, size]
        w_shape = [c_out, c_in // group, kernel, kernel]
    weight = rng.standard_normal(w_shape).astype(np.float32) * 0.1
    scale_in, scale_out = np.float32(0.02), np.float32(0.05)
    inits = [
        numpy_helper.from_array(np.array(scale_in), "s_in"),
        numpy_helper.from_array(np.array(scale_out), "s_out"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "zp"], ["xf"])]
    if int8:
        axis = 1 if kind == "matmul" else 0
        w_scale = np.abs(weight).max(axis=tuple(i for i in range(weight.ndim) if i != axis)) / 127
        shape = [-1 if i == axis else 1 for i in range(weight.ndim)]
        w_q = np.clip(np.round(weight / w_scale.reshape(shape)), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(w_q, "w_q"),
            numpy_helper.from_array(w_scale.astype(np.float32), "w_s"),
            numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], axis=axis))
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    if kind == "matmul":
        nodes.append(helper.make_node("MatMul", ["xf", "w"], ["y"]))
    else:
        nodes.append(helper.make_node("Conv", ["xf", "w"], ["y"], pads=[pad] * 4, group=group))
    nodes.append(helper.make_node("QuantizeLinear", ["y", "s_out", "zp"], ["out"]))
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, in_shape)],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure(shape: tuple) -> dict:
    kind, c_in, c_out, kernel, size = shape
    sessions = {p: _session(_layer_model(kind, c_in, c_out, kernel, size, p == "int8")) for p in ("int8", "float")}
    x = sessions["int8"].get_inputs()[0]
    feeds = {x.name: np.random.default_rng(1).integers(0, 255, x.shape, dtype=np.uint8)}
    for session in sessions.values():
        for _ in range(3):
            session.run(None, feeds)
    once = median_run_us(sessions["float"], feeds, 3) * 1e-6
    runs = max(MIN_RUNS, int(ROUND_SECONDS / max(once, 1e-6)))
    rounds = {p: [] for p in sessions}
    for _ in range(ROUNDS):
        for p, session in sessions.items():
            rounds[p].append(median_run_us(session, feeds, runs))
    k = kernel * kernel * (1 if kind == "depthwise" else c_in)
    spatial = size if kind == "matmul" else size * size
    return {
        "kind": kind,
        "k": k,
        "c_out": c_out,
        "spatial": spatial,
        "macs": spatial * c_out * k,
        "int8_us": round(statistics.median(rounds["int8"]), 2),
        "float_us": round(statistics.median(rounds["float"]), 2),
        "ratio": round(statistics.median(f / i for f, i in zip(rounds["float"], rounds["int8"])), 4),
    }


def markdown(table: dict) -> str:
    lines = [
        "# Layer cost table: x86-64 target, onnxruntime CPU provider, 1 thread",
        "",
        f"Written by `python -m bench.quant.op_costs` on {table['machine']}, onnxruntime {table['onnxruntime']}",
        f"(1-minute load average {table['load_average']} when it finished).",
        "A layer inside an int8 model, uint8 in and out: `int8` its fused int8 kernel, `float` a float island",
        "(DequantizeLinear, the float layer, QuantizeLinear). ratio < 1: the float island is faster.",
        "",
        "| kind | K | C_out | spatial | MACs | int8 us | float us | float/int8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['kind']} | {r['k']} | {r['c_out']} | {r['spatial']} | {r['macs']:,} | {r['int8_us']} | "
            f"{r['float_us']} | {r['ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    rows = []
    for i, shape in enumerate(SHAPES):
        rows.append(measure(shape))
        r = rows[-1]
        print(f"[{i + 1}/{len(SHAPES)}] {r['kind']:9} K={r['k']:<5} C_out={r['c_out']:<5} spatial={r['spatial']:<5} "
              f"int8 {r['int8_us']:9.1f} us  float {r['float_us']:9.1f} us  ratio {r['ratio']:.3f}", flush=True)
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0] if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    table = {
        "x86-64": {
            "onnx": {
                "machine": f"{platform.processor() or platform.machine()} ({', '.join(isa)})",
                "onnxruntime": ort.__version__,
                "threads": 1,
                "load_average": round(os.getloadavg()[0], 2),  # other work while measuring
                "rows": rows,
            }
        }
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    MARKDOWN.write_text(markdown(table["x86-64"]["onnx"]))
    print(f"wrote {args.out} and {MARKDOWN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
