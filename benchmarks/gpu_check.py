"""Every GPU question of the suite, answered in one bounded run on one lent GPU, offline.

    python benchmarks/gpu_check.py                    # on a GPU: T5.1.1 shapes, < 8 min on an H100
    python benchmarks/gpu_check.py --budget-s 300     # a shorter window: later sections skipped
    python benchmarks/gpu_check.py --only sizes,xxl   # some sections only
    python benchmarks/gpu_check.py --plan             # the per-section time bound; runs nothing
    python benchmarks/gpu_check.py --tiny             # tiny shapes (automatic without CUDA)

Random-weight T5.1.1 models of conf/model/<size>.yaml's shapes are built on the GPU in their
dtype; each measurement is a job's config (conf/config.yaml composed with its overrides and
loaded as a job loads it), trained through the suite's own code: :class:`repro.model.PromptedT5`
(``repro.job.task.build_model`` / ``place``), :func:`repro.trainer.forward_backward` in the
run's :class:`repro.precision.Precision`, the paper's Adafactor, the packed launcher's
:mod:`repro.packed_trainer`, :func:`repro.trainer.train`'s out-of-memory retry, and
:func:`repro.evaluate.predict`. Sections (benchmarks/README.md says what each reports):
sizes, precision, decoding, packing, oom, xxl — in that order, each measurement skipped
("skipped: time budget") once its worst-case time no longer fits ``--budget-s``, one failing
("error: …") without losing the others. Both files are rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import gpu_check_paths as paths  # noqa: E402
import torch  # noqa: E402
from gpu_check_lengths import summary  # noqa: E402
from gpu_check_measure import (  # noqa: E402
    MFU_FLOOR,
    TINY_SHAPE,
    TINY_VOCAB,
    Batches,
    build_backbone,
    compose_config,
    device_info,
    draw_batches,
    load_lengths,
    memory_estimate,
    parameter_count,
    plan_steps,
    predicted_seconds,
    release,
    train_steps,
)
from gpu_check_report import device_slug, write_report  # noqa: E402

from repro.cli import first_line  # noqa: E402
from repro.estimate import count_params, shape_of  # noqa: E402
from repro.gpus import GPUS, priced_precision  # noqa: E402
from repro.job.task import build_model, place, versions  # noqa: E402
from repro.optim import build_prompt_optimizer  # noqa: E402
from repro.precision import Precision, resolve_precision  # noqa: E402
from repro.trainer import resolve_device  # noqa: E402

SECTIONS = ("sizes", "precision", "decoding", "packing", "oom", "xxl")
SIZES = ("small", "base", "large", "xl")
PRECISIONS = ("fp32", "tf32", "bf16")
PROMPT_LEN = 100
XXL = ("model.dtype=bfloat16", "model.gradient_checkpointing=true")
# The training-step measurements of each section: (size, overrides beyond the defaults)
STEP_MEASUREMENTS = {
    "sizes": [(size, ()) for size in SIZES],
    "precision": [("base", (f"trainer.precision={p}",)) for p in PRECISIONS],
    "xxl": [("xxl", XXL)],
}
# (warm-up, timed) steps per measurement: on a GPU, then with --tiny
STEPS = {"sizes": ((3, 10), (1, 2)), "precision": ((3, 10), (1, 2)), "xxl": ((1, 2), (1, 2))}
STARTUP_S = 30.0  # imports, CUDA context, first compose: what --plan adds to the sections


class Check:
    """One run: the device, the budget, the result as it fills, and the files it rewrites."""

    NOT_REACHED = "not reached: the run stopped before this measurement"
    NO_CUDA = "not measured: no CUDA device"
    MEASURED_TINY = "measured at --tiny shapes on the GPU (not a T5.1.1 figure)"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.monotonic()
        self.device = resolve_device("auto")
        self.cuda = self.device.type == "cuda"
        # --plan prices the T5.1.1 shapes on --gpu even where there is no CUDA device
        self.tiny = args.tiny or not (self.cuda or args.plan)
        self.info = device_info(self.device)
        if args.threads or not self.cuda:  # one CPU thread: steady on a shared machine
            torch.set_num_threads(args.threads or 1)
        self.batch = 4 if self.tiny else 32
        self.frozen = load_lengths(self.tiny)
        self.lengths = self.frozen["lengths"]
        self.target = self.frozen["target_tokens"]
        name = self.info["gpu"] if self.cuda else (args.gpu if args.plan else None)
        self.gpu = GPUS.get(name) if name else None
        if self.gpu is not None:
            self.memory_gb = self.gpu.memory_gb
        elif self.cuda:  # a GPU the table lacks: its own memory, no peak (no MFU)
            self.memory_gb = self.info["memory_bytes"] / 1e9
        else:
            self.memory_gb = None
        slug = device_slug(self.info["name"]) + ("-tiny" if self.tiny and self.cuda else "")
        self.out_dir = Path(args.out) / slug
        self.result = self.skeleton()

    # -- configs and budget ------------------------------------------------------------------
    def overrides(self, size: str, *extra: str) -> list[str]:
        o = [f"model={size}", "task=boolq", "method=prompt", "init=sampled_vocab"]
        o += [f"prompt_len={PROMPT_LEN}", f"trainer.batch_size={self.batch}"]
        o += ["trainer.progress=false", "logger=none"]
        if self.gpu is not None:  # the cost model's GPU: this one
            o.append(f"cost.gpu={self.gpu.name}")
        if self.memory_gb:  # grad_accum=auto as a job on this GPU resolves it
            o.append(f"cost.gpu_memory_gb={self.memory_gb:g}")
        if self.tiny:
            o += [f"model.{k}={v}" for k, v in TINY_SHAPE.items()]
            o += [f"model.vocab_size={TINY_VOCAB}", "model.params=null"]
        return [*o, *extra]

    def config(self, size: str, *extra: str):
        return compose_config(tuple(self.overrides(size, *extra)))

    def precision_of(self, cfg) -> str:
        """The precision ``cfg`` computes in here (--plan without CUDA: on the priced GPU)."""
        if self.cuda or not self.args.plan:
            return resolve_precision(cfg.trainer.precision, self.device)
        return priced_precision(cfg.trainer.precision)

    def peak(self, precision: str) -> float | None:
        """The GPU's dense peak TFLOP/s (repro.gpus); None on a CPU or a GPU the table lacks."""
        priced = self.cuda or self.args.plan
        return self.gpu.peak_tflops(precision) if self.gpu and priced else None

    def time_left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def fits(self, seconds: float) -> bool:
        """Is there time left for a measurement of this worst-case length?"""
        return self.time_left() > seconds

    def batches(self, cfg, steps: int, seed: int = 0) -> Batches:
        vocab = shape_of(cfg.model).vocab_size
        return draw_batches(self.lengths, cfg.trainer.batch_size, steps, vocab, self.target, seed)

    def done(self, record: dict, cpu_status: str | None = None) -> None:
        """A measurement finished: "measured" on a GPU (what repro.calibration prices from; at
        --tiny shapes it is not one); on a CPU, it says no GPU was."""
        if self.cuda:
            record["status"] = self.MEASURED_TINY if self.tiny else "measured"
            self.result["gpu_measured"] = True
        else:
            record["status"] = cpu_status or f"{self.NO_CUDA} (CPU timings at tiny shapes)"

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.start, 1)
        write_report(self.result, self.out_dir)

    def guarded(self, record: dict, run) -> None:
        """``run(record)`` fills ``record``; an exception becomes its status, and the next
        measurement goes on."""
        try:
            run(record)
        except Exception as err:
            record["status"] = f"error: {type(err).__name__}: {first_line(err)}"[:300]
        finally:
            release(self.device)
            self.save()

    # -- the result before anything runs -----------------------------------------------------
    def skeleton(self) -> dict:
        i = self.info
        L = summary(self.lengths)
        return {
            "schema": 1,
            "device": i,
            "gpu_measured": False,
            "versions": self.versions(),
            "budget_s": self.args.budget_s,
            "elapsed_s": 0.0,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "shapes": "tiny" if self.tiny else "t5.1.1",
            "lengths": {"source": f"{self.frozen['source']}; {self.frozen['tokens']}", **L},
            "steps": [],
            "precision_ratios": {
                "size": "base",
                **dict.fromkeys(("fp32_s", "tf32_s", "bf16_s", "fp32_over_bf16", "tf32_over_bf16")),
                "status": self.NOT_REACHED,
            },
            "packing": [],
            "oom": {},
            "decoding": {},
        }

    def versions(self) -> dict:
        v = versions()
        v["cuda"] = torch.version.cuda
        v["torch_threads"] = torch.get_num_threads()
        try:
            v["repro"] = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            v["repro"] = "unknown"
        return v

    # -- training steps: sizes, xxl, precision -----------------------------------------------
    def step_record(self, section: str, size: str, extra: tuple[str, ...]):
        """A ``steps`` entry of a measurement, from its config and batches alone (the FLOPs and
        memory estimate of what it computes), with its config, batches and warm-up count."""
        cfg = self.config(size, *extra)
        warmup, timed = STEPS[section][self.tiny]
        batches = self.batches(cfg, warmup + timed)
        shape, accum, ckpt = (
            shape_of(cfg.model),
            cfg.trainer.grad_accum,
            cfg.model.gradient_checkpointing,
        )
        plan = plan_steps(batches, warmup, accum, shape, cfg.prompt_len, ckpt)
        precision = self.precision_of(cfg)
        record = {
            "section": section,
            "size": size,
            "params": count_params(shape),
            "d_model": shape.d_model,
            "precision": precision,
            "model_dtype": cfg.model.dtype,
            "gradient_checkpointing": ckpt,
            "prompt_len": cfg.prompt_len,
            "batch_size": cfg.trainer.batch_size,
            "grad_accum": accum,
            "input_tokens_mean": round(plan.input_tokens_mean, 2),
            "target_tokens": plan.target_tokens,
            "seconds_per_step": None,
            "examples_per_s": None,
            "flops_per_step": plan.flops_per_step,
            "achieved_tflops": None,
            "peak_tflops": self.peak(precision),
            "mfu": None,
            "peak_memory_bytes": None,
            "estimated_memory_bytes": memory_estimate(
                cfg, plan.longest_input, plan.target_tokens, accum
            ),
            "memory_ratio": None,
            "status": self.NOT_REACHED,
        }
        return record, cfg, batches, warmup

    def bound(self, record: dict, cfg, batches: Batches) -> float:
        return predicted_seconds(
            cfg, record["flops_per_step"], len(batches.steps), record["peak_tflops"]
        )

    def measure_steps(self, record: dict, cfg, batches: Batches, warmup: int, shared: dict) -> None:
        """Train ``cfg``'s prompt on ``batches`` (warm-up, then timed) and fill ``record``;
        ``shared`` keeps the backbone for the next measurement of the same model."""
        if not self.fits(self.bound(record, cfg, batches)):
            record["status"] = "skipped: time budget"
            return
        if "backbone" not in shared:
            shared["backbone"] = build_backbone(cfg, self.device)
        backbone = shared["backbone"]
        record["params"] = parameter_count(backbone)
        model = build_model(cfg, backbone, None, None)
        device = place(cfg, model, backbone)
        compute = Precision(self.precision_of(cfg), device)
        optimizer = build_prompt_optimizer(
            model.trainable_parameters(), **asdict(cfg.trainer.optimizer)
        )
        model.train()
        timed = train_steps(model, optimizer, batches, cfg, device, compute, warmup)
        s, plan = timed.seconds_per_step, timed.planned
        record.update(
            grad_accum=timed.grad_accum,
            input_tokens_mean=round(plan.input_tokens_mean, 2),
            flops_per_step=plan.flops_per_step,
            seconds_per_step=s,
            examples_per_s=record["batch_size"] / s,
            achieved_tflops=plan.flops_per_step / s / 1e12,
            estimated_memory_bytes=memory_estimate(
                cfg, plan.longest_input, plan.target_tokens, timed.grad_accum
            ),
        )
        if self.cuda:
            record["peak_memory_bytes"] = timed.peak_memory_bytes
            record["memory_ratio"] = timed.peak_memory_bytes / record["estimated_memory_bytes"]
            if record["peak_tflops"]:
                record["mfu"] = record["achieved_tflops"] / record["peak_tflops"]
        self.done(record)

    def step_measurements(self, section: str) -> list[tuple[dict, object]]:
        """(record, run) of each measurement of a section; consecutive ones of the same model
        config share its backbone (the precision section's three), dropped after the last."""
        shared: dict = {}
        plans = [
            self.step_record(section, size, extra) for size, extra in STEP_MEASUREMENTS[section]
        ]

        def run(record, cfg, batches, warmup, last):
            try:
                if shared.get("model") != cfg.model:
                    shared.clear()
                    release(self.device)
                    shared["model"] = cfg.model
                self.measure_steps(record, cfg, batches, warmup, shared)
            finally:
                if last:
                    shared.clear()

        final = len(plans) - 1
        return [
            (p[0], lambda r, p=p, last=i == final: run(r, *p[1:], last))
            for i, p in enumerate(plans)
        ]

    def precision_ratios(self, records: list[dict]) -> None:
        """Step-time ratios of the precision section's three measurements (PRECISIONS' order)."""
        s = {p: r["seconds_per_step"] for p, r in zip(PRECISIONS, records, strict=True)}
        ratios = self.result["precision_ratios"]
        ratios.update({f"{p}_s": s[p] for p in PRECISIONS})
        if all(s.values()):
            ratios["fp32_over_bf16"] = s["fp32"] / s["bf16"]
            ratios["tf32_over_bf16"] = s["tf32"] / s["bf16"]
        statuses = sorted({r["status"] for r in records})
        if len(statuses) == 1 and statuses[0] in ("measured", self.MEASURED_TINY):
            ratios["status"] = statuses[0]
        elif not self.cuda and all(x.startswith(self.NO_CUDA) for x in statuses):
            ratios["status"] = f"{self.NO_CUDA} (CPU timings at tiny shapes; tf32 is fp32 on a CPU)"
        else:
            ratios["status"] = "incomplete: " + "; ".join(statuses)

    # -- the run -----------------------------------------------------------------------------
    def run(self, sections) -> dict:
        """Every record first (each "not reached"; the sections not asked for "skipped"), so
        that the files are complete whenever the run stops; then the measurements in order."""
        planned = {name: self.step_measurements(name) for name in ("sizes", "xxl", "precision")}
        planned |= {
            "decoding": paths.decoding(self),
            "packing": paths.packing(self),
            "oom": paths.oom(self),
        }
        for name in ("sizes", "xxl", "precision"):
            self.result["steps"] += [record for record, _ in planned[name]]
        self.result["packing"] = [record for record, _ in planned["packing"]]
        self.result["oom"] = planned["oom"][0][0]
        self.result["decoding"] = planned["decoding"][0][0]
        for name, measurements in planned.items():
            if name not in sections:
                for record, _ in measurements:
                    record["status"] = "skipped: not in --only"
        self.save()
        for name in SECTIONS:
            if name in sections:
                for record, measure in planned[name]:
                    self.guarded(record, measure)
            if name == "precision":
                self.precision_ratios([record for record, _ in planned[name]])
        self.save()
        return self.result

    def plan(self) -> list[tuple[str, str, int, int, float]]:
        """(section, measurement, FLOPs per step, steps, worst-case seconds) of every
        measurement, as the run's budget check prices them (gpu_check_measure.predicted_seconds)."""
        rows = []
        for section in ("sizes", "precision", "xxl"):
            for size, extra in STEP_MEASUREMENTS[section]:
                r, cfg, batches, _ = self.step_record(section, size, extra)
                what = f"{size} {r['precision']} {r['model_dtype']} accum {r['grad_accum']}"
                what += " ckpt" if r["gradient_checkpointing"] else ""
                rows.append(
                    (
                        section,
                        what,
                        r["flops_per_step"],
                        len(batches.steps),
                        self.bound(r, cfg, batches),
                    )
                )
        return rows + paths.plan_rows(self)


def print_plan(check: Check) -> None:
    gpu = check.gpu.name if check.gpu else "no GPU table entry"
    print(f"worst-case time per measurement on {gpu} (MFU {MFU_FLOOR}, launch floor, build):")
    total = {}
    for section, what, flops, steps, seconds in check.plan():
        print(
            f"  {section:9} {what:40} {flops / 1e12:9.2f} TFLOP/step × {steps:2} steps  {seconds:7.1f} s"
        )
        total[section] = total.get(section, 0.0) + seconds
    for section, seconds in total.items():
        print(f"  {section:9} total {seconds:7.1f} s")
    print(f"  all sections + {STARTUP_S:.0f} s start-up: {sum(total.values()) + STARTUP_S:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=420.0, help="global deadline (s)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gpu", help="results root")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (automatic without CUDA)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default without CUDA: 1)")
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}"
    )
    p.add_argument(
        "--plan", action="store_true", help="print each measurement's time bound; run nothing"
    )
    p.add_argument(
        "--gpu", default="H100", choices=sorted(GPUS), help="--plan without CUDA: price on"
    )
    args = p.parse_args(argv)
    args.sections = [s for s in args.only.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(
            f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    check = Check(args)
    if args.plan:
        print_plan(check)
        return {}
    result = check.run(args.sections)
    measured = (
        "GPU measured" if result["gpu_measured"] else "NO GPU figure measured (no CUDA device)"
    )
    print(f"{measured}; {result['elapsed_s']:.0f} s; wrote {check.out_dir}/gpu_check.json and .md")
    return result


if __name__ == "__main__":
    main()
