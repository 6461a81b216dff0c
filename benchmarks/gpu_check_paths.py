"""``gpu_check.py``'s sections beyond one model's training steps, each through the suite's own
code path: packed training (:mod:`repro.packed_trainer`), the out-of-memory retry of
:func:`repro.trainer.train` under ``trainer.grad_accum=auto``, and greedy decoding
(:func:`repro.evaluate.predict`). Each takes the running ``Check`` (gpu_check.py)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from gpu_check_measure import (
    EOS,
    LAUNCH_S_PER_LAYER,
    MFU_FLOOR,
    PAD,
    build_backbone,
    peak_bytes,
    plan_steps,
    predicted_seconds,
    release,
    reset_peak,
    sync,
)

from repro.cli import first_line
from repro.estimate import forward_flops, shape_of
from repro.evaluate import predict
from repro.job.task import build_model, place
from repro.optim import build_prompt_optimizer
from repro.packed_trainer import Member, PackedT5, _forward_backward, _more_micro_batches
from repro.precision import Precision
from repro.tracking import NullSink
from repro.trainer import OutOfMemoryError, _micro_batches, forward_backward, train

PACK_SIZES = (1, 4, 16)
PACK_STEPS = {False: (1, 3), True: (1, 2)}  # (warm-up, timed) on a GPU / with --tiny
OOM_STEPS = 2
OOM_CAP_SHARE = 0.4  # the cap: what the model holds + this share of what one full step adds


# --- packing: k prompts, one pass ------------------------------------------------------------


def packing(check) -> list[tuple[dict, object]]:
    """(record, run) of Small and Base at pack sizes 1, 4, 16: every member its own prompt,
    batch and Adafactor, stepped as :func:`repro.packed_trainer.train_pack` steps them."""
    out = []
    for size in ("small", "base"):
        cfg = check.config(size)
        records = [
            {
                "size": size,
                "pack_size": k,
                "batch_size": cfg.trainer.batch_size,
                "grad_accum": None,
                "seconds_per_step": None,
                "examples_per_s_per_member": None,
                "speedup_vs_solo": None,
                "status": check.NOT_REACHED,
            }
            for k in PACK_SIZES
        ]
        shared: dict = {}  # one backbone per size, dropped after its last pack size
        for record in records:
            last = record is records[-1]
            out.append(
                (
                    record,
                    lambda r, c=cfg, s=shared, o=records[0], last=last: measure_pack(
                        check, r, c, s, o, last
                    ),
                )
            )
    return out


def measure_pack(check, record: dict, cfg, shared: dict, solo: dict, last: bool) -> None:
    try:
        _measure_pack(check, record, cfg, shared, solo)
    finally:
        if last:
            shared.clear()


def _measure_pack(check, record: dict, cfg, shared: dict, solo: dict) -> None:
    k = record["pack_size"]
    warmup, timed = PACK_STEPS[check.tiny]
    steps = warmup + timed
    if not check.fits(pack_seconds(check, cfg, k)[2]):
        record["status"] = "skipped: time budget"
        return
    if "backbone" not in shared:  # one backbone per size, as a pack shares it
        shared["backbone"] = build_backbone(cfg, check.device)
    backbone = shared["backbone"]
    members, data = [], []
    for i in range(k):
        model = build_model(dataclasses.replace(cfg, seed=i), backbone, None, None)
        device = place(cfg, model, backbone)
        m = Member(cfg.trainer, model, Path(f"member{i}"), i, NullSink(), {})
        m.optimizer = build_prompt_optimizer(
            model.trainable_parameters(), **asdict(cfg.trainer.optimizer)
        )
        m.accum = cfg.trainer.grad_accum
        members.append(m)
        data.append(check.batches(cfg, steps, seed=1 + i))
    packed = PackedT5(backbone, [m.model.prompt for m in members], z_loss=cfg.trainer.z_loss)
    compute = Precision(check.precision_of(cfg), device)
    packed.train()
    times = []
    for j in range(steps):
        sync(device)
        start, losses, retried = time.perf_counter(), None, False
        while losses is None:  # train_pack's step: out of memory → more micro-batches
            for m in members:
                m.optimizer.zero_grad(set_to_none=True)
            micro = {
                i: _micro_batches(d.steps[j], d.ids, d.labels, members[i].accum, PAD)
                for i, d in enumerate(data)
            }
            try:
                losses = _forward_backward(packed, members, micro, PAD, device, compute)
            except OutOfMemoryError:
                rows = sum(len(chunks[0]["input_ids"]) for chunks in micro.values())
            if losses is None:  # out of the except block: the failed try's tensors are freed
                del micro
                _more_micro_batches(members, list(range(k)), rows)
                retried = True
        for m in members:
            if m.error is not None:
                raise m.error
            m.optimizer.step()
        sync(device)
        if j >= warmup and not retried:
            times.append(time.perf_counter() - start)
    s = sum(times) / len(times)
    record.update(
        grad_accum=members[0].accum,
        seconds_per_step=s,
        examples_per_s_per_member=record["batch_size"] / s,
    )
    if solo["seconds_per_step"]:  # k solo steps' time over one packed step's
        record["speedup_vs_solo"] = k * solo["seconds_per_step"] / s
    check.done(record)


# --- out of memory under a cap, through repro.trainer.train ----------------------------------


def oom(check) -> list[tuple[dict, object]]:
    cfg = check.config("base", f"trainer.steps={OOM_STEPS}", f"trainer.eval_every={OOM_STEPS}")
    record = {
        "size": "base",
        "memory_fraction": None,
        "grad_accum_start": cfg.trainer.grad_accum,
        "grad_accum_end": None,
        "oom_caught": False,
        "step_completed": False,
        "status": check.NOT_REACHED,
    }
    return [(record, lambda r: run_oom(check, r, cfg))]


def run_oom(check, record: dict, cfg) -> None:
    """On a GPU: learn what one step needs, cap the process's memory well below it
    (``torch.cuda.set_per_process_memory_fraction``) and train 2 steps with ``train``: the
    first runs out of memory for real and is redone in more micro-batches. On a CPU the
    out-of-memory error is injected (as tests/test_trainer.py does) and the retry is real."""
    if not cfg.trainer.grad_accum_auto:
        raise RuntimeError("trainer.grad_accum is not auto in the composed config")
    one = check.batches(cfg, 1)  # one batch, seen at every step: each step pads alike
    if not check.fits(oom_seconds(check, cfg)[2]):
        record["status"] = "skipped: time budget"
        return
    backbone = build_backbone(cfg, check.device)
    model = build_model(cfg, backbone, None, None)
    device = place(cfg, model, backbone)
    precision = check.precision_of(cfg)
    start = cfg.trainer.grad_accum
    forward = model.forward
    limit = cfg.trainer.batch_size // 4
    if check.cuda:  # what one step at the start count adds to the model, then a cap below it
        static = torch.cuda.memory_allocated(device)
        reset_peak(device)
        micro = _micro_batches(one.steps[0], one.ids, one.labels, start, PAD)
        forward_backward(model, micro, device, Precision(precision, device), 0)
        need = peak_bytes(device) - static
        del micro
        model.zero_grad(set_to_none=True)
        release(device)
        total = torch.cuda.get_device_properties(device).total_memory
        record["memory_fraction"] = (static + OOM_CAP_SHARE * need) / total
        torch.cuda.set_per_process_memory_fraction(record["memory_fraction"], device)
    else:

        def limited(input_ids, *args, **kwargs):
            if len(input_ids) > limit:
                raise OutOfMemoryError("CUDA out of memory (simulated by gpu_check)")
            return forward(input_ids, *args, **kwargs)

        model.forward = limited
    retries = Retries()
    logging.getLogger("repro.trainer").addHandler(retries)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = train(
                model, one.ids, one.labels,
                evaluate_fn=lambda: {"accuracy": 0.0}, score_fn=lambda m: m["accuracy"],
                cfg=cfg.trainer, out_dir=Path(tmp), seed=cfg.seed, pad_id=PAD, sink=NullSink(),
                sidecar={"backbone": "random"}, device=device, precision=precision,
            )  # fmt: skip
        record["step_completed"] = state.step == OOM_STEPS
        record["grad_accum_end"] = state.grad_accum or start  # where the retries settled
    except OutOfMemoryError as err:  # every count ran out: the run's own error
        record["status"] = f"measured: no micro-batch count fit ({first_line(err)})"[:300]
    finally:
        logging.getLogger("repro.trainer").removeHandler(retries)
        model.forward = forward
        if check.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    record["oom_caught"] = bool(retries.counts)
    if record["grad_accum_end"] is None:  # every count ran out
        record["grad_accum_end"] = retries.counts[-1] if retries.counts else start
    if record["status"] == check.NOT_REACHED:
        check.done(
            record,
            f"simulated (no CUDA device): micro-batches over {limit} example(s) raised an "
            "injected OutOfMemoryError; the trainer's retry ran for real",
        )


class Retries(logging.Handler):
    """The grad_accum of every out-of-memory retry :func:`repro.trainer.train` logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "out of memory" in str(record.msg) and record.args:
            self.counts.append(int(record.args[-1]))


# --- greedy decoding --------------------------------------------------------------------------


def decoding(check) -> list[tuple[dict, object]]:
    cfg = check.config("base")
    record = {
        "size": "base",
        "examples": 32 if check.tiny else len(check.lengths),  # BoolQ's dev set
        "batch_size": cfg.trainer.eval_batch_size,
        "max_new_tokens": check.target,
        "seconds": None,
        "examples_per_s": None,
        "status": check.NOT_REACHED,
    }
    return [(record, lambda r: run_decoding(check, r, cfg))]


def run_decoding(check, record: dict, cfg) -> None:
    """The dev set's inputs (random ids at BoolQ's lengths) decoded greedily, as a run's
    evaluation does: :func:`repro.evaluate.predict` inside the run's precision."""
    if not check.fits(decoding_seconds(check, cfg, record["examples"])[2]):
        record["status"] = "skipped: time budget"
        return
    vocab = shape_of(cfg.model).vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = [
        [*torch.randint(3, vocab, (n - 1,), generator=gen).tolist(), EOS]
        for n in check.lengths[: record["examples"]]
    ]
    backbone = build_backbone(cfg, check.device)
    model = build_model(cfg, backbone, None, None)
    device = place(cfg, model, backbone)
    kwargs = {"mode": "generate", "batch_size": record["batch_size"], "device": device}
    kwargs["max_new_tokens"] = record["max_new_tokens"]
    with Precision(check.precision_of(cfg), device):
        predict(model, IdsTokenizer(), ids[: 2 * record["batch_size"]], **kwargs)  # warm-up
        sync(device)
        start = time.perf_counter()
        predict(model, IdsTokenizer(), ids, **kwargs)
        sync(device)
    record["seconds"] = time.perf_counter() - start
    record["examples_per_s"] = record["examples"] / record["seconds"]
    check.done(record)


class IdsTokenizer:
    """What :func:`repro.evaluate.predict` asks of a tokenizer in generate mode (pad and eos
    ids, ``decode``), without a vocabulary (none offline): ids → their numbers as text. The
    strings are never scored; SentencePiece's decode costs microseconds per example."""

    pad_token_id, eos_token_id = PAD, EOS

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(map(str, ids))


# --- what each measurement may take (the budget check, and gpu_check.py --plan) --------------


def pack_seconds(check, cfg, k: int) -> tuple[int, int, float]:
    """(FLOPs per packed step, steps, worst-case seconds) of a pack of ``k`` members."""
    warmup, timed = PACK_STEPS[check.tiny]
    steps = warmup + timed
    one = plan_steps(
        check.batches(cfg, steps), warmup, 1, shape_of(cfg.model), cfg.prompt_len, False
    )
    flops = k * one.flops_per_step
    return flops, steps, predicted_seconds(cfg, flops, steps, check.peak(check.precision_of(cfg)))


def oom_seconds(check, cfg) -> tuple[int, int, float]:
    """The probe step, then each step's failed and retried tries, all priced as full steps."""
    one = plan_steps(check.batches(cfg, 1), 0, 1, shape_of(cfg.model), cfg.prompt_len, False)
    steps = 1 + 2 * OOM_STEPS
    peak = check.peak(check.precision_of(cfg))
    return one.flops_per_step, steps, predicted_seconds(cfg, one.flops_per_step, steps, peak)


def decoding_seconds(check, cfg, examples: int) -> tuple[int, int, float]:
    """(forward FLOPs per batch, batches, worst-case seconds) of decoding ``examples`` dev
    inputs (and the 2 warm-up batches): the encoder over prompt + input, the decoder over
    ``max_new_tokens``, at MFU ``MFU_FLOOR``, plus a launch floor per layer and decoder step."""
    s = shape_of(cfg.model)
    size = cfg.trainer.eval_batch_size
    batches = -(-examples // size) + 2
    flops = sum(
        forward_flops(s, cfg.prompt_len + n, check.target) for n in check.lengths[:examples]
    )
    flops = flops * batches // (batches - 2)
    peak = check.peak(check.precision_of(cfg))
    if not peak:
        return flops // batches, batches, 0.0
    layers = s.num_layers + s.num_decoder_layers * (1 + check.target)
    seconds = predicted_seconds(cfg, 0, 0, peak) + flops / (peak * 1e12 * MFU_FLOOR)
    return flops // batches, batches, seconds + batches * layers * LAUNCH_S_PER_LAYER


def plan_rows(check) -> list[tuple[str, str, int, int, float]]:
    """gpu_check.py --plan's rows of the packing, oom and decoding sections."""
    rows = []
    for size in ("small", "base"):
        cfg = check.config(size)
        for k in PACK_SIZES:
            rows.append(("packing", f"{size} pack of {k}", *pack_seconds(check, cfg, k)))
    cfg = check.config("base")
    rows.append(("oom", "base, 2 steps under a memory cap", *oom_seconds(check, cfg)))
    n = 32 if check.tiny else len(check.lengths)
    rows.append(("decoding", f"base, {n} dev inputs, greedy", *decoding_seconds(check, cfg, n)))
    return rows
