"""The prompt optimiser: hand-computed t5x Adafactor steps, clipping, weight decay, HF agreement."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.optimization import Adafactor as HFAdafactor

from repro.optim import Adafactor, build_prompt_optimizer
from repro.resolve import load_config

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
    # (both averages have the same mean), so factoring every 2-D tensor ("true") the two agree.
    init = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = Adafactor([p_ours], weight_decay=0.0, factored="true")
    theirs = _hf([p_hf], weight_decay=0.0)
    _run_both(ours, theirs, p_ours, p_hf, shape)
    assert "v_row" in ours.state[p_ours]
    torch.testing.assert_close(p_ours.data, p_hf.data, rtol=1e-5, atol=1e-6)


def test_default_prompt_optimizer_is_not_hf_on_a_2d_prompt():
    # The reason this module exists: HF factors every [P, H] prompt's second moment, t5x only
    # when P ≥ 128 and H ≥ 128.
    init = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    p_ours, p_hf = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = build_prompt_optimizer([p_ours], weight_decay=0.0)
    theirs = _hf([p_hf], weight_decay=0.0)
    _run_both(ours, theirs, p_ours, p_hf, (4, 6), steps=4)
    assert set(ours.state[p_ours]) == {"step", "v"}
    assert (p_ours.data - p_hf.data).abs().max() > 1e-2


def test_factoring_follows_the_t5x_size_threshold():
    small, big = _param([[0.0] * 130] * 100), _param([[0.0] * 130] * 129)
    opt = Adafactor([small, big], factored="auto")  # t5x's factored=True; threshold 128
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

    from repro.trainer_config import OptimizerConfig

    cfg = asdict(
        OptimizerConfig(initial_step=1_100_000, lr=0.1, factored="TRUE", min_dim_size_to_factor=64)
    )
    assert cfg["factored"] == "true"
    group = build_prompt_optimizer([torch.nn.Parameter(torch.zeros(2, 3))], **cfg).param_groups[0]
    assert {k: group[k] for k in cfg} == cfg


# --- factored second moment (t5x's rule) -------------------------------------------------------

P0 = [[0.5, -0.5, 1.0, 0.0], [2.0, 0.1, -0.3, 0.7], [-1.0, 0.4, 0.2, -0.6]]
G1 = [[0.1, -0.2, 0.0, 0.0], [0.5, 0.0, -0.1, 0.2], [0.0, 0.3, 0.0, -0.2]]
G2 = [[1.0, 0.2, -0.3, 0.1], [0.0, -0.1, 0.2, 0.3], [0.2, 0.6, -0.1, 0.4]]


def _factored_reference(p, grads, betas):
    """t5x's factored Adafactor on a [3, 4] tensor, by hand in float64 NumPy: the rows (3, the
    second-largest dim d1) get v_row = mean of g² over the columns (the largest dim d0), the
    columns get v_col = mean over the rows; y = g / √(v_row / mean(v_row)) / √v_col."""
    p, v_row, v_col, out = np.array(p), np.zeros(3), np.zeros(4), []
    for g, b in zip(grads, betas, strict=True):
        g = np.array(g)
        g_sq = g * g + 1e-30
        v_row = b * v_row + (1 - b) * g_sq.mean(axis=1)
        v_col = b * v_col + (1 - b) * g_sq.mean(axis=0)
        y = g / np.sqrt(v_row / v_row.mean())[:, None] / np.sqrt(v_col)[None, :]
        y = y / max(1.0, np.sqrt((y * y).mean()))
        p = 0.99999 * p - 0.3 * y
        out.append((p, np.sqrt((y * y).mean())))
    return out


@pytest.mark.parametrize("transpose", [False, True])
def test_two_hand_computed_factored_steps_on_a_3x4_tensor(transpose):
    (p1, rms1), (p2, rms2) = _factored_reference(P0, [G1, G2], [0.0, BETA_1])
    # Step 1 (β = 0): v_row = [0.0125, 0.075, 0.0325], v_col = [0.08667, 0.04333, 0.00333,
    # 0.02667]; RMS(y) ≈ 0.986, not clipped. Step 2: RMS ≈ 1.246 before clipping, clipped to 1.
    assert 0.98 < rms1 < 1 and abs(rms2 - 1) < 1e-12
    # Spelled-out values as a second guard on the arithmetic above.
    expected_1 = [
        [0.317702, 0.015608, 0.99999, 0.0],
        [1.627876, 0.099999, 0.079476, 0.431665],
        [-0.99999, -0.079649, 0.199998, -0.192374],
    ]
    expected_2 = [
        [-0.073956, -0.106611, 1.339751, -0.076955],
        [1.627860, 0.210140, -0.328788, 0.015553],
        [-1.104088, -0.566961, 0.350523, -0.601489],
    ]
    np.testing.assert_allclose(p1, expected_1, atol=1e-6)
    np.testing.assert_allclose(p2, expected_2, atol=1e-6)

    # [4, 3] (transposed): the largest dim is now dim 0; the result is the transpose.
    t = (lambda x: torch.tensor(x).T) if transpose else torch.tensor
    p = torch.nn.Parameter(t(P0).contiguous())
    opt = build_prompt_optimizer([p], min_dim_size_to_factor=3)  # auto: 3 ≥ 3, factored
    for g, want in [(G1, p1), (G2, p2)]:
        _step(opt, p, t(g))
        torch.testing.assert_close(p.data, t(want).float(), atol=1e-6, rtol=0)
    assert opt.state[p]["v_row"].shape == (3,) and opt.state[p]["v_col"].shape == (4,)
    assert "v" not in opt.state[p]


def test_factored_update_of_a_3d_tensor_follows_t5x_axes():
    # [2, 3, 4]: d1 = 1 (size 3), d0 = 2 (size 4); v_row = mean over axis 2 → [2, 3],
    # v_col = mean over axis 1 → [2, 4]; mean(v_row) over its axis 1 (= d1 after removing d0).
    g = np.arange(1, 25, dtype=np.float64).reshape(2, 3, 4) / 10 - 1.2
    g_sq = g * g + 1e-30
    v_row, v_col = g_sq.mean(axis=2), g_sq.mean(axis=1)
    row_factor = (v_row / v_row.mean(axis=1, keepdims=True)) ** -0.5
    y = g * row_factor[:, :, None] * (v_col**-0.5)[:, None, :]
    y = y / max(1.0, np.sqrt((y * y).mean()))
    p = torch.nn.Parameter(torch.zeros(2, 3, 4, dtype=torch.float64))
    opt = Adafactor([p], factored="true", weight_decay=0.0)
    _step(opt, p, torch.tensor(g))
    assert opt.state[p]["v_row"].shape == (2, 3) and opt.state[p]["v_col"].shape == (2, 4)
    torch.testing.assert_close(p.data, torch.tensor(-0.3 * y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "factored"),
    [
        ((150, 512), True),  # Figure 3(a)'s p = 150 on T5-Small (d = 512)
        ((150, 4096), True),
        ((128, 128), True),  # both dims exactly at the threshold
        ((150, 128), True),
        ((127, 512), False),
        ((100, 512), False),  # the default prompt length
        ((150, 64), False),  # d < 128 (the tiny test models)
    ],
)
def test_auto_factors_a_prompt_only_when_both_dims_reach_128(shape, factored):
    p = torch.nn.Parameter(torch.zeros(shape))
    opt = build_prompt_optimizer([p])  # the default: factored="auto", threshold 128
    _step(opt, p, torch.ones(shape))
    state = opt.state[p]
    if factored:
        assert set(state) == {"step", "v_row", "v_col"}
        # v_row is indexed by the smaller dim, v_col by the larger (t5x: d1, d0).
        assert state["v_row"].shape == (min(shape),) and state["v_col"].shape == (max(shape),)
    else:
        assert set(state) == {"step", "v"} and state["v"].shape == shape


@pytest.mark.parametrize("value", ["true", "True", "TRUE", True])
def test_true_factors_any_tensor_of_rank_two(value):
    p, vec = torch.nn.Parameter(torch.zeros(5, 8)), torch.nn.Parameter(torch.zeros(8))
    opt = build_prompt_optimizer([p, vec], factored=value)
    _step(opt, p, torch.ones(5, 8))
    _step(opt, vec, torch.ones(8))
    assert opt.state[p]["v_row"].shape == (5,) and opt.state[p]["v_col"].shape == (8,)
    assert set(opt.state[vec]) == {"step", "v"}  # rank 1: never factored


@pytest.mark.parametrize("shape", [(150, 512), (5, 8), (3, 130, 140)])
def test_false_never_factors(shape):
    p = torch.nn.Parameter(torch.zeros(shape))
    opt = build_prompt_optimizer([p], factored="false", min_dim_size_to_factor=1)
    _step(opt, p, torch.ones(shape))
    assert set(opt.state[p]) == {"step", "v"}


def test_bad_factored_value_raises_naming_it():
    with pytest.raises(ValueError, match=r"factored='maybe' is not allowed.*auto, true, false"):
        Adafactor([_param([0.0])], factored="maybe")
    with pytest.raises(ValueError, match="min_dim_size_to_factor"):
        Adafactor([_param([0.0])], min_dim_size_to_factor=0)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    import repro.run  # noqa: F401  (registers the schema and the run_name resolver)

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def test_factored_config_values():
    assert _compose().trainer.optimizer.factored == "auto"
    assert _compose("trainer=official").trainer.optimizer.factored == "auto"
    assert _compose().trainer.optimizer.min_dim_size_to_factor == 128
    # Hydra hands the str field "True" for factored=true: accepted case-insensitively.
    for override, value in [("true", "true"), ("FALSE", "false"), ("Auto", "auto")]:
        cfg = _compose(f"trainer.optimizer.factored={override}")
        assert cfg.trainer.optimizer.factored == value
    with pytest.raises(ValueError) as info:
        _compose("trainer.optimizer.factored=maybe")
    message = str(info.value)
    assert message == (
        "trainer.optimizer.factored='maybe' is not allowed; choose one of: auto, true, false"
    )
    with pytest.raises(ValueError, match="trainer.optimizer.min_dim_size_to_factor must be"):
        _compose("trainer.optimizer.min_dim_size_to_factor=0")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_factored_state_dict_round_trip_continues_identically(dtype):
    grads = _grads(7, (5, 8), seed=7)
    init = torch.randn(5, 8, generator=torch.Generator().manual_seed(8)).to(dtype)
    p = torch.nn.Parameter(init.clone())
    opt = build_prompt_optimizer([p], factored="true", initial_step=1_100_000)
    for g in grads[:4]:
        _step(opt, p, g)
    buf = io.BytesIO()
    torch.save({"prompt": p.data.clone(), "optim": opt.state_dict()}, buf)
    for g in grads[4:]:
        _step(opt, p, g)

    buf.seek(0)
    saved = torch.load(buf)
    q = torch.nn.Parameter(saved["prompt"])
    resumed = build_prompt_optimizer([q], factored="true", initial_step=1_100_000)
    resumed.load_state_dict(saved["optim"])
    assert resumed.state[q]["step"] == 4
    assert resumed.state[q]["v_row"].dtype == resumed.state[q]["v_col"].dtype == torch.float32
    for g in grads[4:]:
        _step(resumed, q, g)
    assert not torch.equal(q.data, init)
    assert torch.equal(q.data, p.data)
    for key in ("v_row", "v_col"):
        assert torch.equal(resumed.state[q][key], opt.state[p][key])


def test_resuming_a_state_saved_under_other_factoring_raises():
    p = torch.nn.Parameter(torch.zeros(5, 8))
    opt = build_prompt_optimizer([p], factored="true")
    _step(opt, p, torch.ones(5, 8))
    state = opt.state_dict()
    q = torch.nn.Parameter(torch.zeros(5, 8))
    resumed = build_prompt_optimizer([q])
    resumed.load_state_dict(state)
    resumed.param_groups[0]["factored"] = "false"  # as if the saved group said so
    with pytest.raises(ValueError, match=r"\[5, 8\] parameter is factored"):
        _step(resumed, q, torch.ones(5, 8))


# --- β in float32 (t5x _decay_rate_pow) ---------------------------------------------------------


def test_mixing_rate_is_computed_in_float32_at_the_official_step():
    # One step from v = 0 with g = 1 leaves v = (1 − β)·(1 + 1e-30) = 1 − β exactly (fp64 state),
    # so v shows the mixing rate the optimiser used. At i = 1,100,000 t5x's float32 arithmetic
    # gives 1 − β = 1.4662742614746094e-05; float64 gives 1.4685e-05, 1.5e-3 larger.
    i = 1_100_000
    one = np.float32(1.0)
    beta32 = one - (np.float32(i) + one) ** np.float32(-0.8)
    mix32 = float(one - beta32)
    mix64 = (i + 1.0) ** -0.8
    assert mix32 == 1.4662742614746094e-05
    assert abs(mix32 / mix64 - 1) > 1e-3

    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = Adafactor([p], initial_step=i)
    _step(opt, p, [1.0, 1.0])
    assert opt.state[p]["v"].tolist() == [mix32, mix32]

    # Second step: v = β·v + (1 − β)·g² with β = float32 1 − (i + 2)^−0.8, the same in the
    # factored state.
    beta32_next = one - (np.float32(i + 1) + one) ** np.float32(-0.8)
    v2 = float(beta32_next) * mix32 + float(one - beta32_next) * 4.0
    _step(opt, p, [2.0, 2.0])
    assert opt.state[p]["v"].tolist() == [v2, v2]
    f = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    opt = Adafactor([f], factored="true", initial_step=i)
    _step(opt, f, torch.ones(2, 3, dtype=torch.float64))
    assert opt.state[f]["v_row"].tolist() == [mix32, mix32]
    assert opt.state[f]["v_col"].tolist() == [mix32] * 3
