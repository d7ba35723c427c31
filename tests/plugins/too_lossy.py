"""A plugin pass that damages the model: its lossy check must catch it."""

import numpy as np

from edgec.compare import Tolerance
from edgec.ir import constants
from edgec.pass_infra import Numerics, Pass, PassResult


class ScrambleWeightsPass(Pass):
    name = "scramble-weights"
    summary = "Replaces weights with noise."
    numerics = Numerics.LOSSY
    tolerance = Tolerance(min_cosine=0.99)

    def run(self, graph, ctx):
        rng = np.random.default_rng(0)
        for const in constants(graph).values():
            if np.issubdtype(const.values.dtype, np.floating) and const.values.size > 10:
                const.values = rng.standard_normal(const.values.shape).astype(const.values.dtype)
        return PassResult(True)
