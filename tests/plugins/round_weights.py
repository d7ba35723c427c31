"""A user's pass in a plain .py file, loaded with --plugin: rounds float weights to N decimals."""

import numpy as np
import onnx_graphsurgeon as gs

from edgec.compare import Tolerance
from edgec.ir import constants
from edgec.pass_infra import Numerics, Pass, PassResult


class RoundWeightsPass(Pass):
    name = "round-weights"
    summary = "Round floating-point weights to a number of decimals (a toy lossy compression)."
    numerics = Numerics.LOSSY
    tolerance = Tolerance(min_cosine=0.999)
    decimals: int = 2

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        changed = 0
        for const in constants(graph).values():
            values = const.values
            if np.issubdtype(values.dtype, np.floating):
                rounded = np.round(values, self.decimals).astype(values.dtype)
                changed += int(np.count_nonzero(rounded != values))
                const.values = rounded
        return PassResult(changed > 0, {"values_changed": changed})
