"""Pruning, weight sharing, Huffman and the runtime that decodes it, on the bundled LeNets."""

import json

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

import edgec
from edgec import ir, runtime
from edgec.compress import shared, storage
from edgec.compress.layers import weighted_layers
from edgec.errors import EdgecError
from edgec.models import registry
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.prune.prune_magnitude import PruneMagnitudePass
from edgec.passes.share.weight_share import WeightSharePass
from tests.helpers import feeds_for, run

LENET300 = "zoo:lenet300"


def lenet300() -> ir.Model:
    return ir.load(registry.get("lenet300").path())


def weights(model: ir.Model) -> dict[str, np.ndarray]:
    """Every layer's effective weight, decoded through its codebook where shared."""
    found = {layer.weight.name: layer.weight.values for layer in weighted_layers(model.graph)}
    for s in shared.shared_weights(model.graph):
        found[s.indices.name] = s.values
    return found


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.97])
def test_layer_scope_zeroes_exactly_that_share_of_each_layer(sparsity):
    model = lenet300()
    result = apply_pass(PruneMagnitudePass(sparsity=sparsity), model.graph, PassContext())
    for name, w in weights(model).items():
        assert np.count_nonzero(w == 0) == int(sparsity * w.size), name
        assert result.stats["layers"]
    assert result.stats["sparsity"] == pytest.approx(sparsity, abs=1e-3)


def test_global_scope_uses_one_threshold_and_first_last_override():
    model = lenet300()
    original = weights(model)
    apply_pass(PruneMagnitudePass(sparsity=0.9, scope="global", last=0.5), model.graph, PassContext())
    pruned = list(weights(model).values())
    first_two = pruned[:2]
    zeros = sum(int((w == 0).sum()) for w in first_two)
    assert zeros == int(0.9 * sum(w.size for w in first_two))
    # One threshold: every weight kept is at least as large as every weight dropped.
    kept = np.concatenate([np.abs(o[p != 0]) for o, p in zip(list(original.values())[:2], first_two)])
    dropped = np.concatenate([np.abs(o[p == 0]) for o, p in zip(list(original.values())[:2], first_two)])
    assert kept.min() >= dropped.max()
    # The big first layer gives more than the 100->10 ... layers with larger weights.
    assert (first_two[0] == 0).mean() > (first_two[1] == 0).mean()
    assert (pruned[-1] == 0).sum() == int(0.5 * pruned[-1].size)


def test_skip_and_bad_sparsity():
    model = lenet300()
    first = weighted_layers(model.graph)[0]
    apply_pass(PruneMagnitudePass(sparsity=0.8, skip=(first.node.name,)), model.graph, PassContext())
    assert np.count_nonzero(first.weight.values) == first.weight.values.size
    with pytest.raises(EdgecError, match="sparsity=1.0: must be < 1"):
        apply_pass(PruneMagnitudePass(sparsity=1.0), lenet300().graph, PassContext())


@pytest.mark.parametrize("bits,init", [(2, "linear"), (4, "density"), (5, "linear"), (6, "random")])
def test_weight_sharing_leaves_at_most_2_to_the_bits_values_and_keeps_zeros(bits, init):
    model = lenet300()
    apply_pass(PruneMagnitudePass(sparsity=0.8), model.graph, PassContext())
    pruned = weights(model)
    apply_pass(WeightSharePass(bits=bits, init=init), model.graph, PassContext())
    sharing = shared.shared_weights(model.graph)
    assert len(sharing) == len(pruned) == 3
    for s in sharing:
        assert s.indices.values.dtype == np.uint8 and len(s.codebook.values) <= 2**bits
        decoded = s.values
        assert len(np.unique(decoded)) <= 2**bits
        original = pruned[s.indices.name.removesuffix("_idx")]
        assert np.array_equal(decoded == 0, original == 0)  # pruned stay zero, no new zeros
        assert s.codebook.values[0] == 0.0  # the reserved zero centroid
        # The clustering error (RMS over the kept weights) halves with every bit.
        kept = original != 0
        rms = np.sqrt(np.mean((decoded - original)[kept] ** 2) / np.mean(original[kept] ** 2))
        assert rms < 2.0 / 2**bits


def test_shared_model_runs_unchanged_in_onnxruntime():
    """Gather(codebook, Cast(indices)) computes exactly the weights numpy decodes."""
    model = lenet300()
    apply_pass(WeightSharePass(bits=5), model.graph, PassContext())
    assert {"Gather", "Cast"} <= {n.op for n in model.graph.nodes}
    dense = model.copy()
    for s in shared.shared_weights(dense.graph):
        decoded = gs.Constant(s.indices.name + "_dense", s.values)
        for reader in list(s.gather.outputs[0].outputs):
            reader.inputs[reader.inputs.index(s.gather.outputs[0])] = decoded
    dense.graph.cleanup()
    assert not shared.shared_weights(dense.graph)
    feeds = feeds_for(model)
    assert all(np.array_equal(a, b) for a, b in zip(run(model, feeds), run(dense, feeds), strict=True))


def build(tmp_path, name, passes, **kwargs):
    out = tmp_path / name
    result = edgec.compile(
        LENET300, target="arduino-nano-33-ble", backend="onnx", passes=passes, output_dir=out, **kwargs
    )
    return out, result


def test_compressed_build_decodes_to_the_pruned_and_shared_model(tmp_path):
    stages = "prune-magnitude{sparsity=0.7,scope=global},weight-share{bits=5}"
    plain, _ = build(tmp_path, "plain", stages)
    packed, result = build(tmp_path, "packed", stages + ",huffman")
    assert sorted(p.name for p in packed.iterdir()) == [
        "manifest.json",
        "model.ecw",
        "model.onnx",
        "report.json",
        "report.md",
    ]
    huffman_step = result.report["passes"][-1]
    assert huffman_step["name"] == "huffman" and huffman_step["check"]["ok"]
    assert huffman_step["check"]["max_abs_err"] == 0.0  # lossless: compared bit for bit

    a, b = runtime.load(plain), runtime.load(packed)
    # The three index tensors and the 300-float bias came from model.ecw; codebooks are too small.
    assert b.decoded == ["1.bias", "1.weight_idx", "3.weight_idx", "5.weight_idx"] and not a.decoded
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    for i in range(len(x)):
        ya, yb = a.run({"input": x[i : i + 1]}), b.run({"input": x[i : i + 1]})
        assert all(np.array_equal(ya[k], yb[k]) for k in ya)

    def files(d):
        return sum((d / f).stat().st_size for f in ("model.onnx", "model.ecw") if (d / f).exists())

    original = registry.get("lenet300").path().stat().st_size
    assert files(packed) < files(plain) / 2.5
    print("ratio", original / files(packed))
    assert original / files(packed) > 10  # 30% of weights at 5 bits + Huffman-coded gaps
    # The ONNX file alone lacks the weights: onnxruntime refuses it instead of running wrong.
    with pytest.raises(InvalidArgument, match="1.weight_idx' is not a graph input, initializer"):
        ort.InferenceSession(str(packed / "model.onnx"), providers=["CPUExecutionProvider"])


def test_runtime_refuses_a_tampered_or_incomplete_bundle(tmp_path):
    out, _ = build(tmp_path, "o", "prune-magnitude{sparsity=0.7,scope=global},weight-share{bits=4},huffman")
    data = bytearray((out / "model.ecw").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.ecw").write_bytes(bytes(data))
    with pytest.raises(EdgecError, match="model.ecw does not match its sha256"):
        runtime.load(out)
    (out / "model.ecw").unlink()
    with pytest.raises(EdgecError, match="missing"):
        runtime.load(out)
    with pytest.raises(EdgecError, match="no readable manifest"):
        runtime.load(tmp_path)


def test_report_has_the_compression_table(tmp_path):
    out, result = build(tmp_path, "o", "prune-magnitude{sparsity=0.7,scope=global},weight-share{bits=5},huffman")
    report = (out / "report.md").read_text()
    assert "## Compression" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "`" in line]
    assert [r.split("`")[1] for r in rows[-3:]] == ["prune-magnitude", "weight-share", "huffman"]
    steps = {s["name"]: s["stats"]["storage"] for s in result.report["passes"] if "storage" in s.get("stats", {})}
    # Each stage stores less: dense > sparse fixed-width floats > 5-bit indices > Huffman.
    dense = steps["prune-magnitude"]["dense_bytes"]
    sizes = [steps[n]["weight_bytes"] for n in ("prune-magnitude", "weight-share", "huffman")]
    assert dense > sizes[0] > sizes[1] > sizes[2]
    ecw = (out / storage.FILE_NAME).stat().st_size
    assert steps["huffman"]["container_bytes"] == ecw  # the table reports the real file
    manifest = json.loads((out / "manifest.json").read_text())
    assert "model.ecw" in manifest["files"]


def test_min_agreement_finds_the_largest_sparsity_that_keeps_decisions():
    model = lenet300()
    samples = registry.get("lenet300").samples(256)
    ctx = PassContext(samples=samples)
    result = apply_pass(PruneMagnitudePass(sparsity=0.95, scope="global", min_agreement=0.97), model.graph, ctx)
    chosen = result.stats["chosen_sparsity"]
    tried = {t["sparsity"]: t["top1_agreement"] for t in result.stats["search"]}
    assert 0.3 < chosen < 0.95 and tried[0.95] < 0.97  # the bound alone was too far
    assert tried[chosen] >= 0.97 and result.stats["sparsity"] == pytest.approx(chosen, abs=1e-3)
    assert min(s for s, a in tried.items() if a < 0.97) - chosen < 0.95 / 2**5  # bisected closely
    with pytest.raises(EdgecError, match="needs check samples"):
        apply_pass(PruneMagnitudePass(min_agreement=0.9), lenet300().graph, PassContext())


def test_report_shows_structured_pruning_costs(tmp_path):
    out = tmp_path / "o"
    result = edgec.compile(
        "zoo:lenet5", target="arduino-nano-33-ble", backend="onnx", passes="prune-channels{ratio=0.25}", output_dir=out
    )
    stats = result.report["passes"][0]["stats"]
    assert stats["macs_after"] < 0.65 * stats["macs_before"] and stats["params_after"] < 0.6 * stats["params_before"]
    assert stats["latency_ms_after"] > 0 and stats["latency_ms_before"] > 0
    table = (out / "report.md").read_text().split("## Structured pruning")[1]
    assert f"{stats['macs_before']:,} -> {stats['macs_after']:,}" in table
