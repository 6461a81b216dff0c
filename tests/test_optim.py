"""The prompt optimiser: hand-computed t5x Adafactor steps, clipping, weight decay, HF agreement."""

import io
import math

import pytest
import torch
from transformers.optimization import Adafactor as HFAdafactor

from repro.optim import Adafactor, build_prompt_optimizer

# β for the second optimiser step (i = 1): 1 − 2^−0.8, written out.
BETA_1 = 0.4256508225


def _param(values, dtype=torch.float32) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=dtype))


def _step(opt: torch.optim.Optimizer, p: torch.Tensor, grad) -> None:
    p.grad = torch.as_tensor(grad, dtype=p.dtype).clone()
    opt.step()


def test_beta_constant_is_one_minus_two_to_the_minus_point_eight():
    assert abs(BETA_1 - (1 - 2**-0.8)) < 1e-10


def test_two_hand_computed_steps_on_a_2x2_prompt():
    p = _param([[1.0, -1.0], [0.5, 2.0]])
    opt = build_prompt_optimizer([p])  # lr 0.3, wd 1e-5 (not lr-scaled), clip 1, eps 1e-30

    # Step i=0: β = 1 − 1^−0.8 = 0, so v = g² + 1e-30 and y = g/|g| (0 where g = 0).
    # y = [[1, -1], [1, 0]], RMS(y) = √(3/4) < 1: no clipping.
    _step(opt, p, [[0.1, -0.2], [0.3, 0.0]])
    p1 = [
        [0.99999 * 1.0 - 0.3, 0.99999 * -1.0 + 0.3],
        [0.99999 * 0.5 - 0.3, 0.99999 * 2.0 - 0.0],
    ]
    torch.testing.assert_close(p.data, torch.tensor(p1), atol=1e-6, rtol=0)

    # Step i=1: v = β·v_old + (1 − β)·g², g = [[0.2, 0.2], [-0.3, 0.1]].
    b, m = BETA_1, 1 - BETA_1
    v = [
        [b * 0.01 + m * 0.04, b * 0.04 + m * 0.04],
        [b * 0.09 + m * 0.09, b * 1e-30 + m * (0.01 + 1e-30)],
    ]
    y = [
        [0.2 / math.sqrt(v[0][0]), 0.2 / math.sqrt(v[0][1])],
        [-0.3 / math.sqrt(v[1][0]), 0.1 / math.sqrt(v[1][1])],
    ]
    # ≈ [[1.21200, 1], [-1, 1.31951]]: RMS ≈ 1.1413 > 1, so this step is clipped.
    rms = math.sqrt((y[0][0] ** 2 + y[0][1] ** 2 + y[1][0] ** 2 + y[1][1] ** 2) / 4)
    assert rms > 1.14
    p2 = [[0.99999 * p1[r][c] - 0.3 * y[r][c] / rms for c in range(2)] for r in range(2)]
    _step(opt, p, [[0.2, 0.2], [-0.3, 0.1]])
    torch.testing.assert_close(p.data, torch.tensor(p2), atol=1e-6, rtol=0)
    # Spelled-out values as a second guard on the arithmetic above.
    expected = [[0.381392, -0.962847], [0.462857, 1.653109]]
    torch.testing.assert_close(p.data, torch.tensor(expected), atol=2e-6, rtol=0)


def test_clipping_engages_when_the_gradient_jumps():
    # Step 1: g = 0.01 → y = 1 everywhere. Step 2: g = 1 (100× larger):
    # v = β·1e-4 + (1 − β)·1, y = 1/√v ≈ 1.31947 everywhere → clipped back to exactly 1.
    v2 = BETA_1 * 1e-4 + (1 - BETA_1) * 1.0
    y_unclipped = 1.0 / math.sqrt(v2)
    assert y_unclipped > 1.3
    for clip, expected_y in [(1.0, 1.0), (100.0, y_unclipped)]:
        p = _param([0.0, 0.0, 0.0])
        opt = Adafactor([p], lr=0.3, weight_decay=0.0, clip_threshold=clip)
        _step(opt, p, [0.01, 0.01, 0.01])
        _step(opt, p, [1.0, 1.0, 1.0])
        torch.testing.assert_close(p.data, torch.full((3,), -0.3 - 0.3 * expected_y))


def test_clipping_uses_one_rms_for_the_whole_tensor():
    # Step 2 with g = [1, 0.01] after [0.01, 0.01]: y = [1.31947, 1.0], RMS = √((1.741 + 1)/2).
    # The small entry is scaled down too: RMS is over the tensor, not per element.
    y0 = 1.0 / math.sqrt(BETA_1 * 1e-4 + (1 - BETA_1) * 1.0)
    rms = math.sqrt((y0**2 + 1.0) / 2)
    p = _param([0.0, 0.0])
    opt = Adafactor([p], weight_decay=0.0)
    _step(opt, p, [0.01, 0.01])
    _step(opt, p, [1.0, 0.01])
    expected = [-0.3 - 0.3 * y0 / rms, -0.3 - 0.3 * 1.0 / rms]
    torch.testing.assert_close(p.data, torch.tensor(expected))
    assert p.data[1] > -0.3 - 0.3 + 0.04  # the second entry moved less than 0.3


def _hf(params, **kw):
    return HFAdafactor(
        params,
        lr=0.3,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
        decay_rate=-0.8,
        clip_threshold=1.0,
        beta1=None,
        **kw,
    )


def _run_both(ours, theirs, p_ours, p_theirs, shape, steps=10):
    gen = torch.Generator().manual_seed(0)
    for k in range(steps):
        # Varying scales so that clipping engages on some steps and not on others.
        g = torch.randn(shape, generator=gen) * (10.0 ** (k % 3 - 1))
        if k == 4:
            g[..., 0] = 0.0  # exercise ε1 where the gradient is exactly zero
        _step(ours, p_ours, g)
        _step(theirs, p_theirs, g)


def test_matches_transformers_adafactor_on_a_vector_without_weight_decay():
    """HF's unfactored branch is the same rule: β_t = 1 − t^−0.8 with t = i + 1 (HF increments
    its step before use), ε1 added to g² inside the average (HF eps=(1e-30, 1e-3); eps[1] only
    matters with parameter scaling, off here), one RMS clip per tensor, step lr·y. The known
    differences are elsewhere: HF multiplies weight decay by lr and factors every 2-D tensor."""
    init = torch.randn(17, generator=torch.Generator().manual_seed(1))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = Adafactor([p_ours], lr=0.3, weight_decay=0.0)
    theirs = _hf([p_hf], weight_decay=0.0)
    _run_both(ours, theirs, p_ours, p_hf, (17,))
    assert not torch.equal(p_ours.data, init)
    torch.testing.assert_close(p_ours.data, p_hf.data, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.state[p_ours]["v"], theirs.state[p_hf]["exp_avg_sq"])


def test_lr_scaled_weight_decay_matches_transformers():
    init = torch.randn(9, generator=torch.Generator().manual_seed(2))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = Adafactor([p_ours], lr=0.3, weight_decay=1e-2, weight_decay_lr_scaled=True)
    theirs = _hf([p_hf], weight_decay=1e-2)
    _run_both(ours, theirs, p_ours, p_hf, (9,))
    torch.testing.assert_close(p_ours.data, p_hf.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_factored_option_matches_transformers_factored_estimate(shape):
    # t5x and HF pick the row/column roles differently, but row ⊗ col / mean(row) is symmetric
    # (both averages have the same mean), so with no size threshold the two agree.
    init = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = Adafactor([p_ours], weight_decay=0.0, factored=True, min_dim_size_to_factor=1)
    theirs = _hf([p_hf], weight_decay=0.0)
    _run_both(ours, theirs, p_ours, p_hf, shape)
    assert "v_row" in ours.state[p_ours]
    torch.testing.assert_close(p_ours.data, p_hf.data, rtol=1e-5, atol=1e-6)


def test_default_prompt_optimizer_is_not_hf_on_a_2d_prompt():
    # The reason this module exists: HF factors the [P, H] prompt's second moment, t5x does not.
    init = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = build_prompt_optimizer([p_ours], weight_decay=0.0)
    theirs = _hf([p_hf], weight_decay=0.0)
    _run_both(ours, theirs, p_ours, p_hf, (4, 6), steps=4)
    assert set(ours.state[p_ours]) == {"step", "v"}
    assert (p_ours.data - p_hf.data).abs().max() > 1e-2


def test_factoring_follows_the_t5x_size_threshold():
    small, big = _param([[0.0] * 130] * 100), _param([[0.0] * 130] * 129)
    opt = Adafactor([small, big], factored=True)  # min_dim_size_to_factor = 128
    small.grad, big.grad = torch.ones_like(small), torch.ones_like(big)
    opt.step()
    assert set(opt.state[small]) == {"step", "v"}
    assert opt.state[big]["v_row"].shape == (129,) and opt.state[big]["v_col"].shape == (130,)


def test_weight_decay_official_vs_lr_scaled():
    # Zero gradient → y = 0, so one step is pure decay of the old θ.
    for scaled, factor in [(False, 1 - 0.01), (True, 1 - 0.3 * 0.01)]:
        p = _param([2.0, -4.0], dtype=torch.float64)
        opt = Adafactor([p], lr=0.3, weight_decay=0.01, weight_decay_lr_scaled=scaled)
        _step(opt, p, [0.0, 0.0])
        torch.testing.assert_close(p.data, torch.tensor([2.0 * factor, -4.0 * factor]).double())

    # With a gradient: the updates y are identical, so the two variants differ by exactly
    # wd·(1 − lr)·θ_old after one step.
    results = []
    for scaled in (False, True):
        p = _param([2.0, -4.0, 0.5], dtype=torch.float64)
        opt = Adafactor([p], lr=0.3, weight_decay=0.01, weight_decay_lr_scaled=scaled)
        _step(opt, p, [0.3, 0.1, -0.2])
        results.append(p.data.clone())
    diff = results[1] - results[0]
    expected = 0.01 * (1 - 0.3) * torch.tensor([2.0, -4.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(diff, expected, rtol=1e-9, atol=1e-12)


def test_initial_step_reproduces_the_official_continued_step_counter():
    # g = [1, 0]. From i = 0: y = [1, 0], RMS 1/√2 < 1, step 0.3. From i = 10^6: v = (1 − β)·g²
    # is tiny, y is huge and clipped to RMS 1 → y = [√2, 0], step 0.3·√2.
    for initial_step, moved in [(0, 0.3), (10**6, 0.3 * math.sqrt(2))]:
        p = _param([0.0, 0.0])
        opt = Adafactor([p], weight_decay=0.0, initial_step=initial_step)
        _step(opt, p, [1.0, 0.0])
        torch.testing.assert_close(p.data, torch.tensor([-moved, 0.0]))


def test_lr_scheduler_changes_the_step_size():
    p = _param([0.0, 0.0])
    opt = build_prompt_optimizer([p], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    _step(opt, p, [1.0, -1.0])
    sched.step()
    torch.testing.assert_close(p.data, torch.tensor([-0.15, 0.15]))


def _grads(n, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_continues_identically(dtype):
    grads = _grads(6, (3, 4), seed=5)
    p = torch.nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(6)).to(dtype))
    opt = build_prompt_optimizer([p])
    for g in grads[:3]:
        _step(opt, p, g)
    buf = io.BytesIO()
    torch.save({"prompt": p.data.clone(), "optim": opt.state_dict()}, buf)
    for g in grads[3:]:
        _step(opt, p, g)

    buf.seek(0)
    saved = torch.load(buf)
    q = torch.nn.Parameter(saved["prompt"])
    resumed = build_prompt_optimizer([q])
    resumed.load_state_dict(saved["optim"])
    assert resumed.state[q]["step"] == 3
    assert resumed.state[q]["v"].dtype == torch.float32  # not rounded to the parameter's bf16
    for g in grads[3:]:
        _step(resumed, q, g)
    assert torch.equal(q.data, p.data)
    assert torch.equal(resumed.state[q]["v"], opt.state[p]["v"])
    assert resumed.state[q]["step"] == opt.state[p]["step"] == 6


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"lr": 0.0}, "0.0"),
        ({"lr": -0.3}, "-0.3"),
        ({"lr": float("nan")}, "nan"),
        ({"decay_rate": 0.0}, "0.0"),
        ({"decay_rate": -0.8}, "-0.8"),  # HF's sign convention, a likely slip
        ({"decay_rate": 1.5}, "1.5"),
        ({"clip_threshold": 0.0}, "0.0"),
        ({"clip_threshold": -1.0}, "-1.0"),
        ({"weight_decay": -1e-5}, "-1e-05"),
    ],
)
def test_bad_hyper_parameters_raise_naming_the_value(kwargs, shown):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"{name}.*{shown}"):
        Adafactor([_param([0.0])], **kwargs)


def test_every_config_key_reaches_the_prompt_optimizer():
    """The trainer passes `asdict(trainer.optimizer)`: each key must be an optimiser argument."""
    from dataclasses import asdict

    from repro.config import OptimizerConfig

    cfg = asdict(OptimizerConfig(initial_step=1_100_000, lr=0.1))
    group = build_prompt_optimizer([torch.nn.Parameter(torch.zeros(2, 3))], **cfg).param_groups[0]
    assert {k: group[k] for k in cfg} == cfg
