from importlib import metadata

import pytest

from edgec.errors import PluginError
from edgec.registry import Registry
from edgec.targets import load_builtin


class _EntryPoint:
    def __init__(self, name, value, load):
        self.name, self.value, self._load, self.dist = name, value, load, None

    def load(self):
        return self._load()


def _fake_entry_points(found):
    def entry_points(group):
        return [ep for g, ep in found if g == group]

    return entry_points


def test_a_broken_installed_plugin_warns_and_explains_itself_when_used(monkeypatch):
    def broken():
        raise ImportError("No module named 'vendor_sdk'")

    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points([("edgec.passes", _EntryPoint("vendor-fuse", "vendor_pkg.passes:Fuse", broken))]),
    )
    registry = Registry()  # must not raise
    assert any("vendor_pkg.passes:Fuse" in w and "vendor_sdk" in w for w in registry.warnings)
    assert registry.build_pipeline("fold-constants")  # everything else still works
    with pytest.raises(PluginError, match=r"'vendor-fuse' from entry point .* is unavailable: ImportError"):
        registry.build_pipeline("vendor-fuse")


def test_installed_targets_and_passes_register(monkeypatch):
    base = load_builtin()["raspberry-pi-4"]
    from dataclasses import replace

    board = replace(base, name="my-board", description="a custom board")
    from tests.plugins.round_weights import RoundWeightsPass

    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points(
            [
                ("edgec.targets", _EntryPoint("boards", "pkg:boards", lambda: lambda: [board])),
                ("edgec.passes", _EntryPoint("round-weights", "pkg:Round", lambda: RoundWeightsPass)),
            ]
        ),
    )
    registry = Registry()
    assert registry.target("my-board").description == "a custom board"
    assert registry.build_pipeline("round-weights{decimals=1}")[0].decimals == 1


def test_a_plugin_may_not_silently_replace_a_builtin(tmp_path):
    plugin = tmp_path / "shadow.py"
    plugin.write_text(
        "from edgec.pass_infra import Pass, PassResult\n"
        "class Shadow(Pass):\n"
        "    name = 'fold-constants'\n"
        "    summary = 'pretends to fold'\n"
        "    def run(self, graph, ctx):\n"
        "        return PassResult(False)\n"
    )
    with pytest.raises(PluginError, match="pass 'fold-constants' is already defined by edgec"):
        Registry(entry_points=False).load_plugin(str(plugin))


def test_a_plugin_that_defines_nothing_is_an_error(tmp_path):
    plugin = tmp_path / "empty.py"
    plugin.write_text("X = 1\n")
    with pytest.raises(PluginError, match="defines no Pass or Backend subclass and no Target"):
        Registry(entry_points=False).load_plugin(str(plugin))
