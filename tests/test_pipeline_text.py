import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec import pipeline_text
from edgec.errors import PipelineError
from edgec.pipeline_text import PassSpec

names = st.from_regex(r"[a-z][a-z0-9]*(-[a-z0-9]+){0,3}", fullmatch=True)
keys = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
scalars = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
values = st.one_of(scalars, st.lists(scalars, max_size=4).map(tuple))


@st.composite
def specs(draw):
    options = draw(st.dictionaries(keys, values, max_size=4))
    return PassSpec(draw(names), tuple(options.items()))


@given(st.lists(specs(), max_size=5))
def test_format_then_parse_is_identity(pipeline):
    assert pipeline_text.parse(pipeline_text.format(pipeline)) == pipeline


@given(st.lists(specs(), max_size=5))
def test_canonical_text_is_a_fixed_point(pipeline):
    text = pipeline_text.format(pipeline)
    assert pipeline_text.format(pipeline_text.parse(text)) == text


def test_parses_options_lists_quotes_and_spaces():
    text = ' fold-constants , quantize{ scheme = tflite, skip=[conv1, "fc 2"], note="a\\"b" },huffman{} '
    assert pipeline_text.parse(text) == [
        PassSpec("fold-constants"),
        PassSpec("quantize", (("scheme", "tflite"), ("skip", ("conv1", "fc 2")), ("note", 'a"b'))),
        PassSpec("huffman"),
    ]
    assert pipeline_text.format(pipeline_text.parse(text)) == (
        'fold-constants,quantize{scheme=tflite,skip=[conv1,"fc 2"],note="a\\"b"},huffman'
    )


def test_empty_text_is_an_empty_pipeline():
    assert pipeline_text.parse("") == [] and pipeline_text.parse("   ") == []


@pytest.mark.parametrize(
    "text,column",
    [
        ("a,,b", 3),
        ("a{", 3),
        ("a{x}", 4),
        ("a{x=}", 5),
        ("a{x=1", 6),
        ("a b", 3),
        ("a{x=1,x=2}", None),
        ('a{x="open}', 5),
        ("a{x=[1,2}", 9),
        (",a", 1),
    ],
)
def test_malformed_text_names_the_column(text, column):
    with pytest.raises(PipelineError) as err:
        pipeline_text.parse(text)
    message = str(err.value)
    assert "malformed pipeline text" in message and "\n" not in message
    if column is not None:
        assert f"column {column}:" in message
