"""Each cleanup pass alone, on every reference model and real pretrained model, keeps outputs within 1e-5."""

import pytest

from edgec import ir
from edgec.models import registry
from edgec.registry import BUILTIN_PASSES, Registry
from tests.helpers import apply, feeds_for, linf_rel, run

CLEANUP_PASSES = sorted(name for name, ref in BUILTIN_PASSES.items() if ".cleanup." in ref)

MODELS = list(registry.ZOO)


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request):
    entry = registry.get(request.param)
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    path = entry.path()
    if not path.is_file():
        pytest.skip(f"{path} not trained yet")
    model = ir.load(path)
    samples = entry.samples(2) if entry.samples else []
    return model, samples or [feeds_for(model, seed) for seed in (1, 2)]


@pytest.mark.parametrize("name", CLEANUP_PASSES)
def test_pass_on_model(zoo_model, name):
    original, samples = zoo_model
    model = original.copy()
    apply(model, Registry(entry_points=False).pass_class(name)())
    for feeds in samples:
        for ref, got in zip(run(original, feeds), run(model, feeds), strict=True):
            assert linf_rel(ref, got) <= 1e-5
