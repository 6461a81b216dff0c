"""Pricing from a measurement (repro.calibration): a hand-written gpu_check.json, the nearest
measured step chosen per job, hours = FLOPs / achieved FLOP/s, memory = estimate × measured
ratio, and a file that cannot price anything refused in one line naming it."""

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
from repro.calibration import load_calibration
from repro.config import Config
from repro.cost.cli import main
from repro.cost.report import describe
from repro.estimate import estimate
from repro.memory import memory_per_gpu
from repro.resolve import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE, LARGE, XXL = 247_577_856, 783_150_080, 11_135_332_352  # T5.1.1 parameter counts


def compose_config(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def step(size, params, precision, seconds, flops, ratio=0.8, ckpt=False, status="measured"):
    """One ``steps`` entry as benchmarks/gpu_check.py writes it."""
    return {
        "section": "sizes",
        "size": size,
        "params": params,
        "d_model": 768,
        "precision": precision,
        "model_dtype": "float32",
        "gradient_checkpointing": ckpt,
        "prompt_len": 100,
        "batch_size": 32,
        "grad_accum": 1,
        "input_tokens_mean": 512.0,
        "target_tokens": 8,
        "seconds_per_step": seconds,
        "examples_per_s": 32 / seconds if seconds else None,
        "flops_per_step": flops,
        "achieved_tflops": flops / seconds / 1e12 if seconds else None,
        "peak_tflops": 989.4,
        "mfu": None,
        "peak_memory_bytes": None,
        "estimated_memory_bytes": 1,
        "memory_ratio": ratio,
        "status": status,
    }


def write_check(path: Path, steps, gpu_measured=True, device=None, schema=1) -> Path:
    device = device or {
        "name": "NVIDIA H100 80GB HBM3",
        "type": "cuda",
        "gpu": "H100",
        "memory_bytes": 85_000_000_000,
        "bf16": True,
    }
    data = {
        "schema": schema,
        "device": device,
        "gpu_measured": gpu_measured,
        "steps": steps,
        "precision_ratios": {},
        "packing": [],
        "oom": {},
        "decoding": {},
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def base_job():
    """Base on RTE at the defaults (bf16, p = 100, 512 + 8 tokens): the measured shape."""
    return estimate(compose_config("model=base", "task=rte"))


@pytest.fixture
def check(tmp_path, base_job):
    """Base bf16 at exactly the job's FLOPs per step, 0.5 s a step; Base fp32 4 s; XXL bf16
    (checkpointed and not); and entries that must never be used (not measured)."""
    f = base_job.flops_per_step
    return write_check(
        tmp_path / "gpu_check.json",
        [
            step("base", BASE, "bf16", 0.5, f, ratio=0.8),
            step("base", BASE, "fp32", 4.0, f, ratio=1.1),
            step("xxl", XXL, "bf16", 20.0, 40 * f, ratio=1.2),
            step("xxl", XXL, "bf16", 26.0, 60 * f, ratio=0.5, ckpt=True),
            step("large", LARGE, "bf16", None, f, status="skipped: out of time"),
            step("large", LARGE, "bf16", 1e-9, f, status="error: CUDA error"),
        ],
    )


def test_a_job_at_a_measured_shape_takes_steps_times_the_measured_seconds(check, base_job):
    cfg = compose_config("model=base", "task=rte", f"cost.calibration={check}")
    job = estimate(cfg)
    assert job.total_flops == base_job.total_flops
    assert job.gpu_hours == pytest.approx(30_000 * 0.5 / 3600)
    # memory: the estimate × the measured ratio, both printed
    assert job.memory_bytes == base_job.memory_bytes
    assert memory_per_gpu(job) == round(0.8 * base_job.memory_bytes)
    line = describe(job)
    achieved = base_job.flops_per_step / 0.5 / 1e12
    assert line.endswith(
        f"{job.gpu_hours:.2f} GPU-h calibrated on base bf16 ({check}, H100): "
        f"{achieved:.0f} TFLOP/s achieved"
    )
    assert "measured ≈ " in line and "(× 0.8, base bf16)" in line


def test_the_nearest_measured_step_same_precision_and_checkpointing_then_size(check, base_job):
    f = base_job.flops_per_step

    def priced(*overrides):
        job = estimate(compose_config("task=rte", f"cost.calibration={check}", *overrides))
        return job.rate.step, job

    # Large (783M) is nearer Base (248M) than XXL (11.1B) in log distance
    assert math.log(LARGE / BASE) < math.log(XXL / LARGE)
    chosen, job = priced("model=large")
    assert (chosen.size, chosen.precision, chosen.gradient_checkpointing) == ("base", "bf16", False)
    assert job.gpu_hours == pytest.approx(job.total_flops / (f / 0.5) / 3600)
    # forced to fp32: the fp32 step, though XXL-sized jobs are nearer XXL
    chosen, job = priced("model=xxl", "trainer.precision=fp32")
    assert (chosen.size, chosen.precision) == ("base", "fp32")
    assert job.gpu_hours == pytest.approx(job.total_flops / (f / 4.0) / 3600)
    # checkpointing: the checkpointed XXL step, its ratio applied to the memory
    chosen, job = priced("model=xxl", "model.gradient_checkpointing=true")
    assert (chosen.size, chosen.gradient_checkpointing) == ("xxl", True)
    assert job.gpu_hours == pytest.approx(job.total_flops / (60 * f / 26.0) / 3600)
    assert memory_per_gpu(job) == round(0.5 * job.memory_bytes)
    chosen, _ = priced("model=xxl")
    assert (chosen.size, chosen.gradient_checkpointing) == ("xxl", False)


def test_a_precision_never_measured_is_priced_at_a_measured_mfu_of_its_own_peak(check, base_job):
    job = estimate(
        compose_config(
            "model=base", "task=rte", "trainer.precision=tf32", f"cost.calibration={check}"
        )
    )
    # H100: tf32 494.7, bf16 989.4 TFLOP/s dense; the bf16 step's MFU at the tf32 peak
    rate = base_job.flops_per_step / 0.5 * 494.7 / 989.4
    assert job.gpu_hours == pytest.approx(job.total_flops / rate / 3600)
    assert f"scaled to the tf32 peak: {rate / 1e12:.0f} TFLOP/s (none at tf32)" in describe(job)


def test_the_cli_flag_prices_every_line_on_the_measured_gpu(check, capsys):
    assert main(["-m", "--calibration", str(check), "model=base,xxl", "task=rte"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"(H100: 80 GB; bf16 calibrated ({check}); --jobs: one line per job)")
    jobs = [
        estimate(compose_config(f"model={m}", "task=rte", f"cost.calibration={check}"))
        for m in ("base", "xxl")
    ]
    hours = sum(j.gpu_hours for j in jobs)  # the jobs' exact sum, rounded once
    assert out[-1].startswith(f"total: {hours:.2f} GPU-h = {hours:.2f} for the 2 job(s) |")
    # --jobs: each line says what it was priced on
    assert main(["-m", "--jobs", "--calibration", str(check), "model=base,xxl", "task=rte"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("dry run")]
    assert "calibrated on base bf16 (" in lines[0] and "calibrated on xxl bf16 (" in lines[1]
    # the memory limit is the measured GPU's, unless the command names another
    assert main(["--calibration", str(check), "model=xxl", "task=rte", "cost.gpu=A100-40GB"]) == 0
    assert "more than the 40 GB of one GPU (A100-40GB;" in capsys.readouterr().out


def test_packed_and_unpacked_under_a_calibration_start_from_the_same_total(check, capsys):
    args = ["-m", "--packed", "--calibration", str(check), "model=base", "task=rte"]
    assert main([*args, "prompt_len=1,100"]) == 0
    out = capsys.readouterr().out.splitlines()
    (total,) = [x for x in out if x.startswith("total:")]
    (packed,) = [x for x in out if x.startswith("  model=base:")]
    hours = total.split(" GPU-h")[0].rsplit(" ", 1)[1]
    assert f"unpacked 2 process(es), {hours} GPU-h" in packed


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (
            lambda p: write_check(
                p, [step("base", BASE, "fp32", None, 1, status="skipped: cpu")], gpu_measured=False
            ),
            "no step was measured on a GPU",
        ),
        (
            lambda p: write_check(p, [step("base", BASE, "bf16", 0.5, 10)], schema=2),
            "not a benchmarks/gpu_check.py result of schema 1 (schema 2)",
        ),
        (lambda p: p.write_text("{not json"), "not a readable JSON file"),
        (lambda p: None, "cannot read it (No such file or directory)"),
        (
            lambda p: write_check(p, [step("base", BASE, "bf16", 0.0, 10)]),
            "steps[0] (base bf16) needs params, seconds_per_step and flops_per_step > 0",
        ),
    ],
)
def test_a_file_that_cannot_price_is_one_line_naming_it(tmp_path, capsys, write, why):
    path = tmp_path / "gpu_check.json"
    write(path)
    assert main(["--calibration", str(path), "model=small", "task=rte"]) == 2
    assert main(["model=small", "task=rte", f"cost.calibration={path}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == err[1]
    assert err[0].startswith(f"error: cost.calibration={str(path)!r}: ") and why in err[0]


def test_a_file_is_read_once_per_version(check):
    first = load_calibration(str(check))
    assert load_calibration(str(check)) is first
    data = json.loads(check.read_text())
    data["steps"] = data["steps"][:1]
    check.write_text(json.dumps(data) + " ")  # another size: read again
    assert len(load_calibration(str(check)).steps) == 1
