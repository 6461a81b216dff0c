"""The loop itself: accumulation is exact, bf16 autocast runs, checkpoints are data only."""

import json
import random

import pytest
import torch

from repro.backbone import load_backbone
from repro.model import PromptedT5
from repro.prompts import SoftPrompt, init_prompt
from repro.tracking import NullSink
from repro.trainer import STATE_FILE, _micro_batches, forward_backward, train
from repro.trainer_config import TrainerConfig


def toy_tokens(n=32, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(3, 300) for _ in range(rng.randint(3, 12))] + [1] for _ in range(n)]
    labels = [[rng.randrange(3, 300), 1] for _ in range(n)]
    return ids, labels


def run_train(tiny_t5_dir, tmp_path, patch=None, auto=False, **trainer_kwargs):
    """``patch(model)`` before training; ``auto``: as if ``trainer.grad_accum=auto`` chose
    ``grad_accum``."""
    backbone = load_backbone(tiny_t5_dir)
    weight = init_prompt("random_uniform", backbone.get_input_embeddings().weight, 4, seed=0)
    model = PromptedT5(backbone, SoftPrompt(weight))
    if patch is not None:
        patch(model)
    ids, labels = toy_tokens()
    cfg = TrainerConfig(
        **{"steps": 3, "batch_size": 16, "eval_every": 3, "progress": False, **trainer_kwargs}
    )
    cfg.grad_accum_auto = auto
    state = train(
        model,
        ids,
        labels,
        evaluate_fn=lambda: {"accuracy": 0.0},
        score_fn=lambda m: m["accuracy"],
        cfg=cfg,
        out_dir=tmp_path,
        seed=0,
        pad_id=0,
        sink=NullSink(),
        sidecar={"backbone": "tiny"},
        device=torch.device("cpu"),
    )
    return model, state


def test_gradient_accumulation_equals_one_big_batch(tiny_t5_dir, tmp_path):
    full, _ = run_train(tiny_t5_dir, tmp_path / "full", grad_accum=1)
    accumulated, _ = run_train(tiny_t5_dir, tmp_path / "accum", grad_accum=4)
    # Updates are ~0.3 per element (Adafactor normalises them), so 1e-5 is float round-off;
    # a wrong micro-batch weighting moves elements by ~1e-2.
    torch.testing.assert_close(full.prompt.weight, accumulated.prompt.weight, rtol=1e-4, atol=1e-5)
    # and both moved away from the initial prompt
    init = init_prompt("random_uniform", torch.zeros(10, 32), 4, seed=0)
    assert not torch.allclose(full.prompt.weight, init)


def out_of_memory_above(examples: int, calls: list, once: int | None = None):
    """A patch: the model's forward runs out of memory on micro-batches of more than
    ``examples`` (as a GPU would), except the first of ``once`` examples (so that a try fails
    after a micro-batch's gradient was accumulated); ``calls`` records every size it was given."""

    def patch(model):
        forward = model.forward

        def limited(input_ids, *args, **kwargs):
            calls.append(len(input_ids))
            if len(input_ids) > examples and calls.count(once) != 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(input_ids, *args, **kwargs)

        model.forward = limited

    return patch


def test_auto_grad_accum_redoes_an_out_of_memory_step_in_more_micro_batches(
    tiny_t5_dir, tmp_path, caplog
):
    calls = []
    with caplog.at_level("WARNING", logger="repro.trainer"):
        patch = out_of_memory_above(4, calls, once=8)
        retried, state = run_train(
            tiny_t5_dir, tmp_path / "auto", patch, auto=True, grad_accum=1, steps=2, eval_every=2
        )
    fixed, _ = run_train(tiny_t5_dir, tmp_path / "fixed", grad_accum=4, steps=2, eval_every=2)
    # step 1 tried 16 examples, then 8 + 8 (the first accumulated, the second out of memory),
    # then went on in micro-batches of 4 for every step
    assert calls == [16, 8, 8] + [4] * 4 * 2
    assert [r.getMessage() for r in caplog.records] == [
        "step 1: out of memory with micro-batches of 16 example(s); retrying with grad_accum 2",
        "step 1: out of memory with micro-batches of 8 example(s); retrying with grad_accum 4",
    ]
    # the same run as one with grad_accum=4 from the start: the failed tries left no trace
    # (no gradient kept, no optimizer step, dropout's generator restored)
    assert state.step == 2
    assert torch.equal(retried.prompt.weight, fixed.prompt.weight)
    saved = [torch.load(d / "last" / STATE_FILE) for d in (tmp_path / "auto", tmp_path / "fixed")]
    assert saved[0]["optimizer"]["state"][0]["step"] == 2  # stepped once per step, not per try
    torch.testing.assert_close(saved[0]["optimizer"]["state"], saved[1]["optimizer"]["state"])
    # last/ keeps where the retries settled: a resume starts there, as the run went on there
    assert state.grad_accum == saved[0]["state"]["grad_accum"] == 4
    resumed_calls = []
    patch = out_of_memory_above(4, resumed_calls)
    run_train(tiny_t5_dir, tmp_path / "auto", patch, auto=True, grad_accum=1, steps=3)
    assert resumed_calls == [4] * 4  # step 3 in four micro-batches of 4, no retry


def test_an_explicit_grad_accum_out_of_memory_is_an_error_naming_auto(tiny_t5_dir, tmp_path):
    with pytest.raises(torch.OutOfMemoryError, match=r"step 1: .*trainer.grad_accum=auto"):
        run_train(tiny_t5_dir, tmp_path, out_of_memory_above(4, []), grad_accum=2)
    # and with auto at one example per micro-batch already: the other switches
    with pytest.raises(torch.OutOfMemoryError, match="model.gradient_checkpointing=true"):
        run_train(tiny_t5_dir, tmp_path / "one", out_of_memory_above(0, []), auto=True)


def test_accumulated_gradient_equals_the_full_batch_gradient(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    weight = init_prompt("random_uniform", backbone.get_input_embeddings().weight, 4, seed=0)
    model = PromptedT5(backbone, SoftPrompt(weight)).eval()
    ids, labels = toy_tokens(n=12)
    labels[0] = labels[0] * 3  # uneven target lengths: equal micro-batch weights would be wrong
    idx = list(range(12))
    grads, losses = [], []
    for accum in (1, 3):
        model.zero_grad()
        micro = _micro_batches(idx, ids, labels, accum, pad_id=0)
        assert len(micro) == accum
        losses.append(
            forward_backward(model, micro, "cpu", torch.autocast("cpu", enabled=False), 1)
        )
        grads.append(model.prompt.weight.grad.clone())
    scale = grads[0].abs().max().item()
    # float32 summation order only: differences far below the gradient's own scale
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4 * scale)
    assert abs(losses[1] - losses[0]) < 1e-5


def train_losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


def test_bf16_autocast_trains_the_fp32_prompt(tiny_t5_dir, tmp_path):
    """bf16 autocast against the fp32 run of the same seed, batches and dropout: the first
    step's loss (same prompt, same batch) agrees within bf16's precision but is not fp32's (the
    autocast is on); the fp32 prompt learns: the loss falls as in fp32 and the prompt moves the
    way the fp32 prompt moves (measured on the tiny model: step-1 loss 3e-4 apart, loss 19.7 →
    14.5 in both, displacements at cosine 0.94)."""
    runs = {}
    for precision in ("fp32", "bf16"):
        kwargs = {"precision": precision, "steps": 10, "eval_every": 10, "log_every": 1}
        model, state = run_train(tiny_t5_dir, tmp_path / precision, **kwargs)
        assert state.step == 10 and model.prompt.weight.dtype == torch.float32
        runs[precision] = (model.prompt.weight.detach(), train_losses(tmp_path / precision))
    (fp32, fp32_losses), (bf16, bf16_losses) = runs["fp32"], runs["bf16"]
    # step 1: bf16 keeps 8 significant bits (relative rounding 2^-9 per operation)
    first = abs(bf16_losses[0] - fp32_losses[0]) / fp32_losses[0]
    assert 1e-6 < first < 1e-2, (bf16_losses[0], fp32_losses[0])
    # it learns: the last steps' loss well below the first, as fp32's is
    for losses in (fp32_losses, bf16_losses):
        assert sum(losses[-3:]) / 3 < 0.85 * losses[0], losses
    # the prompt moved, and where fp32's moved (Adafactor's first steps are sign steps, so a few
    # gradient elements near 0 flip under bf16: close, not equal)
    init = init_prompt("random_uniform", torch.zeros(10, fp32.shape[1]), 4, seed=0)
    moved = {p: (w - init).flatten() for p, (w, _) in runs.items()}
    assert moved["bf16"].norm() > init.norm() and torch.isfinite(bf16).all()  # 8.7 vs 3.3
    assert torch.nn.functional.cosine_similarity(moved["bf16"], moved["fp32"], dim=0) > 0.8
    assert 0.8 < moved["bf16"].norm() / moved["fp32"].norm() < 1.25


def test_checkpoint_loads_with_weights_only(tiny_t5_dir, tmp_path):
    run_train(tiny_t5_dir, tmp_path)
    saved = torch.load(tmp_path / "last" / STATE_FILE, weights_only=True)
    assert saved["state"]["step"] == 3 and saved["state"]["best_step"] == 3
    assert set(saved) == {"state", "optimizer", "rng"}
