from typing import Literal

import pytest

from edgec import pipeline_text, presets
from edgec.compare import LOSSY_DEFAULT, Tolerance
from edgec.errors import PassError, PipelineError
from edgec.pass_infra import Numerics, Pass, PassResult
from edgec.registry import Registry
from tests.helpers import GraphBuilder, apply


class ExamplePass(Pass):
    name = "example-pass"
    summary = "A pass with one option of each kind."
    numerics = Numerics.LOSSY
    tolerance = Tolerance(min_cosine=0.9)
    ratio: float = 0.5
    bits: int = 8
    enabled: bool = True
    scope: Literal["layer", "global"] = "layer"
    skip: tuple[str, ...] = ()
    label: str | None = None

    def run(self, graph, ctx):
        return PassResult(False)


def test_options_convert_from_pipeline_text():
    spec = pipeline_text.parse('example-pass{ratio=0.8,bits=4,enabled=false,scope=global,skip=[a,b],label="x y"}')[0]
    p = ExamplePass.from_options(spec.option_dict())
    assert (p.ratio, p.bits, p.enabled, p.scope, p.skip, p.label) == (0.8, 4, False, "global", ("a", "b"), "x y")


def test_spec_prints_every_option_and_round_trips():
    p = ExamplePass(bits=4, skip=("conv1",))
    text = str(p.spec(full=True))
    assert text == 'example-pass{ratio=0.5,bits=4,enabled=true,scope=layer,skip=[conv1],label=""}'
    again = ExamplePass.from_options(pipeline_text.parse(text)[0].option_dict())
    assert again == p
    assert str(p.spec(full=False)) == "example-pass{bits=4,skip=[conv1]}"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"nope": "1"}, "has no option 'nope' (options: ratio, bits, enabled, scope, skip, label)"),
        ({"bits": "eight"}, "'eight' is not an integer"),
        ({"ratio": "x"}, "'x' is not a number"),
        ({"enabled": "maybe"}, "'maybe' is not a boolean"),
        ({"scope": "model"}, "'model' is not one of layer, global"),
        ({"bits": ("1", "2")}, "expected a single value"),
    ],
)
def test_bad_options_name_the_pass_and_the_valid_choices(options, message):
    with pytest.raises(PipelineError, match="example-pass") as err:
        ExamplePass.from_options(options)
    assert message in str(err.value)


def test_list_defaults_are_copied_per_instance():
    class WithList(Pass):
        name = "with-list"
        summary = "x"
        skip: list[str] = ["conv1"]

    a, b = WithList(), WithList()
    a.skip.append("fc")
    assert b.skip == ["conv1"]
    assert WithList.from_options({"skip": ("a", "b")}).skip == ["a", "b"]
    assert str(WithList().spec()) == "with-list{skip=[conv1]}"


def test_tolerance_comes_from_the_pass_or_its_numerics():
    assert ExamplePass().check_tolerance() == Tolerance(min_cosine=0.9)

    class Plain(Pass):
        name = "plain-lossy"
        summary = "x"
        numerics = Numerics.LOSSY

    assert Plain().check_tolerance() == LOSSY_DEFAULT


@pytest.mark.parametrize(
    "body,message",
    [
        ("summary = 'x'", "kebab-case `name`"),
        ("name = 'Bad_Name'\n    summary = 'x'", "kebab-case `name`"),
        ("name = 'no-summary'", "one-line `summary`"),
        ("name = 'bad-numerics'\n    summary = 'x'\n    numerics = 'lossy'", "Numerics member"),
        ("name = 'no-default'\n    summary = 'x'\n    bits: int", "needs a default"),
    ],
)
def test_declaration_mistakes_fail_at_class_creation(body, message):
    with pytest.raises(TypeError, match=message):
        exec(f"class P(Pass):\n    {body}\n", {"Pass": Pass, "Numerics": Numerics})


def _model():
    b = GraphBuilder()
    x = b.input("x", [2])
    b.output(b.op("Relu", [x]))
    return b.model()


def test_contract_a_raising_pass_is_named():
    class Boom(Pass):
        name = "boom"
        summary = "raises"

        def run(self, graph, ctx):
            raise ZeroDivisionError("division by zero")

    with pytest.raises(PassError, match=r"pass 'boom' raised ZeroDivisionError: division by zero"):
        apply(_model(), Boom())


def test_contract_result_type_and_valid_graph():
    class NoResult(Pass):
        name = "no-result"
        summary = "returns the wrong thing"

        def run(self, graph, ctx):
            return True

    class Breaks(Pass):
        name = "breaks-graph"
        summary = "leaves a node with an unknown op"

        def run(self, graph, ctx):
            graph.nodes[0].op = "NoSuchOp"
            return PassResult(True)

    with pytest.raises(PassError, match="returned bool, not PassResult"):
        apply(_model(), NoResult())
    with pytest.raises(PassError, match="breaks-graph' left an invalid graph"):
        apply(_model(), Breaks())


def test_presets_expand_and_unknown_names_list_the_valid_ones():
    registry = Registry(entry_points=False)
    for level in ("0", "1", "2", "O2", "-O1", "int8"):
        registry.build_pipeline(presets.expand(level))  # every preset names real passes
    assert presets.expand("int8", scheme="tflite").endswith(",quantize{scheme=tflite}")
    with pytest.raises(PipelineError, match=r"unknown optimization level 'O9' \(levels: -O0, -O1, -O2, -O int8"):
        presets.expand("O9")
    with pytest.raises(PipelineError, match=r"unknown pass 'fold-everything' \(passes: .*fold-constants"):
        registry.build_pipeline("fold-everything")
