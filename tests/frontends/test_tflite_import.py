"""TFLite import: the imported IR, run in onnxruntime, computes what LiteRT's interpreter computes."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

from edgec import frontends  # noqa: E402
from edgec.backends.tflite.lowering import lower  # noqa: E402
from edgec.cli import main  # noqa: E402
from edgec.errors import ModelLoadError  # noqa: E402
from edgec.frontends import tflite  # noqa: E402
from tests.frontends.tflite_nets import Net, interpret, mediapipe_model, q  # noqa: E402
from tests.helpers import linf_rel, op_counts, run  # noqa: E402

SAME, VALID = schema.Padding.SAME, schema.Padding.VALID
ACT = schema.ActivationFunctionType
FACE_DETECTOR = "modules/face_detection/face_detection_short_range.tflite"


def _mediapipe(relative: str):
    path = mediapipe_model(relative)
    if path is None:
        pytest.skip(f"mediapipe/{relative} not found: run `make test-data` (scripts/fetch-mediapipe-models)")
    return path


def _compare(data, model, feeds) -> float:
    """Worst L-inf relative error of the imported model against the interpreter."""
    reference = interpret(data, feeds)
    got = run(model, {t.name: f for t, f in zip(model.graph.inputs, feeds)})
    return max(linf_rel(r, g) for r, g in zip(reference, got, strict=True))


# --- the face detector (BlazeFace) ----------------------------------------------------------------


def _synthetic_face() -> np.ndarray:
    """A 128x128 cartoon face (skin ellipse, eyes, brows, mouth) on a gradient, scaled to [-1, 1]
    as BlazeFace expects."""
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:128, 0:128]
    background = np.stack([60 + x, 80 + y // 2, 140 - y // 2], -1).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((34, 22, 94, 106), fill=(224, 172, 140))
    for cx in (50, 78):
        draw.ellipse((cx - 7, 52, cx + 7, 60), fill=(250, 250, 250))
        draw.ellipse((cx - 3, 53, cx + 3, 59), fill=(40, 30, 20))
        draw.line((cx - 8, 46, cx + 8, 44), fill=(70, 50, 30), width=2)
    draw.polygon([(64, 60), (59, 78), (69, 78)], fill=(205, 150, 120))
    draw.arc((52, 80, 76, 96), 20, 160, fill=(150, 50, 50), width=3)
    return (np.asarray(image, np.float32)[None] / 127.5 - 1.0).astype(np.float32)


def test_face_detector_matches_the_interpreter_on_random_and_image_inputs():
    path = _mediapipe(FACE_DETECTOR)
    model = frontends.load(path).model
    assert [(t.name, t.shape) for t in model.graph.inputs] == [("input", [1, 128, 128, 3])]
    assert [(t.name, t.shape) for t in model.graph.outputs] == [
        ("regressors", [1, 896, 16]),
        ("classificators", [1, 896, 1]),
    ]
    counts = op_counts(model)
    # 74 float16 DEQUANTIZEs folded into float32 weights; one Transpose into NCHW at the input and
    # one back before each of the 4 head RESHAPEs: the NHWC ops between stay in NCHW.
    assert counts == {
        "Conv": 37, "Relu": 17, "Add": 16, "Pad": 11, "Transpose": 5, "Reshape": 4, "MaxPool": 3, "Concat": 2,
    }  # fmt: skip
    rng = np.random.default_rng(0)
    errors = [_compare(path, model, [rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)]) for _ in range(3)]
    errors.append(_compare(path, model, [_synthetic_face()]))
    assert max(errors) <= 1e-5, errors  # measured 2.6e-6 (max abs 9.9e-5)
    scores = run(model, {"input": _synthetic_face()})[1]
    assert 1 / (1 + np.exp(-scores.max())) > 0.5  # the cartoon is found: 0.83, so detection paths are exercised


def test_face_detector_has_no_inverse_transposes_left_for_cleanup_and_compiles(tmp_path):
    """The frontend keeps NCHW chains itself, so cancel-transpose-reshape finds nothing; `edgec
    model.tflite -O2` builds a checked bundle whose model.onnx still matches the interpreter."""
    path = _mediapipe(FACE_DETECTOR)
    out = tmp_path / "fd"
    assert main([str(path), "--target", "x86-64", "--backend", "onnx", "-O2", "-o", str(out), "-q"]) == 0
    built = onnx.load(out / "model.onnx")
    assert sum(n.op_type == "Transpose" for n in built.graph.node) == 5
    image = _synthetic_face()
    for reference, got in zip(interpret(path, [image]), run(built, {"input": image}), strict=True):
        assert linf_rel(reference, got) <= 1e-5


def test_face_detector_relowers_to_tflite():
    path = _mediapipe(FACE_DETECTOR)
    data = lower(tflite.load(path))
    image = _synthetic_face()
    reference, got = interpret(path, [image]), interpret(data, [image])
    assert [r.shape for r in got] == [(1, 896, 16), (1, 896, 1)]
    assert max(linf_rel(r, g) for r, g in zip(reference, got, strict=True)) <= 1e-4  # measured 0


@pytest.mark.parametrize(
    "relative,limit",
    [
        ("modules/palm_detection/palm_detection_lite.tflite", 1e-5),  # PRELU, RESIZE_BILINEAR: 1.4e-6
        ("modules/hand_landmark/hand_landmark_lite.tflite", 2e-5),  # FC, MEAN, LOGISTIC, RELU6: 5.1e-6
        ("modules/iris_landmark/iris_landmark.tflite", 1e-5),  # float32 weights, PRELU: 6.8e-7
        ("modules/holistic_landmark/hand_recrop.tflite", 1e-5),  # STRIDED_SLICE: 6.6e-8
        ("modules/face_detection/face_detection_full_range_sparse.tflite", 1e-5),  # DENSIFY: 6.4e-7
        ("modules/pose_detection/pose_detection.tflite", 1e-5),  # DENSIFY, DEPTH_TO_SPACE: 1.9e-6
    ],
)
def test_other_mediapipe_models_match_the_interpreter(relative, limit):
    path = _mediapipe(relative)
    model = tflite.load(path)
    rng = np.random.default_rng(0)
    feeds = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in model.graph.inputs]
    assert _compare(path, model, feeds) <= limit


# --- single operators against the interpreter ------------------------------------------------------


def _conv(net, x, out_channels, kernel, **options):
    channels = net.builder.subgraph.tensors[x].shape[3]
    w, b = net.random((out_channels, *kernel, channels)), net.random(out_channels)
    return net.op("CONV_2D", [x, w, b], "Conv2DOptions", **options)


def _nchw_chain(net):
    """Ops after a convolution run on its NCHW view; each output comes back to NHWC."""
    x, scale = net.input([1, 6, 7, 3]), net.input([1, 1, 1, 4])
    c = _conv(net, x, 4, (3, 3), padding=SAME, strideH=1, strideW=1)
    added = net.op("ADD", [c, net.random(4)], "AddOptions", fusedActivationFunction=ACT.RELU)
    scaled = net.op("MUL", [added, scale], "MulOptions")
    prelu = net.op("PRELU", [scaled, net.random((1, 1, 4))])
    padded = net.op("PAD", [prelu, net.const([[0, 0], [1, 0], [0, 2], [0, 1]], np.int32)])
    other = net.op("PAD", [c, net.const([[0, 0], [1, 0], [0, 2], [0, 1]], np.int32)])
    joined = net.op("CONCATENATION", [padded, other], "ConcatenationOptions", axis=-1)
    over_h = net.op("MEAN", [joined, net.const([1], np.int32)], "ReducerOptions", keepDims=False)
    over_hw = net.op("MEAN", [joined, net.const([1, 2], np.int32)], "ReducerOptions", keepDims=False)
    soft = net.op("SOFTMAX", [joined], "SoftmaxOptions", beta=0.5)
    perm = net.op("TRANSPOSE", [joined, net.const([0, 3, 1, 2], np.int32)])
    flat = net.op("RESHAPE", [joined, net.const([1, -1], np.int32)])
    return [over_h, over_hw, soft, perm, flat]


def _strided_slice(net):
    x = net.input([2, 6, 7, 4])
    begin, end = net.const([1, 1, -1, 0], np.int32), net.const([2, 5, 0, 3], np.int32)
    fields = {"beginMask": 0, "endMask": 0b1000, "shrinkAxisMask": 0b0001}
    return [
        net.op("STRIDED_SLICE", [x, begin, end, net.const([1, 2, -2, 1], np.int32)], "StridedSliceOptions", **fields)
    ]


def _resize(builtin, options, size, **fields):
    def build(net):
        x = net.input([1, 5, 7, 2])
        return [net.op(builtin, [x, net.const(size, np.int32)], options, **fields)]

    return build


def _unary(builtin, options=None, low=-3.0, **fields):
    def build(net):
        return [net.op(builtin, [net.input([1, 3, 4, 5], low=low, high=3.0)], options, **fields)]

    return build


def _binary(builtin, options, second_shape, **fields):
    def build(net):
        x = net.input([1, 4, 5, 3])
        y = net.input(second_shape, low=0.5, high=2.0) if len(second_shape) == 4 else net.random(second_shape)
        return [net.op(builtin, [x, y], options, **fields)]

    return build


FLOAT_CASES = {
    "conv_same_stride2_relu6": lambda n: [
        _conv(n, n.input([1, 9, 10, 3]), 4, (3, 3), padding=SAME, strideH=2, strideW=2,
              fusedActivationFunction=ACT.RELU6)
    ],
    "conv_asymmetric_same_pad": lambda n: [
        _conv(n, n.input([1, 8, 9, 3]), 5, (2, 4), padding=SAME, strideH=1, strideW=2,
              fusedActivationFunction=ACT.RELU_N1_TO_1)
    ],
    "conv_dilated_valid": lambda n: [
        n.op("CONV_2D", [n.input([1, 10, 10, 3]), n.random((5, 3, 3, 3)), n.random(5)], "Conv2DOptions",
             padding=VALID, strideH=1, strideW=1, dilationHFactor=2, dilationWFactor=2)
    ],
    "depthwise_multiplier_2_relu_n1_to_1": lambda n: [
        n.op("DEPTHWISE_CONV_2D", [n.input([1, 7, 7, 3]), n.random((1, 3, 3, 6)), n.random(6)],
             "DepthwiseConv2DOptions", padding=SAME, strideH=2, strideW=2, depthMultiplier=2,
             fusedActivationFunction=ACT.RELU_N1_TO_1)
    ],
    "fully_connected_relu": lambda n: [
        n.op("FULLY_CONNECTED", [n.input([2, 6]), n.random((4, 6)), n.random(4)], "FullyConnectedOptions",
             fusedActivationFunction=ACT.RELU)
    ],
    "fully_connected_keep_num_dims": lambda n: [
        n.op("FULLY_CONNECTED", [n.input([1, 3, 6]), n.random((4, 6)), n.random(4)], "FullyConnectedOptions",
             keepNumDims=True)
    ],
    "fully_connected_flattens_4d": lambda n: [
        n.op("FULLY_CONNECTED", [n.input([1, 2, 2, 3]), n.random((5, 12)), -1], "FullyConnectedOptions")
    ],
    "max_pool_valid": lambda n: [
        n.op("MAX_POOL_2D", [n.input([1, 5, 7, 3])], "Pool2DOptions", padding=VALID, strideH=2, strideW=2,
             filterHeight=2, filterWidth=2)
    ],
    "average_pool_same": lambda n: [
        n.op("AVERAGE_POOL_2D", [n.input([1, 7, 8, 2])], "Pool2DOptions", padding=SAME, strideH=2, strideW=2,
             filterHeight=3, filterWidth=3, fusedActivationFunction=ACT.RELU)
    ],
    "add_broadcast_const_relu": _binary("ADD", "AddOptions", (3,), fusedActivationFunction=ACT.RELU),
    "sub_broadcast_input": _binary("SUB", "SubOptions", [1, 1, 5, 3]),
    "mul_scalar": _binary("MUL", "MulOptions", ()),
    "div_broadcast_input": _binary("DIV", "DivOptions", [1, 4, 1, 1]),
    "maximum": _binary("MAXIMUM", None, [1, 4, 5, 3]),
    "minimum": _binary("MINIMUM", None, [1, 1, 1, 3]),
    "squared_difference": _binary("SQUARED_DIFFERENCE", None, [1, 4, 5, 3]),
    "relu": _unary("RELU"),
    "relu6": _unary("RELU6", low=-3.0),
    "relu_n1_to_1": _unary("RELU_N1_TO_1"),
    "relu_0_to_1": _unary("RELU_0_TO_1"),
    "logistic": _unary("LOGISTIC"),
    "tanh": _unary("TANH"),
    "hard_swish": _unary("HARD_SWISH", low=-5.0),
    "leaky_relu": _unary("LEAKY_RELU", "LeakyReluOptions", alpha=0.2),
    "elu": _unary("ELU"),
    "exp": _unary("EXP"),
    "log": _unary("LOG", low=0.1),
    "abs": _unary("ABS"),
    "neg": _unary("NEG"),
    "sqrt": _unary("SQRT", low=0.1),
    "rsqrt": _unary("RSQRT", low=0.1),
    "softmax_2d": lambda n: [n.op("SOFTMAX", [n.input([2, 7])], "SoftmaxOptions", beta=1.0)],
    "mean_keep": lambda n: [n.op("MEAN", [n.input([1, 4, 5, 3]), n.const([1, 2], np.int32)], "ReducerOptions",
                                 keepDims=True)],
    "sum_last_axis": lambda n: [n.op("SUM", [n.input([2, 4, 3]), n.const([-1], np.int32)], "ReducerOptions")],
    "reduce_max": lambda n: [n.op("REDUCE_MAX", [n.input([1, 4, 5, 3]), n.const([0, 2], np.int32)],
                                  "ReducerOptions", keepDims=True)],
    "reduce_min": lambda n: [n.op("REDUCE_MIN", [n.input([3, 5]), n.const([0], np.int32)], "ReducerOptions")],
    "padv2_fill": lambda n: [n.op("PADV2", [n.input([1, 3, 4, 2]), n.const([[0, 0], [1, 2], [0, 1], [0, 0]],
                                                                            np.int32), n.const(1.5)])],
    "mirror_pad_reflect": lambda n: [n.op("MIRROR_PAD", [n.input([1, 4, 5, 2]), n.const([[0, 0], [2, 1], [1, 3],
                                                                                       [0, 0]], np.int32)],
                                          "MirrorPadOptions", mode=schema.MirrorPadMode.REFLECT)],
    "reshape": lambda n: [n.op("RESHAPE", [n.input([1, 4, 6, 2]), n.const([1, 24, 2], np.int32)])],
    "squeeze": lambda n: [n.op("SQUEEZE", [n.input([1, 1, 5, 3])], "SqueezeOptions", squeezeDims=[0, 1])],
    "expand_dims": lambda n: [n.op("EXPAND_DIMS", [n.input([3, 5]), n.const(1, np.int32)])],
    "concatenation": lambda n: [n.op("CONCATENATION", [n.input([2, 3, 4]), n.input([2, 1, 4])],
                                     "ConcatenationOptions", axis=1)],
    "transpose": lambda n: [n.op("TRANSPOSE", [n.input([1, 3, 4, 5]), n.const([0, 2, 3, 1], np.int32)])],
    "resize_bilinear": _resize("RESIZE_BILINEAR", "ResizeBilinearOptions", [9, 12]),
    "resize_bilinear_half_pixel": _resize("RESIZE_BILINEAR", "ResizeBilinearOptions", [9, 12],
                                          halfPixelCenters=True),
    "resize_bilinear_align_corners": _resize("RESIZE_BILINEAR", "ResizeBilinearOptions", [9, 12],
                                             alignCorners=True),
    "resize_nearest": _resize("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", [11, 4]),
    "resize_nearest_half_pixel": _resize("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", [11, 4],
                                         halfPixelCenters=True),
    "resize_nearest_align_corners": _resize("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", [11, 4],
                                            alignCorners=True),
    "depth_to_space": lambda n: [n.op("DEPTH_TO_SPACE", [n.input([1, 3, 4, 8])], "DepthToSpaceOptions",
                                      blockSize=2)],
    "space_to_depth": lambda n: [n.op("SPACE_TO_DEPTH", [n.input([1, 4, 6, 3])], "SpaceToDepthOptions",
                                      blockSize=2)],
    "slice": lambda n: [n.op("SLICE", [n.input([1, 5, 4, 3]), n.const([0, 1, 0, 1], np.int32),
                                       n.const([1, -1, 2, 2], np.int32)], shape=[1, 4, 2, 2])],
    "strided_slice_masks": _strided_slice,
    "cast_int32": lambda n: [n.op("CAST", [n.input([2, 5], np.int32, low=-9, high=9)], dtype=np.float32)],
    "nchw_chain": _nchw_chain,
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_float_operator_matches_the_interpreter(case):
    net = Net()
    data = net.to_bytes(FLOAT_CASES[case](net))
    model = tflite.from_bytes(data, source=case)
    assert _compare(data, model, net.feeds()) <= 1e-5  # worst measured 7.9e-7 (resize_bilinear_half_pixel)


def test_nchw_chain_needs_one_transpose_per_layout_change():
    net = Net()
    model = tflite.from_bytes(net.to_bytes(_nchw_chain(net)))
    # Into NCHW: the image and the 4-D `scale` input. Back to NHWC: once for MEAN over H (its
    # kept axes would come out in another order) and RESHAPE, once for the 4-D SOFTMAX output.
    # TRANSPOSE to NCHW order is the NCHW view itself.
    assert op_counts(model)["Transpose"] == 2 + 2


def test_densify_of_a_block_sparse_constant_matches_the_interpreter():
    """Weights (4, 6) stored as 1x2 blocks, CSR over the blocks of each row: the frontend folds
    DENSIFY into a dense constant."""
    net = Net(seed=11)
    keep = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], bool)
    dense = net.rng.standard_normal((4, 3, 2)).astype(np.float32) * keep[..., None]
    weights = net.const(dense[keep].ravel())
    tensor = net.builder.subgraph.tensors[weights]
    tensor.shape, tensor.sparsity = [4, 6], _block_csr(keep, block=2)
    x = net.input([2, 6])
    w = net.op("DENSIFY", [weights])
    y = net.op("FULLY_CONNECTED", [x, w, net.random(4)], "FullyConnectedOptions")
    data = net.to_bytes([y])
    model = tflite.from_bytes(data)
    (w_const,) = [t for t in model.graph.nodes[0].inputs if isinstance(t, gs.Constant) and t.shape == [4, 6]]
    np.testing.assert_array_equal(w_const.values, dense.reshape(4, 6))
    assert _compare(data, model, net.feeds()) <= 1e-6


def _block_csr(keep: np.ndarray, block: int) -> schema.SparsityParametersT:
    rows = schema.DimensionMetadataT()
    rows.format, rows.denseSize = schema.DimensionType.DENSE, keep.shape[0]
    blocks = schema.DimensionMetadataT()
    blocks.format = schema.DimensionType.SPARSE_CSR
    blocks.arraySegmentsType = blocks.arrayIndicesType = schema.SparseIndexVector.Int32Vector
    blocks.arraySegments, blocks.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
    blocks.arraySegments.values = [0, *np.cumsum(keep.sum(1)).tolist()]
    blocks.arrayIndices.values = np.nonzero(keep)[1].tolist()
    inner = schema.DimensionMetadataT()
    inner.format, inner.denseSize = schema.DimensionType.DENSE, block
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap, sparsity.dimMetadata = [0, 1, 2], [1], [rows, blocks, inner]
    return sparsity


# --- quantized models ------------------------------------------------------------------------------


def _int8_classifier() -> tuple[Net, bytes]:
    """int8 in, int8 out: per-channel conv and depthwise conv with int32 biases, pooling, a
    residual ADD, MEAN, a per-tensor FULLY_CONNECTED and an int8 SOFTMAX; the ADD is a second output."""
    net = Net(seed=3)
    s_in = 0.02
    x = net.input([1, 8, 8, 3], np.int8, q(s_in, -3), low=-128, high=127)
    w_scale = np.array([0.004, 0.006, 0.005, 0.003, 0.007, 0.004, 0.005, 0.006], np.float32)
    w = net.const(net.rng.integers(-127, 128, (8, 3, 3, 3)), np.int8, q(w_scale, np.zeros(8, np.int64), 0))
    b = net.const(net.rng.integers(-2000, 2000, 8), np.int32, q(s_in * w_scale, np.zeros(8, np.int64), 0))
    c1 = net.op(
        "CONV_2D",
        [x, w, b],
        "Conv2DOptions",
        np.int8,
        q(0.03, -128),
        padding=SAME,
        strideH=1,
        strideW=1,
        fusedActivationFunction=ACT.RELU,
    )
    dw_scale = np.array([0.01, 0.02, 0.015, 0.01, 0.012, 0.02, 0.018, 0.011], np.float32)
    dw = net.const(net.rng.integers(-127, 128, (1, 3, 3, 8)), np.int8, q(dw_scale, np.zeros(8, np.int64), 3))
    db = net.const(net.rng.integers(-500, 500, 8), np.int32, q(0.03 * dw_scale, np.zeros(8, np.int64), 0))
    d1 = net.op(
        "DEPTHWISE_CONV_2D",
        [c1, dw, db],
        "DepthwiseConv2DOptions",
        np.int8,
        q(6 / 255, -128),
        padding=SAME,
        strideH=2,
        strideW=2,
        depthMultiplier=1,
        fusedActivationFunction=ACT.RELU6,
    )
    p1 = net.op(
        "MAX_POOL_2D",
        [c1],
        "Pool2DOptions",
        np.int8,
        q(0.03, -128),
        padding=VALID,
        strideH=2,
        strideW=2,
        filterHeight=2,
        filterWidth=2,
    )
    a1 = net.op("ADD", [d1, p1], "AddOptions", np.int8, q(0.05, -10))
    m1 = net.op("MEAN", [a1, net.const([1, 2], np.int32)], "ReducerOptions", np.int8, q(0.03, -20))
    fw = net.const(net.rng.integers(-127, 128, (4, 8)), np.int8, q(0.01))
    fb = net.const(net.rng.integers(-300, 300, 4), np.int32, q(0.03 * 0.01))
    f1 = net.op("FULLY_CONNECTED", [m1, fw, fb], "FullyConnectedOptions", np.int8, q(0.05, 5))
    out = net.op("SOFTMAX", [f1], "SoftmaxOptions", np.int8, q(1 / 256, -128), beta=1.0)
    return net, net.to_bytes([out, a1])


def _constant_dequantizes(model):
    return [n for n in model.graph.nodes if n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant)]


def _within_one_lsb(reference: np.ndarray, got: np.ndarray) -> int:
    assert reference.dtype == got.dtype and reference.shape == got.shape
    return int(np.max(np.abs(reference.astype(np.int32) - got.astype(np.int32))))


def test_int8_model_keeps_int8_io_and_matches_within_one_lsb():
    net, data = _int8_classifier()
    model = tflite.from_bytes(data)
    assert [np.dtype(t.dtype) for t in model.graph.inputs + model.graph.outputs] == [np.int8] * 3
    assert model.graph.inputs[0].outputs[0].op == "DequantizeLinear"
    assert [t.inputs[0].op for t in model.graph.outputs] == ["QuantizeLinear", "QuantizeLinear"]
    weights = {tuple(n.inputs[0].shape): n for n in _constant_dequantizes(model)}
    assert sorted(weights) == [(4,), (4, 8), (8,), (8, 1, 3, 3), (8, 3, 3, 3)]
    assert weights[(8, 3, 3, 3)].attrs["axis"] == 0  # OHWI axis 0 -> OIHW axis 0
    assert weights[(8, 1, 3, 3)].attrs["axis"] == 0  # 1HWC axis 3 -> C1HW axis 0
    assert "axis" not in weights[(4, 8)].attrs  # per-tensor FULLY_CONNECTED weights
    dtypes = sorted(str(n.inputs[0].values.dtype) for n in _constant_dequantizes(model))
    assert dtypes == ["int32"] * 3 + ["int8"] * 3  # three int32 biases (scale s_in * s_w)
    worst = 0
    for seed in range(4):
        feeds = net.feeds(seed)
        reference = interpret(data, feeds)
        got = run(model, {model.graph.inputs[0].name: feeds[0]})
        worst = max(worst, *(_within_one_lsb(r, g) for r, g in zip(reference, got, strict=True)))
    assert worst <= 1  # measured 0: float math between Q/DQ rounds like LiteRT's integer kernels here


def test_int8_model_with_float_io_and_weight_only_dequantize():
    """QUANTIZE -> int8 conv -> HARD_SWISH -> DEQUANTIZE, beside a float conv whose weights are an
    int8 constant behind a DEQUANTIZE (per-channel on the depthwise axis 3)."""
    net = Net(seed=5)
    x = net.input([1, 6, 6, 4], low=-1.5, high=1.5)
    xq = net.op("QUANTIZE", [x], None, np.int8, q(0.012, 2))
    w = net.const(net.rng.integers(-127, 128, (6, 1, 1, 4)), np.int8, q(np.full(6, 0.008), np.zeros(6, np.int64)))
    b = net.const(net.rng.integers(-300, 300, 6), np.int32, q(np.full(6, 0.012 * 0.008), np.zeros(6, np.int64)))
    conv = net.op("CONV_2D", [xq, w, b], "Conv2DOptions", np.int8, q(0.04, 0), padding=VALID, strideH=1, strideW=1)
    hs = net.op("HARD_SWISH", [conv], None, np.int8, q(0.03, -100))
    y1 = net.op("DEQUANTIZE", [hs])
    dw_scale = np.linspace(0.01, 0.02, 4).astype(np.float32)
    wq = net.const(net.rng.integers(-127, 128, (1, 3, 3, 4)), np.int8, q(dw_scale, np.zeros(4, np.int64), 3))
    wf = net.op("DEQUANTIZE", [wq])
    y2 = net.op(
        "DEPTHWISE_CONV_2D",
        [x, wf, net.random(4)],
        "DepthwiseConv2DOptions",
        padding=SAME,
        strideH=1,
        strideW=1,
        depthMultiplier=1,
    )
    data = net.to_bytes([y1, y2])
    model = tflite.from_bytes(data)
    dq_axes = [n.attrs.get("axis") for n in _constant_dequantizes(model) if len(n.inputs[0].shape) == 4]
    assert dq_axes == [0, 0]  # conv OHWI axis 0 -> OIHW 0; depthwise 1HWC axis 3 -> C1HW 0
    feeds = net.feeds()
    reference, got = interpret(data, feeds), run(model, {"input0": feeds[0]})
    hs_scale = 0.03
    assert np.max(np.abs(reference[0] - got[0])) <= hs_scale * 1.001  # one int8 step; measured 0
    assert linf_rel(reference[1], got[1]) <= 1e-5  # measured 1.3e-7


def test_uint8_model_matches_within_one_lsb():
    net = Net(seed=7)
    x = net.input([1, 5, 5, 2], np.uint8, q(0.02, 128), low=0, high=255)
    w = net.const(net.rng.integers(0, 256, (3, 3, 3, 2)), np.uint8, q(0.01, 120))
    b = net.const(net.rng.integers(-400, 400, 3), np.int32, q(0.02 * 0.01))
    conv = net.op(
        "CONV_2D",
        [x, w, b],
        "Conv2DOptions",
        np.uint8,
        q(0.05, 100),
        padding=SAME,
        strideH=1,
        strideW=1,
        fusedActivationFunction=ACT.RELU6,
    )
    pooled = net.op(
        "AVERAGE_POOL_2D",
        [conv],
        "Pool2DOptions",
        np.uint8,
        q(0.05, 100),
        padding=VALID,
        strideH=1,
        strideW=1,
        filterHeight=2,
        filterWidth=2,
    )
    data = net.to_bytes([pooled])
    model = tflite.from_bytes(data)
    feeds = net.feeds()
    (reference,), (got,) = interpret(data, feeds), run(model, {"input0": feeds[0]})
    assert _within_one_lsb(reference, got) <= 1  # measured 1 on 6% of the outputs (AVERAGE_POOL rounding)


# --- errors and dispatch ---------------------------------------------------------------------------


def test_unsupported_operators_are_listed_with_counts():
    net = Net()
    x = net.input([2, 5])
    a = net.op("ARG_MAX", [x, net.const(1, np.int32)], "ArgMaxOptions", np.int64, outputType=schema.TensorType.INT64)
    b = net.op("ARG_MAX", [x, net.const(0, np.int32)], "ArgMaxOptions", np.int64, outputType=schema.TensorType.INT64)
    c = net.op("GATHER", [x, a], "GatherOptions", axis=1)
    with pytest.raises(ModelLoadError) as error:
        tflite.from_bytes(net.to_bytes([b, c]), source="two.tflite")
    assert str(error.value) == "two.tflite: TFLite operators with no ONNX conversion: ARG_MAX x2, GATHER x1"


def test_unknown_custom_operator_is_named():
    net = Net()
    x = net.input([1, 4, 4, 2])
    out = net.builder.tensor("custom_out", [1, 4, 4, 2], np.float32)
    op = schema.OperatorT()
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = b"MyFancyOp", 1
    net.builder.model.operatorCodes.append(code)
    op.opcodeIndex, op.inputs, op.outputs = len(net.builder.model.operatorCodes) - 1, [x], [out]
    net.builder.subgraph.operators.append(op)
    net.builder.set_io(net.inputs, [out])
    with pytest.raises(ModelLoadError, match=r"no ONNX conversion: CUSTOM:MyFancyOp x1$"):
        tflite.from_bytes(net.builder.to_bytes())


def test_selfie_segmentation_custom_transpose_conv_matches_the_interpreter():
    """MediaPipe's CUSTOM Convolution2DTransposeBias (XNNPACK runs it in LiteRT) as ConvTranspose,
    on a photo of a person (scikit-image's astronaut) so the mask is not all background."""
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data", reason="pip install scikit-image")
    path = _mediapipe("modules/selfie_segmentation/selfie_segmentation.tflite")
    model = tflite.load(path)
    assert op_counts(model)["ConvTranspose"] == 1
    image = Image.fromarray(skimage_data.astronaut()).resize((256, 256))
    feed = (np.asarray(image, np.float32) / 255.0)[None]
    (reference,) = interpret(path, [feed])
    (got,) = run(model, {model.graph.inputs[0].name: feed})
    assert 0.2 < float((reference > 0.5).mean()) < 0.8  # a person is found: 55% of the pixels
    assert np.max(np.abs(reference - got)) <= 2e-4  # mask probabilities; measured 5.9e-5


def test_fused_tanh_is_refused_because_litert_ignores_it():
    net = Net()
    x = net.input([1, 4, 4, 2])
    y = net.op("ADD", [x, net.random(2)], "AddOptions", fusedActivationFunction=ACT.TANH)
    with pytest.raises(ModelLoadError, match="'add.*' has fused activation TANH, which LiteRT's kernels ignore"):
        tflite.from_bytes(net.to_bytes([y]))


def _small_model() -> bytes:
    net = Net()
    x = net.input([1, 4, 4, 2])
    return net.to_bytes([_conv(net, x, 3, (3, 3), padding=SAME, strideH=1, strideW=1)])


@pytest.mark.parametrize("cut", [12, 100, 300])
def test_truncated_file_is_one_line_and_exit_code_2(tmp_path, capsys, cut):
    path = tmp_path / "cut.tflite"
    path.write_bytes(_small_model()[:cut])
    with pytest.raises(ModelLoadError, match=r"cut.tflite: not a readable TFLite model \(truncated or corrupt"):
        frontends.load(path)
    assert main([str(path), "-t", "x86-64", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgec: error: ") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()


def test_file_without_the_tflite_identifier_is_refused(tmp_path):
    path = tmp_path / "noise.tflite"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="not a TFLite model \\(no TFL3 file identifier\\)"):
        frontends.load(path)


def test_tflite_content_is_recognized_under_any_suffix(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_small_model())
    model = frontends.load(path).model
    assert op_counts(model) == {"Transpose": 2, "Conv": 1}
    # --input-shape may only restate fixed dimensions (it sets a streaming model's -1 ones).
    assert frontends.load_path(path, input_shapes={"input0": [1, 4, 4, 2]}).graph.inputs[0].shape == [1, 4, 4, 2]
    with pytest.raises(ModelLoadError, match="only -1 dimensions can be set"):
        frontends.load_path(path, input_shapes={"input0": [1, 8, 8, 2]})
