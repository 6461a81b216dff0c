"""What splitting a step into micro-batches (trainer.grad_accum) keeps, with dropout on.

At dropout 0 the accumulated gradient is the full batch's to float rounding
(tests/test_trainer.py). With dropout (T5.1.1's 0.1, the default) the masks are drawn per
micro-batch tensor, so another count draws other masks: one step's gradient differs (by about as
much as two draws of one count differ), but the masks are i.i.d. Bernoulli either way, so the
gradient's *distribution* is the same. This measures that: the mean gradient over many dropout
draws with 4 micro-batches is as close to the mean with 1 as two independent means with 1 are.
Some 250 tiny steps: ``slow`` (CI runs it).
"""

import random

import pytest
import torch

from repro.backbone import load_backbone, set_dropout
from repro.model import PromptedT5
from repro.precision import Precision
from repro.prompts import SoftPrompt, init_prompt
from repro.trainer import _micro_batches, forward_backward

DRAWS = 80


def gradients(model, ids, labels, accum: int, seeds) -> torch.Tensor:
    """The prompt's gradient of one 16-example step, once per dropout seed: [draws, p, d]."""
    micro = _micro_batches(list(range(len(ids))), ids, labels, accum, pad_id=0)
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        model.prompt.weight.grad = None
        forward_backward(model, micro, "cpu", Precision("fp32", "cpu"), 1)
        out.append(model.prompt.weight.grad.clone())
    return torch.stack(out)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def one_thread():
    """Tiny matmuls: one thread is faster, and not starved when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_micro_batches_change_a_dropout_step_but_not_its_distribution(tiny_t5_dir, one_thread):
    backbone = load_backbone(tiny_t5_dir)
    set_dropout(backbone, 0.1)
    weight = init_prompt("random_uniform", backbone.get_input_embeddings().weight, 4, seed=0)
    model = PromptedT5(backbone, SoftPrompt(weight)).train()
    rng = random.Random(0)
    ids = [[rng.randrange(3, 300) for _ in range(rng.randint(3, 12))] + [1] for _ in range(16)]
    labels = [[rng.randrange(3, 300), 1] for _ in range(16)]

    one = gradients(model, ids, labels, 1, range(DRAWS))
    one_again = gradients(model, ids, labels, 1, range(DRAWS, 2 * DRAWS))
    four = gradients(model, ids, labels, 4, range(2 * DRAWS, 3 * DRAWS))

    # one step: the same seed, another count → other masks, a different gradient
    same_seed_four = gradients(model, ids, labels, 4, range(1))[0]
    assert relative(same_seed_four, one[0]) > 0.1
    # in distribution: 4 micro-batches' mean is as near 1's mean as another 1-mean is (the
    # sampling noise of DRAWS draws), and far nearer than single draws are to each other
    noise = relative(one_again.mean(0), one.mean(0))
    assert relative(four.mean(0), one.mean(0)) < 2 * noise
    assert noise < 0.5 * relative(one[1], one[0])
    # micro-batch losses summed without their token weights (a 4× gradient) would be caught
    assert relative(4 * four.mean(0), one.mean(0)) > 2 * noise
