"""The loop itself: accumulation is exact, bf16 autocast runs, checkpoints are data only."""

import random

import torch

from repro.config import TrainerConfig
from repro.model import PromptedT5, load_backbone
from repro.prompts import SoftPrompt, init_prompt
from repro.tracking import NullSink
from repro.trainer import STATE_FILE, _micro_batches, forward_backward, train


def toy_tokens(n=32, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(3, 300) for _ in range(rng.randint(3, 12))] + [1] for _ in range(n)]
    labels = [[rng.randrange(3, 300), 1] for _ in range(n)]
    return ids, labels


def run_train(tiny_t5_dir, tmp_path, **trainer_kwargs):
    backbone = load_backbone(tiny_t5_dir)
    weight = init_prompt("random_uniform", backbone.get_input_embeddings().weight, 4, seed=0)
    model = PromptedT5(backbone, SoftPrompt(weight))
    ids, labels = toy_tokens()
    cfg = TrainerConfig(
        **{"steps": 3, "batch_size": 16, "eval_every": 3, "progress": False, **trainer_kwargs}
    )
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


def test_bf16_autocast_trains_the_fp32_prompt(tiny_t5_dir, tmp_path):
    model, state = run_train(tiny_t5_dir, tmp_path, bf16_autocast=True)
    assert state.step == 3
    assert model.prompt.weight.dtype == torch.float32
    assert torch.isfinite(model.prompt.weight).all()


def test_checkpoint_loads_with_weights_only(tiny_t5_dir, tmp_path):
    run_train(tiny_t5_dir, tmp_path)
    saved = torch.load(tmp_path / "last" / STATE_FILE, weights_only=True)
    assert saved["state"]["step"] == 3 and saved["state"]["best_step"] == 3
    assert set(saved) == {"state", "optimizer", "rng"}
