"""An IR graph as a trainable torch module, and back.

Each node runs as the torch op with ONNX semantics. Layer weights, biases and weight-sharing
codebooks become parameters; everything else stays constant. Compression survives training:
a weight's zeros (pruning) are a fixed mask re-applied after every step, a shared weight is
`codebook[indices]` with fixed indices (gradients reach the centroids, as in Deep Compression),
and a codebook's reserved zero entry stays zero. `export()` writes the trained values back into
the graph's constants, keeping their dtypes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch
import torch.nn.functional as F

from edgec.compress import shared
from edgec.compress.layers import WEIGHTED_OPS
from edgec.errors import EdgecError

_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def _trainable_constants(graph: gs.Graph) -> dict[int, str]:
    """id(constant) -> its role: 'weight' (masked), 'bias', or 'codebook'."""
    roles: dict[int, str] = {}
    for node in graph.nodes:
        # A BatchNormalization's scale and shift train; its running statistics do not.
        wanted = {1: "bias", 2: "bias"} if node.op == "BatchNormalization" else {1: "weight", 2: "bias"}
        if node.op in WEIGHTED_OPS or node.op == "BatchNormalization":
            for i, role in wanted.items():
                tensor = node.inputs[i] if i < len(node.inputs) else None
                if isinstance(tensor, gs.Constant) and np.issubdtype(tensor.values.dtype, np.floating):
                    roles.setdefault(id(tensor), role)
    for weight in shared.shared_weights(graph):
        roles[id(weight.codebook)] = "codebook"
    return roles


class GraphModule(torch.nn.Module):
    def __init__(self, graph: gs.Graph, trainable: bool = True):
        super().__init__()
        self.graph = graph
        self.nodes = list(graph.nodes)
        unsupported = sorted({n.op for n in self.nodes if not hasattr(self, f"_op_{n.op}")})
        if unsupported:
            raise EdgecError(f"fine-tuning cannot run {', '.join(unsupported)} nodes yet")
        roles = _trainable_constants(graph) if trainable else {}
        self.params = torch.nn.ParameterList()
        self._slot: dict[int, int] = {}  # id(constant) -> index in params
        self._masks: dict[int, torch.Tensor] = {}  # params index -> 0/1 mask
        self._frozen_zero: set[int] = set()  # codebooks whose entry 0 is the pruned zero
        self._constants: dict[int, torch.Tensor] = {}
        self._owners: list[gs.Constant] = []
        for tensor in graph.tensors().values():
            if not isinstance(tensor, gs.Constant):
                continue
            values = torch.from_numpy(np.array(tensor.values))
            role = roles.get(id(tensor))
            if role is None:
                self._constants[id(tensor)] = values
                continue
            index = len(self.params)
            self._slot[id(tensor)] = index
            self.params.append(torch.nn.Parameter(values.float()))
            self._owners.append(tensor)
            if role == "weight" and (values == 0).any():
                self._masks[index] = (values != 0).float()
            if role == "codebook" and values.numel() and float(values[0]) == 0.0:
                self._frozen_zero.add(index)

    # --- values -------------------------------------------------------------------------------

    def _value(self, tensor: gs.Tensor, env: dict[str, torch.Tensor]):
        if isinstance(tensor, gs.Constant):
            slot = self._slot.get(id(tensor))
            return self.params[slot] if slot is not None else self._constants[id(tensor)]
        if tensor.is_empty():
            return None
        return env[tensor.name]

    def forward(self, feeds: dict[str, torch.Tensor], wanted: list[str] | None = None) -> list[torch.Tensor]:
        env = dict(feeds)
        for node in self.nodes:
            args = [self._value(t, env) for t in node.inputs]
            result = getattr(self, f"_op_{node.op}")(node, *args)
            results = result if isinstance(result, tuple) else (result,)
            for out, value in zip(node.outputs, results):
                env[out.name] = value
        names = wanted or [t.name for t in self.graph.outputs]
        return [env[n] for n in names]

    def constrain(self) -> None:
        """Re-impose the compression after an optimizer step: pruned weights and reserved zero
        centroids back to exactly zero."""
        with torch.no_grad():
            for index, mask in self._masks.items():
                self.params[index].mul_(mask)
            for index in self._frozen_zero:
                self.params[index][0] = 0.0

    def export(self) -> None:
        """Trained values back into the graph's constants."""
        self.constrain()
        for tensor, param in zip(self._owners, self.params):
            values = param.detach().numpy().astype(tensor.values.dtype)
            # Masking multiplies negative weights by 0 and leaves -0.0, whose sign bit a sparse
            # layout would have to store: pruned weights go back as +0.0.
            tensor.values = np.where(values == 0, np.zeros((), values.dtype), values)

    # --- ONNX ops with ONNX semantics ---------------------------------------------------------

    @staticmethod
    def _pads(node: gs.Node, spatial: int, x: torch.Tensor, kernel, strides, dilations):
        mode = node.attrs.get("auto_pad", "NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            pads_begin, pads_end = [], []
            for axis in range(spatial):
                size = x.shape[2 + axis]
                out = -(-size // strides[axis])
                total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - size)
                small, large = total // 2, total - total // 2
                pads_begin.append(small if mode == "SAME_UPPER" else large)
                pads_end.append(large if mode == "SAME_UPPER" else small)
            return pads_begin + pads_end
        if mode == "VALID":
            return [0] * (2 * spatial)
        return list(node.attrs.get("pads", [0] * (2 * spatial)))

    @staticmethod
    def _pad_input(x: torch.Tensor, pads: list[int], spatial: int, value: float = 0.0):
        """Symmetric pads go to the op; asymmetric ones are applied here (torch wants symmetric)."""
        begin, end = pads[:spatial], pads[spatial:]
        if begin == end:
            return x, begin
        torch_pads = []
        for axis in reversed(range(spatial)):
            torch_pads += [begin[axis], end[axis]]
        return F.pad(x, torch_pads, value=value), [0] * spatial

    def _op_Conv(self, node, x, w, b=None):
        spatial = w.dim() - 2
        strides = list(node.attrs.get("strides", [1] * spatial))
        dilations = list(node.attrs.get("dilations", [1] * spatial))
        pads = self._pads(node, spatial, x, list(w.shape[2:]), strides, dilations)
        x, padding = self._pad_input(x, pads, spatial)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
        return conv(x, w, b, strides, padding, dilations, int(node.attrs.get("group", 1)))

    def _op_Gemm(self, node, a, b, c=None):
        a = a.t() if node.attrs.get("transA", 0) else a
        b = b.t() if node.attrs.get("transB", 0) else b
        y = float(node.attrs.get("alpha", 1.0)) * (a @ b)
        return y if c is None else y + float(node.attrs.get("beta", 1.0)) * c

    def _op_MatMul(self, node, a, b):
        return torch.matmul(a, b)

    def _op_BatchNormalization(self, node, x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(node.attrs.get("epsilon", 1e-5)))

    def _pool(self, node, x):
        kernel = list(node.attrs["kernel_shape"])
        spatial = len(kernel)
        strides = list(node.attrs.get("strides", [1] * spatial))
        dilations = list(node.attrs.get("dilations", [1] * spatial))
        pads = self._pads(node, spatial, x, kernel, strides, dilations)
        return kernel, strides, dilations, pads

    def _op_MaxPool(self, node, x):
        kernel, strides, dilations, pads = self._pool(node, x)
        x, padding = self._pad_input(x, pads, len(kernel), value=float("-inf"))
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
        return pool(x, kernel, strides, padding, dilations, bool(node.attrs.get("ceil_mode", 0)))

    def _op_AveragePool(self, node, x):
        kernel, strides, _, pads = self._pool(node, x)
        include = bool(node.attrs.get("count_include_pad", 0))
        if pads[: len(kernel)] != pads[len(kernel) :]:
            raise EdgecError(f"fine-tuning: AveragePool '{node.name}' has asymmetric padding")
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
        return pool(x, kernel, strides, pads[: len(kernel)], bool(node.attrs.get("ceil_mode", 0)), include)

    def _op_GlobalAveragePool(self, node, x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def _op_GlobalMaxPool(self, node, x):
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)

    def _op_Relu(self, node, x):
        return F.relu(x)

    def _op_LeakyRelu(self, node, x):
        return F.leaky_relu(x, float(node.attrs.get("alpha", 0.01)))

    def _op_Clip(self, node, x, low=None, high=None):
        low = low if low is not None else node.attrs.get("min")
        high = high if high is not None else node.attrs.get("max")
        return torch.clamp(x, None if low is None else float(low), None if high is None else float(high))

    def _op_Sigmoid(self, node, x):
        return torch.sigmoid(x)

    def _op_Tanh(self, node, x):
        return torch.tanh(x)

    def _op_HardSigmoid(self, node, x):
        return torch.clamp(float(node.attrs.get("alpha", 0.2)) * x + float(node.attrs.get("beta", 0.5)), 0.0, 1.0)

    def _op_HardSwish(self, node, x):
        return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)

    def _op_Softmax(self, node, x):
        return torch.softmax(x, int(node.attrs.get("axis", -1)))

    def _op_LogSoftmax(self, node, x):
        return torch.log_softmax(x, int(node.attrs.get("axis", -1)))

    def _op_Add(self, node, a, b):
        return a + b

    def _op_Sub(self, node, a, b):
        return a - b

    def _op_Mul(self, node, a, b):
        return a * b

    def _op_Div(self, node, a, b):
        return a / b

    def _op_Identity(self, node, x):
        return x

    def _op_Dropout(self, node, x, *rest):
        return x

    def _op_Flatten(self, node, x):
        axis = int(node.attrs.get("axis", 1)) % max(x.dim(), 1)
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)

    def _op_Reshape(self, node, x, shape):
        target = [int(d) for d in shape]
        if not int(node.attrs.get("allowzero", 0)):
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return x.reshape(target)

    def _op_Transpose(self, node, x):
        return x.permute(*node.attrs.get("perm", list(range(x.dim() - 1, -1, -1))))

    def _op_Concat(self, node, *xs):
        return torch.cat([x for x in xs if x is not None], int(node.attrs["axis"]))

    def _op_Squeeze(self, node, x, axes=None):
        axes = axes if axes is not None else node.attrs.get("axes")
        if axes is None:
            return x.squeeze()
        for axis in sorted((int(a) % x.dim() for a in axes), reverse=True):
            x = x.squeeze(axis)
        return x

    def _op_Unsqueeze(self, node, x, axes=None):
        axes = axes if axes is not None else node.attrs.get("axes")
        rank = x.dim() + len(axes)
        for axis in sorted(int(a) % rank for a in axes):
            x = x.unsqueeze(axis)
        return x

    def _op_Gather(self, node, data, indices):
        axis = int(node.attrs.get("axis", 0)) % data.dim()
        index = torch.as_tensor(indices).long()
        index = torch.where(index < 0, index + data.shape[axis], index)
        return data.index_select(axis, index.reshape(-1)).reshape(
            *data.shape[:axis], *index.shape, *data.shape[axis + 1 :]
        )

    def _op_Constant(self, node):
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant):
            return torch.from_numpy(np.array(value.values))
        for key, dtype in (
            ("value_float", np.float32),
            ("value_floats", np.float32),
            ("value_int", np.int64),
            ("value_ints", np.int64),
        ):
            if key in node.attrs:
                return torch.from_numpy(np.asarray(node.attrs[key], dtype))
        raise EdgecError(f"fine-tuning cannot run Constant node '{node.name}' (attributes {sorted(node.attrs)})")

    def _op_Cast(self, node, x):
        return torch.as_tensor(x).to(_DTYPES[int(node.attrs["to"])])

    def _op_ReduceMean(self, node, x, axes=None):
        axes = axes if axes is not None else node.attrs.get("axes")
        keep = bool(node.attrs.get("keepdims", 1))
        dims = tuple(int(a) for a in axes) if axes is not None else tuple(range(x.dim()))
        return x.mean(dim=dims, keepdim=keep)

    def _op_Pad(self, node, x, pads, value=None, axes=None):
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = [int(p) for p in pads]
        rank = x.dim()
        torch_pads = []
        for axis in reversed(range(rank)):
            torch_pads += [pads[axis], pads[axis + rank]]
        fill = 0.0 if value is None else float(value)
        return F.pad(x, torch_pads, mode=mode, value=fill) if mode == "constant" else F.pad(x, torch_pads, mode=mode)
