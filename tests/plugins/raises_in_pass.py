"""A plugin whose pass raises while running."""

from edgec.pass_infra import Pass


class ExplodePass(Pass):
    name = "explode"
    summary = "Raises KeyError on purpose."

    def run(self, graph, ctx):
        raise KeyError("weights")
