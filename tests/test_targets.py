import re
from importlib import resources

import pytest

from edgec import targets
from edgec.errors import EdgecError

REQUIRED = [
    "jetson-nano",
    "jetson-orin-nano",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "coral-edgetpu",
    "intel-ncs2",
    "x86-64",
    "android-arm64",
    "esp32-s3",
    "arduino-nano-33-ble",
]


def test_every_required_device_has_a_complete_profile():
    found = targets.load_builtin()
    assert set(REQUIRED) <= set(found)
    for name in REQUIRED:
        t = found[name]
        assert t.ram_bytes > 0 and t.memory_bandwidth_gbps > 0 and t.compute and t.backends
        assert t.quant_scheme in targets.QUANT_SCHEMES
        assert set(t.precisions) <= set(t.backends), name
        assert all(v > 0 for unit in t.compute for v in unit.peak_gops.values())


def test_profile_numbers_match_their_specs():
    t = targets.load_builtin()
    assert t["jetson-nano"].ram_bytes == 4 * 2**30 and t["jetson-nano"].memory_bandwidth_gbps == 25.6
    assert "int8" not in t["jetson-nano"].precisions["tensorrt"]  # Maxwell: no fast int8
    assert t["arduino-nano-33-ble"].ram_bytes == 256 * 1024 and t["arduino-nano-33-ble"].flash_bytes == 2**20
    assert t["arduino-nano-33-ble"].weights_in_flash
    assert t["esp32-s3"].external_ram_bytes == 8 * 2**20
    assert t["coral-edgetpu"].best_unit("int8").unit == "tpu" and t["coral-edgetpu"].best_unit("fp32").unit == "cpu"
    assert t["intel-ncs2"].flash_bytes is None
    assert any("2023.0" in note and "2022.3" in note for note in t["intel-ncs2"].notes)


def test_every_number_in_the_profiles_cites_a_source():
    """Each target's table opens with a comment naming a data sheet, product brief or derivation."""
    text = resources.files("edgec.targets").joinpath("profiles.toml").read_text()
    for name in REQUIRED:
        section = text.split(f"[{name}]")[1].split("\n[")[0]
        comments = " ".join(line for line in section.splitlines() if line.strip().startswith("#"))
        assert re.search(r"data ?sheet|product brief|JEDEC|derived|spec", comments, re.IGNORECASE), name


def test_host_profile_is_refined_from_this_machine():
    host = targets.load_builtin()["x86-64"]
    flags = targets._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    import os

    assert host.cpu.cores == os.cpu_count()
    assert ("+avx2" in host.cpu.features) == ("avx2" in flags)
    assert host.compute[0].peak_gops["int8"] >= 2 * host.compute[0].peak_gops["fp32"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"ram": "lots"}, "is not like '4 GiB'"),
        ({"bogus": 1}, "unknown field"),
        ({"quant_scheme": "magic"}, "quant_scheme must be one of"),
        ({"precisions": {"onnx": ["fp8"]}}, "unknown precision"),
    ],
)
def test_malformed_profiles_are_rejected_with_the_field(change, message):
    base = {
        "description": "d",
        "cpu": {"triple": "t", "model": "m", "cores": 1, "freq_ghz": 1.0},
        "ram": "1 MiB",
        "memory_bandwidth_gbps": 1.0,
        "compute": [{"unit": "cpu", "name": "c", "peak_gops": {"fp32": 1}}],
        "backends": ["onnx"],
        "precisions": {"onnx": ["fp32"]},
        "quant_scheme": "onnx",
    }
    with pytest.raises(EdgecError, match=message):
        targets.from_dict("custom", {**base, **change})
