"""The method axis (repro.methods): model tuning and multi-task model tuning through the same
trainer, run directory, collect, cost and Figure 1 as prompt tuning; prompt tuning unchanged."""

import json
import random
import signal
from dataclasses import replace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_bad_input import assert_one_error, cli
from test_plots import REFERENCE_CSV, TOY
from test_preemption import STEPS, finish, run_dir_of, smoke_args, start
from test_run import smoke_config

from repro.backbone import load_backbone, load_tokenizer
from repro.collect.rundirs import collect_runs
from repro.config import Config
from repro.estimate import adafactor_state_floats, count_params, estimate, param_shapes, shape_of
from repro.files import KILL_ENV
from repro.job.experiment import run_experiment
from repro.methods import METHODS, get_method
from repro.model import PromptedT5, TunedT5
from repro.plots.reference import ReferenceWarning, load_reference
from repro.plots.scale import figure1, plot_figure1
from repro.prompts import SoftPrompt
from repro.resolve import load_config
from repro.rundir import fingerprint
from repro.trainer_config import divisors

SHORT = [
    "trainer.steps=12",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "task.max_eval_examples=32",
]


def state_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def trainer_steps(model, tokenizer, steps=3):
    """A few steps of the real training loop (no eval in between)."""
    from repro.trainer import train
    from repro.trainer_config import TrainerConfig

    ids = [tokenizer(f"sentence: word{i} is good").input_ids for i in range(8)]
    labels = [tokenizer("positive").input_ids for _ in ids]
    cfg = TrainerConfig(steps=steps, batch_size=4, eval_every=steps, log_every=1, progress=False)
    cfg.optimizer = replace(cfg.optimizer, lr=1e-3, parameter_scale=True, weight_decay=0.0)
    return train(
        model,
        ids,
        labels,
        evaluate_fn=lambda: {"accuracy": 0.0},
        score_fn=lambda m: 0.0,
        cfg=cfg,
        out_dir=model.out_dir,
        seed=0,
        pad_id=tokenizer.pad_token_id,
        sink=_NullSink(),
        sidecar={},
        device=torch.device("cpu"),
    )


def lines_of(ax) -> dict[str, list[float]]:
    """{legend label: y values} of the drawn lines (three lines are dodged apart on x)."""
    return {c.get_label(): list(c.lines[0].get_ydata()) for c in ax.containers}


class _NullSink:
    def log(self, *args, **kwargs):
        pass


def test_model_tuning_changes_every_backbone_weight_and_prompt_tuning_none(tiny_t5_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_t5_dir)
    backbone = load_backbone(tiny_t5_dir)
    loaded = state_of(backbone)
    model = PromptedT5(backbone, SoftPrompt(torch.randn(4, backbone.config.d_model)))
    model.out_dir = tmp_path / "prompt"
    prompt_before = model.prompt.weight.detach().clone()
    trainer_steps(model, tokenizer)
    assert all(torch.equal(v, loaded[k]) for k, v in backbone.state_dict().items())
    assert not torch.equal(model.prompt.weight, prompt_before)

    tuned = TunedT5(load_backbone(tiny_t5_dir))
    tuned.out_dir = tmp_path / "model"
    trainer_steps(tuned, tokenizer)
    after = tuned.backbone.state_dict()
    unchanged = [k for k, v in after.items() if torch.equal(v, loaded[k])]
    assert unchanged == []  # every tensor (embeddings, attention, norms, position biases) moved
    names = {p.name for p in (tmp_path / "model/best").iterdir()}
    assert {"model.safetensors", "config.json", "trained.json"} <= names
    assert not (tmp_path / "model/best/prompt.safetensors").exists()


def test_model_tuning_run_saves_a_full_checkpoint_that_reloads_for_evaluation(
    tmp_path, tiny_t5_dir
):
    cfg = smoke_config(tmp_path, tiny_t5_dir, "method=model", *SHORT)
    assert cfg.name == "toy_keyword-tiny-span_corruption-model-s0"  # no prompt in the name
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["method"] == "model" and result["prompt_len"] is None and result["init"] is None
    total = sum(p.numel() for p in load_backbone(tiny_t5_dir).parameters())
    assert (result["trainable_params"], result["frozen_params"]) == (total, 0)
    assert "method" in fingerprint(cfg)  # a model-tuning run never matches a prompt run's dir

    # best/ is a checkpoint of its own: load it as a backbone and score dev again
    from repro.evaluate import evaluate
    from repro.job.task import prepare_task

    best = run_dir / "best"
    assert json.loads((best / "trained.json").read_text())["step"] == result["best_step"]
    tokenizer = load_tokenizer(best)
    data = prepare_task(cfg, "toy_keyword", tokenizer)

    def dev_metrics(model) -> dict:
        metrics, _ = evaluate(
            model,
            tokenizer,
            data.task,
            data.dev_examples,
            data.dev_tokens.input_ids,
            max_new_tokens=result["max_target_length"],
        )
        return metrics

    assert dev_metrics(TunedT5(load_backbone(best))) == result["metrics"]
    # the later-use commands (repro.trained: transfer, ...) load it the same way
    from repro.trained import load_scorer, read_run

    run = read_run(run_dir)
    assert run.method == "model"
    scorer, _ = load_scorer(run)
    assert dev_metrics(scorer) == result["metrics"]
    weights = load_file(best / "model.safetensors")
    assert sum(t.numel() for t in weights.values()) == total  # a full copy (tied once)


def test_prompt_runs_keep_their_names_and_fingerprints(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir)
    assert cfg.method.name == "prompt"
    assert cfg.name == "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    fp = fingerprint(cfg)
    assert "method" not in fp and "parameter_scale" not in fp["trainer"]["optimizer"]
    assert cfg.axes["method"] == "prompt" and cfg.axes["prompt_len"] == 20


def test_model_tuning_resumes_exactly_after_an_interruption(tmp_path, tiny_t5_dir):
    overrides = ["method=model", *SHORT, "model.dropout=0.1"]
    assert_resumes_exactly(tmp_path, tiny_t5_dir, overrides, "model.safetensors")


def assert_resumes_exactly(tmp_path, tiny_t5_dir, overrides, weights_file: str) -> None:
    """A run stopped at step 5, then 10, then finished equals the uninterrupted run: the same
    result and bit-equal ``weights_file`` in best/ and last/."""
    straight = run_experiment(smoke_config(tmp_path, tiny_t5_dir, *overrides), tmp_path / "a")
    assert straight["status"] == "finished"
    cfg = smoke_config(tmp_path, tiny_t5_dir, *overrides, "trainer.stop_after_steps=5")
    assert run_experiment(cfg, tmp_path / "b")["status"] == "interrupted"  # at step 5
    assert run_experiment(cfg, tmp_path / "b")["status"] == "interrupted"  # 5 → 10
    assert run_experiment(cfg, tmp_path / "b")["status"] == "finished"  # 10 → 12
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    assert (a["metrics"], a["best_step"], a["score"]) == (b["metrics"], b["best_step"], b["score"])
    for name in ("best", "last"):
        wa, wb = (load_file(tmp_path / d / name / weights_file) for d in "ab")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.mark.slow
def test_model_tuning_killed_mid_checkpoint_then_relaunched_equals_an_uninterrupted_run(
    tmp_path, tiny_t5_dir
):
    args = ["method=model"]
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    assert finish(start(smoke_args(tiny_t5_dir, ref_root, *args)))[0] == 0
    proc = start(smoke_args(tiny_t5_dir, root, *args), {KILL_ENV: "publish last: moved aside:1"})
    assert finish(proc)[0] == -signal.SIGKILL
    code, err = finish(start(smoke_args(tiny_t5_dir, root, *args)))
    assert code == 0, err[-2000:]
    run_dir, ref = run_dir_of(root), run_dir_of(ref_root)
    assert_model_run_intact(run_dir)
    mine, theirs = (json.loads((d / "result.json").read_text()) for d in (run_dir, ref))
    keys = ("status", "metrics", "score", "best_step", "steps")
    assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}
    records = [
        [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (run_dir, ref)
    ]
    train = [[(r["step"], r["loss"]) for r in rows if r["kind"] == "train"] for rows in records]
    assert train[0] == train[1]  # bit-equal, step by step
    wa, wb = (load_file(d / "last/model.safetensors") for d in (run_dir, ref))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def assert_model_run_intact(run_dir):
    """Every file parses, no metrics line twice or missing, no staging left (a model-tuning
    run's files: test_preemption.assert_intact checks a prompt run's)."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, STEPS + 1))
    for name in ("result.json", "fingerprint.json", "best/trained.json", "last/trained.json"):
        json.loads((run_dir / name).read_text())
    for name in ("best", "last"):
        assert load_file(run_dir / name / "model.safetensors")
    torch.load(run_dir / "last/trainer_state.pt", weights_only=True)
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers


def test_multitask_model_tuning_trains_one_model_and_writes_a_row_per_task(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir, "method=model_multitask", "task=toy_smoke", *SHORT)
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished", summary
    assert (run_dir / "best/model.safetensors").exists()  # one model for the mixture
    assert not (run_dir / "toy_keyword/best").exists()
    evals = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert {"toy_keyword/accuracy", "toy_polarity/accuracy"} <= set(evals[0])
    runs = collect_runs([run_dir])
    assert sorted(runs["task"]) == ["toy_keyword", "toy_polarity"]
    assert set(runs["method"]) == {"model_multitask"} and runs["prompt_len"].isna().all()
    # each task's row: its own best eval (T5's rule); the best-mean step is the named variant
    mean = max(evals, key=lambda r: r["score"])  # the first of equal scores, as the trainer
    for row in runs.itertuples():
        own = max(evals, key=lambda r: r[f"{row.task}/score"])
        assert row.status == "finished" and row.selection == "task"
        assert (row.best_step, row.score) == (own["step"], own[f"{row.task}/score"])
        result = json.loads((run_dir / row.task / "result.json").read_text())
        assert result["selections"]["task"] == {
            "best_step": own["step"],
            "metrics": {"accuracy": own[f"{row.task}/accuracy"]},
            "score": own[f"{row.task}/score"],
        }
        assert result["selections"]["mean"]["best_step"] == mean["step"]
        assert result["selections"]["mean"]["score"] == mean[f"{row.task}/score"]
    assert json.loads((run_dir / "best/trained.json").read_text())["step"] == mean["step"]
    # the inputs carry their task's name, the one thing that tells the tasks apart
    from repro.job.task import prepare_task

    data = prepare_task(cfg, "toy_polarity", load_tokenizer(tiny_t5_dir), name_prefix=True)
    assert all(e.inputs.startswith("toy_polarity ") for e in data.train_examples)


def xl_config(method: str, task: str = "superglue") -> Config:
    from hydra import compose, initialize_config_dir
    from test_run import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(
            compose("config", overrides=[f"method={method}", "model=xl", f"task={task}"])
        )


def test_cost_prices_model_tuning_with_its_optimizer_state_and_copies():
    prompt, model, multi = (xl_config(m) for m in ("prompt", "model", "model_multitask"))
    shape = shape_of(model.model)
    assert sum(torch.Size(s).numel() for s in param_shapes(shape)) == count_params(shape)
    jp, jm, jmt = estimate(prompt), estimate(model), estimate(multi)
    weights = jm.params * 4
    adafactor = adafactor_state_floats(param_shapes(shape), model.trainer.optimizer) * 4
    assert adafactor < weights / 50  # t5x's factoring: row + column means of every big matrix
    assert jm.tuned_state_bytes == weights + adafactor  # gradients + second moments
    assert jm.saved_bytes == 8 * (2 * weights + adafactor)  # best/ + last/ for each of 8 tasks
    assert jmt.saved_bytes == 2 * weights + adafactor  # one model for the mixture
    assert jp.tuned_state_bytes == 0 and jp.saved_bytes < 8 * 10**7
    # a step of every weight: 3 forwards against the frozen backbone's 2 (same batch and input
    # minus the prompt), then 128 vs 32 examples a step
    from repro.estimate import forward_flops

    te, td = 512, 8
    assert jm.flops_per_step == 3 * 128 * forward_flops(shape, te, td)
    assert jp.flops_per_step == 2 * 32 * forward_flops(shape, te + 100, td)
    assert jmt.total_flops == jmt.flops_per_step * 30_000  # one run over the mixture
    assert jm.total_flops == 8 * jm.flops_per_step * 30_000
    from repro.cost.report import describe

    assert "all weights trained, saves ≈" in describe(jm)


def test_figure1_draws_a_line_per_method_and_the_gpt3_point(tmp_path):
    rows = []
    for method, base in (("prompt", 60.0), ("model", 70.0), ("model_multitask", 75.0)):
        for size, params in (("small", 76961152), ("base", 247577856)):
            for seed in (0, 1):
                for task in ("t1", "t2"):
                    prompt = method == "prompt"
                    rows.append(
                        {
                            "size": size,
                            "params": params,
                            "method": method,
                            "objective": "lm_adapt" if prompt else "span_corruption",
                            "lm_adapt_steps": 100000 if prompt else None,
                            "lm_adapt_source": "released" if prompt else "none",
                            "prompt_len": 100 if prompt else None,
                            "init": "class_label" if prompt else None,
                            "task": task,
                            "seed": seed,
                            "status": "finished",
                            "score": base + seed + (params > 1e8) * 5,
                        }
                    )
    runs = pd.DataFrame(rows)
    runs = pd.concat([runs, runs.assign(prompt_len=5).query("method == 'prompt'")])  # other sweep
    paths = figure1(runs, tmp_path, load_reference(REFERENCE_CSV), tasks=["t1", "t2"])
    assert [p.name for p in paths] == ["figure1.png", "figure1.pdf"]

    from repro.plots.scale import figure1_frame

    frame = figure1_frame(runs, ["t1", "t2"])
    with pytest.warns(ReferenceWarning):  # the unverified model-tuning number is left out
        ax = plot_figure1(frame, load_reference(REFERENCE_CSV)).axes[0]
    lines = lines_of(ax)
    assert list(lines) == [
        "Model Tuning (ours)",
        "Model Tuning (Multi-task) (ours)",
        "Prompt Tuning (ours)",
    ]
    assert lines["Model Tuning (ours)"] == pytest.approx([70.5, 75.5])
    assert lines["Prompt Tuning (ours)"] == pytest.approx([60.5, 65.5])  # prompt_len 5 left out
    assert any("GPT-3" in c.get_label() for c in ax.collections)

    toy = frame.assign(size=frame["size"].map({"small": "toy_small", "base": "toy_base"}))
    toy = toy.assign(params=toy["size"].map(TOY))
    with pytest.warns(ReferenceWarning, match="toy"):
        ax = plot_figure1(toy, load_reference(REFERENCE_CSV)).axes[0]
    # a toy frame says "toy model, not T5" once, in the title, not in every legend entry
    assert "Model Tuning" in lines_of(ax) and "(toy model, not T5)" in ax.get_title()
    assert not any("T5" in label for label in lines_of(ax))


def test_the_registry_names_every_method_config():
    from test_run import CONF

    assert sorted(p.stem for p in (CONF / "method").glob("*.yaml")) == sorted(METHODS)
    assert get_method("model").trains == "backbone" and get_method("prompt").prompt_axes
    with pytest.raises(ValueError, match="method='adapter' is not allowed"):
        get_method("adapter")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["method=adapter"],
            [
                "method='adapter' is not allowed; choose one of: lora, model, model_multitask, prompt"
            ],
        ),
        (["method=model", "prompt_len=20"], ["prompt_len=20 only applies to method=prompt"]),
        (
            ["method=model", "init=random_uniform"],
            ["init=random_uniform only applies to method=prompt"],
        ),
        (
            ["method=model_multitask", "task=toy_keyword"],
            [
                "method=model_multitask trains one model on a mixture of tasks",
                "toy_smoke",
                "task=toy_keyword",
            ],
        ),
    ],
)
def test_method_mistakes_are_one_line_and_write_nothing(
    monkeypatch, capsys, tmp_path, tiny_t5_dir, args, fragments
):
    refused_writing_nothing(monkeypatch, capsys, tmp_path, tiny_t5_dir, args, fragments)


def refused_writing_nothing(monkeypatch, capsys, tmp_path, tiny_t5_dir, args, fragments):
    """A smoke run with ``args`` exits 2 with one error line holding ``fragments``, and no run
    file is written."""
    code, err = cli(
        monkeypatch,
        capsys,
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *args,
    )
    assert_one_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def compose_config(*overrides: str) -> Config:
    from hydra import compose, initialize_config_dir
    from test_run import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(compose("config", overrides=list(overrides)))


def test_model_tuning_batches_by_tokens_and_prompt_tuning_by_examples(tmp_path, tiny_t5_dir):
    prompt, model, multi = (xl_config(m) for m in ("prompt", "model", "model_multitask"))
    # T5's fine-tuning batch: 128 packed rows of 512 tokens = 2^16 (2048 rows = 2^20)
    assert (model.trainer.batch_size, model.trainer.batch_tokens) == (128, 2**16)
    assert (multi.trainer.batch_size, multi.trainer.batch_tokens) == (2048, 2**20)
    assert (prompt.trainer.batch_size, prompt.trainer.batch_tokens) == (32, None)
    # a prompt run's fingerprint is the one it had before the key; a model run's names it
    assert "batch_tokens" not in fingerprint(prompt)["trainer"]
    assert fingerprint(model)["trainer"]["batch_tokens"] == 2**16
    # the CPU experiments keep their 16 examples for every method; the switch back is null
    assert smoke_config(tmp_path, tiny_t5_dir, "method=model").trainer.batch_tokens is None
    old = compose_config("method=model", "model=xl", "trainer.batch_tokens=null")
    assert (old.trainer.batch_size, old.trainer.batch_tokens) == (128, None)


def test_cost_prices_the_token_batch_and_grad_accum_auto_splits_it():
    from repro.estimate import forward_flops
    from repro.memory import start_lines

    shape = shape_of(xl_config("model").model)
    # at typical inputs of 128 tokens 2^16 tokens are 512 examples a step (4 a row), not 128
    typical = compose_config("method=model", "model=xl", "task=rte", "cost.input_len=128")
    job = estimate(typical)
    assert job.flops_per_step == 3 * 512 * forward_flops(shape, 128, 8)
    assert job.step_tokens == 2**16
    fixed = estimate(replace(typical, trainer=replace(typical.trainer, batch_tokens=None)))
    assert fixed.flops_per_step == 3 * 128 * forward_flops(shape, 128, 8)
    # at the task's limit (512) a row is one example: the budget, priced as before
    assert estimate(xl_config("model", "rte")).step_tokens == 128 * 512
    # grad_accum=auto (conf/trainer/paper.yaml) picks the rows' divisor that fits the GPU
    t = typical.trainer
    assert t.grad_accum_auto and t.grad_accum in divisors(128) and t.grad_accum > 1
    assert (
        job.activation_bytes
        < estimate(replace(typical, trainer=replace(t, grad_accum=1))).activation_bytes
    )
    info, _ = start_lines(typical)
    assert (
        f"{t.grad_accum} micro-batch(es) of ≤ {2**16 // t.grad_accum} padded input tokens" in info
    )


def tiny_prompt_model(tiny_t5_dir, calls: list, cap: int | None = None):
    """A prompt on the tiny T5 whose forward records each micro-batch's input_ids and runs out
    of memory (as a GPU would) on more than ``cap`` padded input tokens."""
    backbone = load_backbone(tiny_t5_dir)
    weight = torch.randn(4, backbone.config.d_model, generator=torch.Generator().manual_seed(0))
    model = PromptedT5(backbone, SoftPrompt(weight * 0.5))
    forward = model.forward

    def recorded(input_ids, *args, **kwargs):
        calls.append(input_ids.clone())
        if cap is not None and input_ids.numel() > cap and len(input_ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(input_ids, *args, **kwargs)

    model.forward = recorded
    return model


def train_tokens(model, out_dir, steps=3, auto=False, **trainer_kwargs):
    from repro.trainer import train
    from repro.trainer_config import TrainerConfig

    rng = torch.Generator().manual_seed(0)
    ids = [[*torch.randint(3, 300, (n,), generator=rng).tolist(), 1] for n in range(4, 28)]
    ids = ids * 2
    labels = [[5, 1] for _ in ids]
    cfg = TrainerConfig(steps=steps, eval_every=steps, progress=False, **trainer_kwargs)
    cfg.grad_accum_auto = auto
    train(
        model,
        ids,
        labels,
        evaluate_fn=lambda: {"accuracy": 0.0},
        score_fn=lambda m: 0.0,
        cfg=cfg,
        out_dir=out_dir,
        seed=0,
        pad_id=0,
        sink=_NullSink(),
        sidecar={},
        device=torch.device("cpu"),
    )
    return [len(x) for x in ids]


def test_a_token_batch_trains_its_packed_rows_in_capped_micro_batches(tiny_t5_dir, tmp_path):
    from repro.data import token_batches

    calls = []
    model = tiny_prompt_model(tiny_t5_dir, calls)
    # 2 rows of 64 tokens a step, in micro-batches of <= 64 padded tokens (grad_accum 2)
    lengths = train_tokens(
        model, tmp_path / "a", batch_size=2, batch_tokens=128, grad_accum=2, steps=3
    )
    expected = token_batches(lengths, 2, 64, seed=0, epoch=0)[:3]
    # each step's micro-batches hold exactly its batch's examples (several per row), none
    # over the cap unless alone; more examples than the 2 a fixed batch would give
    seen = [sorted(len(row[row != 0]) for m in calls for row in m)]
    want = [sorted(lengths[i] for b in expected for i in b)]
    assert seen == want
    assert all(m.numel() <= 64 or len(m) == 1 for m in calls)
    assert all(len(b) > 2 for b in expected)
    # the same update whatever the micro-batches (dropout off: token-weighted accumulation):
    # 4 rows of 256 tokens hold all 48 examples, cut in 2 micro-batches or in 4
    one_calls, four_calls = [], []
    one = tiny_prompt_model(tiny_t5_dir, one_calls)
    four = tiny_prompt_model(tiny_t5_dir, four_calls)
    for model_, accum in ((one, 1), (four, 4)):
        kwargs = {"batch_size": 4, "batch_tokens": 1024, "grad_accum": accum, "steps": 2}
        train_tokens(model_, tmp_path / f"accum{accum}", **kwargs)
    assert (len(one_calls), len(four_calls)) == (2 * 2, 2 * 4)
    torch.testing.assert_close(one.prompt.weight, four.prompt.weight, rtol=1e-4, atol=1e-5)


def test_grad_accum_auto_retries_a_token_batch_in_smaller_micro_batches(tiny_t5_dir, tmp_path):
    calls = []
    model = tiny_prompt_model(tiny_t5_dir, calls, cap=64)  # more than 64 tokens: out of memory
    train_tokens(model, tmp_path, batch_size=4, batch_tokens=256, grad_accum=1, auto=True, steps=2)
    # micro-batches of <= 256, then 128, then 64 padded tokens (grad_accum 1 → 2 → 4); each
    # failed try was redone whole, and the run went on at 4
    failed = [m for m in calls if m.numel() > 64 and len(m) > 1]
    assert failed[0].numel() > 128 and any(m.numel() <= 128 for m in failed)
    state = torch.load(tmp_path / "last/trainer_state.pt", weights_only=True)["state"]
    assert state["step"] == 2 and state["grad_accum"] == 4
    last = max(i for i, m in enumerate(calls) if m is failed[-1])
    assert sum(len(m) for m in calls[last + 1 :]) >= 2 * 4  # two whole steps after it


def test_model_tuning_on_a_token_batch_resumes_exactly(tmp_path, tiny_t5_dir):
    tokens = ["trainer.batch_size=4", "trainer.batch_tokens=128", "trainer.grad_accum=2"]
    overrides = ["method=model", *SHORT, *tokens]  # 4 rows of 32 tokens: ~16 examples a step
    cfg = smoke_config(tmp_path, tiny_t5_dir, *overrides)
    assert (cfg.trainer.batch_size, cfg.trainer.batch_tokens) == (4, 128)
    assert_resumes_exactly(tmp_path, tiny_t5_dir, overrides, "model.safetensors")
    from repro.data import token_batches
    from repro.job.task import prepare_task

    lengths = prepare_task(cfg, "toy_keyword", load_tokenizer(tiny_t5_dir)).train_tokens.lengths
    steps = token_batches(lengths, 4, 32, seed=0, epoch=0)
    assert min(len(b) for b in steps[:-1]) > 4  # more than one example a row


def test_each_task_of_a_mixture_is_reported_at_its_own_best_eval():
    from repro.job.task import task_best

    # two tasks that peak at different evals: the mean peaks at step 2, "a" at 1, "b" at 3
    evals = [
        {
            "kind": "eval",
            "step": 1,
            "a/accuracy": 80.0,
            "a/score": 80.0,
            "b/accuracy": 10.0,
            "b/score": 10.0,
            "score": 45.0,
        },
        {
            "kind": "eval",
            "step": 2,
            "a/accuracy": 70.0,
            "a/score": 70.0,
            "b/accuracy": 40.0,
            "b/score": 40.0,
            "score": 55.0,
        },
        {
            "kind": "eval",
            "step": 3,
            "a/accuracy": 20.0,
            "a/score": 20.0,
            "b/accuracy": 50.0,
            "b/score": 50.0,
            "score": 35.0,
        },
        {
            "kind": "eval",
            "step": 4,
            "a/accuracy": 80.0,
            "a/score": 80.0,
            "b/accuracy": 0.0,
            "b/score": 0.0,
            "score": 40.0,
        },
    ]
    a, b = task_best(evals, "a"), task_best(evals, "b")
    assert a == {"best_step": 1, "metrics": {"accuracy": 80.0}, "score": 80.0}  # the first of ties
    assert (b["best_step"], b["score"]) == (3, 50.0)
    # the paper's rule gives (80 + 50) / 2 = 65 here; one best-mean checkpoint gives 55
    assert task_best(evals, "c") is None


def test_a_mixture_names_wsc_as_t5_does(tmp_path, tiny_t5_dir, tokenizer):
    from test_superglue_run import record, tiny_job_config

    from repro.job.task import prepare_task
    from repro.tasks import get_task

    rng = random.Random(0)
    root = tmp_path / "superglue"
    for name in ("wsc", "rte"):
        (root / name).mkdir(parents=True)
        for split in ("train", "validation"):
            rows = [record(name, rng, i) for i in range(4)]
            (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_job_config(
        tmp_path, tiny_t5_dir, "method=model_multitask", "task=superglue", f"task.data_dir={root}"
    )
    wsc = prepare_task(cfg, "wsc", tokenizer, name_prefix=True)
    rte = prepare_task(cfg, "rte", tokenizer, name_prefix=True)
    # T5's wsc_simple(label="wsc:") and glue(benchmark_name="rte"): "wsc: ...", "rte ..."
    alone = get_task("wsc").examples("validation", str(root / "wsc"))
    assert [e.inputs for e in wsc.dev_examples] == [f"wsc: {e.inputs}" for e in alone]
    assert wsc.dev_examples[0].inputs.startswith("wsc: The cat sat on the mat because *it*")
    assert all(e.inputs.startswith("rte hypothesis: ") for e in rte.train_examples)
    # without the mixture (prompt and model tuning) the inputs are taskless, as before
    plain = prepare_task(cfg, "wsc", tokenizer)
    assert [e.inputs for e in plain.dev_examples] == [e.inputs for e in alone]


def test_a_toy_model_tuning_run_records_the_lm_adapt_steps_its_name_says(tmp_path):
    """`…-lm500-…` in the name, `lm_adapt_steps: None` in result.json before (while the results
    frame read 500 from config.yaml); `lm_adapt_source: none` says no LM adaptation applies."""
    from test_toy_world import toy_config

    cfg = toy_config(
        tmp_path,
        "model=toy_small",
        "method=model",
        "trainer.steps=1",
        "trainer.eval_every=1",
        "task.max_eval_examples=4",
    )
    assert "-span_corruption-lm500-model-" in cfg.name
    run_dir = tmp_path / cfg.name
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["objective"], result["lm_adapt_steps"], result["lm_adapt_source"]) == (
        "span_corruption",
        500,
        "none",
    )
