"""The --precision option (resolution, refusal, autocast actually used) and the machine block."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch

import models
from models import machine, precision
from models.errors import BadInputError
from models.precision import add_precision_argument, check_precision, extractor_precision


def test_unknown_precision_is_an_argparse_error(capsys):
    p = argparse.ArgumentParser(prog="x")
    add_precision_argument(p)
    assert p.parse_args([]).precision == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="unknown precision 'int4'"):
        check_precision("int4", "cpu")


def test_fp16_on_the_cpu_is_one_clear_error():
    with pytest.raises(BadInputError, match="fp16 is a GPU precision"):
        check_precision("fp16", "cpu")


def test_bf16_on_a_cpu_without_native_bf16_runs_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger="models.precision"):
        assert check_precision("bf16", "cpu") == "bf16"
        assert check_precision("auto", "cpu") == "fp32"  # auto never picks emulated bf16
    assert [r.getMessage() for r in caplog.records] == [
        "bf16 is emulated on this CPU (no AVX512-BF16/AMX): it runs, several times slower than fp32"
    ]
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    caplog.clear()
    assert check_precision("bf16", "cpu") == "bf16" and check_precision("auto", "cpu") == "bf16"
    assert not caplog.records


def autocast_seen(extractor) -> list[tuple[bool, torch.dtype]]:
    """Run one tiny image and record (autocast on?, its dtype) where the backbone starts (its stem:
    inside ``forward``, or inside ``dense_descriptors`` when the extractor detects first)."""
    seen = []
    hook = extractor.net.stem.register_forward_pre_hook(
        lambda *_: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    try:
        extractor.extract(torch.rand(1, 1, 64, 64), 16)
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize(("requested", "autocast"), [("fp32", False), ("bf16", True)])
def test_the_requested_precision_selects_the_autocast(requested, autocast):
    ext = models.build("traqpoint-lite", weights="random", precision=check_precision(requested, "cpu"))
    assert ext.precision == requested and extractor_precision(ext) == requested
    ((enabled, dtype),) = autocast_seen(ext)
    assert enabled is autocast
    if autocast:
        assert dtype == torch.bfloat16


def test_methods_without_a_precision_ignore_it_and_say_what_ran():
    orb = models.build("orb", precision="bf16")
    assert not hasattr(orb, "precision") and extractor_precision(orb) == "n/a"


def test_machine_info_reads_cpuinfo_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_bf16\n")
    assert machine.cpu_name(info) == "Test CPU 9000"
    assert machine.vector_extensions(info) == ["avx2", "avx512", "avx512_bf16"]
    block = machine.machine_info()
    assert set(block) == {"cpu", "vector_extensions", "cpu_capability", "threads", "gpu", "torch", "isa_caps"}
    assert block["threads"] == torch.get_num_threads() and block["cpu_capability"] != "unknown"
    line = machine.machine_line({**block, "cpu": "Test CPU", "vector_extensions": ["avx2"], "threads": 2},
                                {"traqpoint-lite": "fp32", "orb": "n/a"})  # fmt: skip
    assert line.startswith("machine: Test CPU | avx2 (torch ") and "| 2 threads |" in line
    assert line.endswith("precision traqpoint-lite=fp32 orb=n/a")


def test_machine_line_names_instruction_set_caps(monkeypatch):
    for var in machine.ISA_CAP_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert machine.isa_caps() == {} and "ISA capped" not in machine.machine_line()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OPENCV_CPU_DISABLE", "AVX512-SKX")
    assert machine.machine_info()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "OPENCV_CPU_DISABLE": "AVX512-SKX"}
    assert "| ISA capped: ONEDNN_MAX_CPU_ISA=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX" in machine.machine_line()
