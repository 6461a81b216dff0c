"""CPU runs give the same bits on every x86-64 CPU with AVX2 (repro.numerics, issue 30 item 3):
importing repro pins ATen's, MKL's and oneDNN's kernels before torch computes anything, keeps
what the user set, and a run records what it computed with."""

import json
import os
import subprocess
import sys

import pytest
from test_bad_input import assert_one_error, cli, smoke

from repro.numerics import (
    CPU_NUMERICS_ENV,
    PINNED,
    cpu_numerics_mode,
    has_avx2,
    pin_cpu_numerics,
)

AVX2_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_avx2_pins_all_three_kernel_choices_and_keeps_what_the_user_set():
    assert pin_cpu_numerics(env := {}, avx2=True) == PINNED and env == PINNED
    assert PINNED == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2,STRICT",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
    mine = {"MKL_CBWR": "COMPATIBLE"}
    assert "MKL_CBWR" not in pin_cpu_numerics(mine, avx2=True)
    assert mine["MKL_CBWR"] == "COMPATIBLE" and mine["ATEN_CPU_CAPABILITY"] == "avx2"


@pytest.mark.parametrize(
    ("env", "avx2"),
    [({CPU_NUMERICS_ENV: "native"}, True), ({}, False), ({CPU_NUMERICS_ENV: "fastest"}, True)],
    ids=["native", "no-avx2", "bad-mode"],
)
def test_nothing_is_pinned_natively_without_avx2_or_on_a_bad_mode(env, avx2):
    before = dict(env)
    assert pin_cpu_numerics(env, avx2=avx2) == {} and env == before


def test_a_bad_mode_names_itself_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"REPRO_CPU_NUMERICS='fastest': allowed: avx2, native"):
        cpu_numerics_mode({CPU_NUMERICS_ENV: "fastest"})
    assert cpu_numerics_mode({}) == "avx2" and cpu_numerics_mode({CPU_NUMERICS_ENV: "Native"})


def test_avx2_is_read_from_the_cpus_own_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_FLAGS)
    assert has_avx2(info, machine="x86_64")
    assert not has_avx2(info, machine="aarch64")  # ARM, Apple silicon: left native
    info.write_text(AVX2_FLAGS.replace(" avx2", ""))
    assert not has_avx2(info, machine="x86_64")
    assert not has_avx2(tmp_path / "missing", machine="x86_64")


def _fresh(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED and k != CPU_NUMERICS_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow  # 8-27 s in the default run (CI runs it)
def test_importing_repro_pins_torch_before_it_computes():
    """torch reads ATEN_CPU_CAPABILITY at its first op: after `import repro` it is pinned even
    when torch was imported first; a user's value wins (here the scalar kernels, 'DEFAULT')."""
    probe = (
        "import torch, repro, os; torch.ones(3).sum();"
        "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'))"
    )
    # on a CPU without AVX2 (or not x86-64) nothing is pinned: torch's own choice, no MKL_CBWR
    aten, mkl = _fresh(probe).split()
    assert (aten, mkl) == ("AVX2", "AVX2,STRICT") if has_avx2() else mkl == "None"
    assert _fresh(probe, ATEN_CPU_CAPABILITY="default").split()[0] == "DEFAULT"
    assert _fresh(probe, **{CPU_NUMERICS_ENV: "native"}).split()[1] == "None"


def test_a_run_records_the_kernels_it_computed_with(prompt_runs):
    result = json.loads((prompt_runs["kw-s0"] / "result.json").read_text())
    numerics = result["cpu_numerics"]
    assert set(numerics) == {"mode", "pinned", "aten", "mkl_cbwr", "onednn_max_cpu_isa", "threads"}
    assert numerics["threads"] >= 1 and numerics["mode"] in ("avx2", "native")
    assert numerics["pinned"] == (
        numerics["aten"] == "AVX2" and numerics["mkl_cbwr"] == "AVX2,STRICT"
    )


def test_a_bad_mode_is_refused_before_the_run_writes_anything(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    monkeypatch.setenv(CPU_NUMERICS_ENV, "fastest")
    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, tiny_t5_dir))
    assert_one_error(code, err, "REPRO_CPU_NUMERICS='fastest': allowed: avx2, native")
    assert list((tmp_path / "runs").iterdir()) == []
