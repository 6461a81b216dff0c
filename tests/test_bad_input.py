"""Bad input, end to end through the CLI: each mistake gives exactly one ``error:`` line naming
the bad value and what is allowed, exit code 2, no traceback, and nothing already written is
overwritten or lost.

Most cases call the real entry (``repro.run.cli``, Hydra included) in-process to stay fast; a
few run ``python -m repro.run`` / ``python -m repro.collect`` in a subprocess to prove the same
holds for the real command line.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import repro.run
from repro.prompts import save_prompt

ROOT = Path(__file__).resolve().parents[1]
# every option of conf/model, as the error must list them (sorted, like Hydra's group listing)
MODELS = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))


# --- helpers -------------------------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def root(tmp_path):
    """A runs root that already holds a finished run, which no mistake may touch."""
    earlier = tmp_path / "runs" / "earlier"
    (earlier / "best").mkdir(parents=True)
    (earlier / "result.json").write_text(json.dumps({"status": "finished", "score": 71.5}))
    (earlier / "metrics.jsonl").write_text('{"kind": "eval", "step": 100, "score": 71.5}\n')
    save_prompt(torch.ones(3, 32), earlier / "best", step=100)
    before = snapshot(earlier)
    yield tmp_path
    assert snapshot(earlier) == before, "a bad command touched an earlier run"


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``python -m repro.run *args`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["repro.run", *args])
    code = 0
    try:
        repro.run.cli()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``python -m repro.run *args`` in this process: (exit code, stderr)."""
    code, _, err = run_cli(monkeypatch, capsys, *args)
    return code, err


# (test id, the one error line, exit code) of every checked mistake; with REPRO_BAD_INPUT_TABLE
# set, tests/conftest.py writes them as docs/bad_input.md's table when the session ends.
SEEN_ERRORS: list[tuple[str, str, int]] = []


def assert_one_error(code: int, err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert code == 2, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    SEEN_ERRORS.append((test, lines[0], code))
    return lines[0]


def write_rte(directory: Path, rows: list[dict], splits=("train", "validation")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


RTE_ROW = {"premise": "The cat sat.", "hypothesis": "A cat sat.", "label": 0, "idx": 0}


# --- mistakes caught when the config is composed ------------------------------------------------

COMPOSE_CASES = [
    # (overrides, fragments of the one error line)
    (["task=squad2"], ["task='squad2' is not allowed; choose one of:", "rte", "superglue"]),
    (["model=huge"], [f"model='huge' is not allowed; choose one of: {MODELS}"]),
    (
        ["objective=mlm"],
        [
            "objective='mlm' is not allowed; choose one of: instruct, lm_adapt, next_token, span_corruption"
        ],
    ),
    (
        ["init=zeros"],
        [
            "init='zeros' is not allowed; choose one of: class_label, from_file, random_uniform, "
            "sampled_vocab, text"
        ],
    ),
    (["prompt_len=0"], ["prompt_len must be an integer >= 1; got 0"]),
    (["prompt_len=-3"], ["prompt_len must be an integer >= 1; got -3"]),
    (["prompt_len=2.5"], ["prompt_len=2.5", "Value '2.5' of type 'float' could not be converted"]),
    (["prompt_len=ten"], ["prompt_len=ten", "'ten' of type 'str' could not be converted to Int"]),
    (
        ["trainer.batch_size=30", "trainer.grad_accum=4"],
        ["trainer.batch_size=30 is not a multiple of trainer.grad_accum=4"],
    ),
    (["trainer.steps=-1"], ["trainer.steps must be an integer >= 0; got -1"]),
    (
        ["trainer.grad_accum=banana"],
        ["trainer.grad_accum must be an integer >= 1 dividing trainer.batch_size, or auto"],
    ),
    (["trainer.grad_accum=0"], ["trainer.grad_accum must be an integer >= 1", "got 0"]),
    (["init=from_file"], ["init=from_file needs init.path=..."]),
    (["init=from_file", "init.path=/no/such/rte.npy"], ["no prompt at /no/such/rte.npy; expected"]),
    (["init=text"], ["init=text needs init.text=..."]),
    (["init.text=hello"], ["init.text only applies with init=text (got init=class_label)"]),
    (["init.path=rte.npy"], ["init.path only applies with init=from_file (got init=class_label)"]),
    (
        ["init=text", "init.text=hi", "init.text_rule=gpt"],
        ["init.text_rule='gpt' is not allowed; choose one of: peft, official"],
    ),
    (
        ["objective=span_corruption", "lm_adapt_steps=50000"],
        ["lm_adapt_steps=50000 only applies with objective=lm_adapt"],
    ),
    (["prompt_lenn=5"], ["Could not override 'prompt_lenn'", "Key 'prompt_lenn' not in 'Config'"]),
    (["prompt_len=["], ["cannot parse the overrides"]),
    (
        ["model.dtype=fp8"],
        ["model.dtype='fp8' is not allowed; choose one of: float32, bfloat16, float16"],
    ),
    (
        ["task.eval_mode=beam"],
        ["task.eval_mode='beam' is not allowed; choose one of: generate, rank"],
    ),
    (["seed=-1"], ["seed must be a non-negative integer; got -1"]),
    (["logger=tensorboard"], ["logger='tensorboard' is not allowed; choose one of: none, wandb"]),
    (["model.attn_implementation=fast"], ["model.attn_implementation='fast' is not allowed"]),
    (["model.dropout=1.0"], ["model.dropout must be in [0, 1); got 1.0"]),
    (["dry_run=true", "cost.utilisation=1.5"], ["cost.utilisation must be in (0, 1]; got 1.5"]),
    (
        ["dry_run=true", "cost.gpu=V100"],
        [
            "cost.gpu='V100' is not in the GPU table; choose one of: A100, A100-40GB, H100, "
            "H100-PCIe, H200 (or give cost.peak_tflops and cost.gpu_memory_gb for another GPU)"
        ],
    ),
    (["dry_run=true", "cost.peak_tflops=0"], ["cost.peak_tflops must be > 0; got 0.0"]),
    (
        ["dry_run=true", "cost.half_utilisation_tokens=-1"],
        ["cost.half_utilisation_tokens must be an integer >= 0; got -1"],
    ),
    (
        ["dry_run=true", "cost.calibration=/nonexistent/gpu_check.json"],
        ["cost.calibration='/nonexistent/gpu_check.json': cannot read it (No such file"],
    ),
    (["task.max_target_length=1"], ["task.max_target_length must be an integer >= 2; got 1"]),
    (
        ["trainer.batching=sorted"],
        ["trainer.batching='sorted' is not allowed; choose one of: random, bucketed"],
    ),
    (
        ["trainer.optimizer.factored=maybe"],
        ["trainer.optimizer.factored='maybe' is not allowed; choose one of: auto, true, false"],
    ),
    (["lm_adapt_source=mine"], ["lm_adapt_source='mine' is not allowed; choose one of: auto, own"]),
    # checked by repro.optim before, i.e. only once the model had loaded
    (["trainer.optimizer.lr=-1"], ["trainer.optimizer.lr must be a finite number > 0; got -1.0"]),
    (["trainer.optimizer.lr=inf"], ["trainer.optimizer.lr must be a finite number > 0; got inf"]),
    (["trainer.optimizer.decay_rate=-0.8"], ["trainer.optimizer.decay_rate must be in (0, 1]"]),
    (["trainer.optimizer.clip_threshold=0"], ["trainer.optimizer.clip_threshold must be > 0"]),
    (["trainer.optimizer.eps=-1e-30"], ["trainer.optimizer.eps must be >= 0; got -1e-30"]),
    (["trainer.optimizer.weight_decay=1"], ["trainer.optimizer.weight_decay must be in [0, 1)"]),
    (
        ["trainer.optimizer.initial_step=-1"],
        ["trainer.optimizer.initial_step must be an integer >= 0; got -1"],
    ),
    # a torch traceback and exit 1 before, once the model had loaded
    (
        ["trainer.device=banana"],
        ["trainer.device='banana' is not allowed; choose one of: auto, cpu, mps, cuda, cuda:N"],
    ),
    (["trainer.device=cuda0"], ["trainer.device='cuda0' is not allowed"]),
    (
        ["model.device_map=banana"],
        ["model.device_map='banana' is not allowed; choose one of: auto, balanced, ", "cuda:N"],
    ),
    (["trainer.z_loss=-1e-4"], ["trainer.z_loss must be a finite number >= 0; got -0.0001"]),
    (["trainer.stop_after_steps=0"], ["trainer.stop_after_steps must be an integer >= 1; got 0"]),
    (["model.d_model=0"], ["model.d_model must be an integer >= 1; got 0"]),
    # wandb.init refused these only after the model had loaded
    (
        ["logger=wandb", "logger.project=me/repro"],
        ["logger.project='me/repro' is not allowed: W&B wants 1-128 characters and none of /"],
    ),
    (["logger=wandb", f"logger.tags=[{'x' * 65}]"], ["W&B tags are 1-64 characters"]),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), COMPOSE_CASES, ids=[" ".join(c[0]) for c in COMPOSE_CASES]
)
def test_config_mistake_is_one_line(root, monkeypatch, capsys, overrides, fragments):
    code, err = cli(monkeypatch, capsys, "experiment=smoke", f"paths.root={root}", *overrides)
    assert_one_error(code, err, *fragments)
    # no run started: at most Hydra's own record of the command in a new job directory
    for job in (root / "runs").iterdir():
        if job.name != "earlier":
            assert {p.name for p in job.iterdir()} <= {".hydra", "run.log"}


def test_real_command_line_mistake_is_one_line(root):
    proc = run_module("repro.run", "model=huge", f"paths.root={root}")
    assert proc.stderr == f"error: model='huge' is not allowed; choose one of: {MODELS}\n"
    assert proc.returncode == 2


# --- mistakes found when the job starts -----------------------------------------------------------


def smoke(root: Path, tiny_t5_dir, *overrides: str) -> list[str]:
    return [
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={root}",
        f"paths.cache_dir={root / 'cache'}",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "task.max_eval_examples=8",
        *overrides,
    ]


PACKED_LAUNCHER_CASES = [
    # (override, fragment of the one error line): each silently made every job a pack of one
    ("hydra.launcher.max_members=0", "hydra.launcher.max_members must be an integer >= 1"),
    ("hydra.launcher.max_members=-2", "(or null: as many as fit); got -2"),
    ("hydra.launcher.memory_gb=-1", "hydra.launcher.memory_gb must be a finite number of GB > 0"),
    ("hydra.launcher.memory_gb=0", "(or null: each job's GPU memory, cost.memory_gb); got 0.0"),
    ("hydra.launcher.memory_gb=nan", "hydra.launcher.memory_gb must be a finite number"),
]


@pytest.mark.parametrize(
    ("override", "fragment"), PACKED_LAUNCHER_CASES, ids=[c[0] for c in PACKED_LAUNCHER_CASES]
)
def test_a_packed_launcher_option_that_means_nothing(
    root, tiny_t5_dir, monkeypatch, capsys, override, fragment
):
    """hydra.launcher.max_members=0 and memory_gb=-1 (or 0, nan) turned packing off in silence."""
    args = smoke(root, tiny_t5_dir, "dry_run=true", "prompt_len=1,5", "seed=0,1")
    code, err = cli(monkeypatch, capsys, "-m", "hydra/launcher=packed", *args, override)
    assert_one_error(code, err, fragment)
    # refused before any job was composed: Hydra's multirun.yaml only, no job directory
    assert not [p for p in (root / "multirun").glob("*/*") if p.is_dir()]


def test_offline_without_a_local_checkpoint_then_fixed(root, tiny_t5_dir, monkeypatch, capsys):
    args = [a for a in smoke(root, tiny_t5_dir, "model=base") if "model.path" not in a]
    code, err = cli(monkeypatch, capsys, *args)  # no model.path: the hub id of model=base
    assert_one_error(
        code,
        err,
        "cannot load a checkpoint from 'google/t5-base-lm-adapt'",
        "HF_HUB_OFFLINE=1 is set: pass a local directory instead",
    )
    run_dir = root / "runs/toy_keyword-base-lm_adapt100k-p20-class_label-s0"
    assert not (run_dir / "fingerprint.json").exists()  # the failed job claimed nothing
    # so the same job with the mistake fixed runs in the same directory
    code, err = cli(monkeypatch, capsys, *args, f"model.path={tiny_t5_dir}")
    assert code == 0, err
    assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"


def test_missing_local_checkpoint_dir(root, tiny_t5_dir, monkeypatch, capsys):
    nope = f"model.path={root}/nope"
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, nope, "model.build_tiny=false"))
    assert_one_error(code, err, f"checkpoint directory {root}/nope does not exist")


@pytest.mark.parametrize("build_tiny", ["true", "false"])
def test_a_model_path_naming_a_file(root, tiny_t5_dir, monkeypatch, capsys, build_tiny):
    """It said "checkpoint directory ... does not exist" (or "holds no checkpoint") before."""
    weights = tiny_t5_dir / "model.safetensors"
    args = smoke(root, tiny_t5_dir, f"model.path={weights}", f"model.build_tiny={build_tiny}")
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(
        code,
        err,
        f"{weights} is a file, not a checkpoint directory; give the directory that holds its "
        "config.json and weights",
    )


def test_a_prompt_too_large_for_memory_is_refused_before_it_is_allocated(
    root, tiny_t5_dir, monkeypatch, capsys
):
    """An allocator message that did not mention prompt_len before. The process's limit is
    fixed at 8 GB (as under `ulimit -v`), so the line is the same on every machine."""
    monkeypatch.setattr("repro.prompts.memory_limit_bytes", lambda: 8 * 10**9, raising=False)
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, "prompt_len=1000000000000"))
    assert_one_error(
        code,
        err,
        "prompt_len=1000000000000: a [1000000000000, 32] fp32 prompt is 128000.0 GB and a run "
        "holds it twice (initial and trained), more than the 8.0 GB of memory this process may "
        "use; choose a smaller prompt_len",
    )


def test_a_mixture_whose_data_cannot_load_says_so_once(root, tiny_t5_dir, monkeypatch, capsys):
    """method=model_multitask task=superglue offline printed the same hub error 8 times."""
    args = smoke(root, tiny_t5_dir, "method=model_multitask", "task=superglue")
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, "task 'boolq'")


def test_local_checkpoint_of_the_wrong_architecture(root, tiny_t5_dir, monkeypatch, capsys):
    vit = root / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, f"model.path={vit}"))
    assert_one_error(
        code,
        err,
        "holds a 'vit' model, neither a T5-family encoder-decoder (t5, mt5, umt5, ...) nor a "
        "causal LM (gpt2, gpt_neox, llama, qwen2, ...)",
    )


LORA = ("objective=next_token", "method=lora")


@pytest.mark.parametrize(
    ("model_type", "overrides", "fragments"),
    [
        # a causal LM's objective names its kind of checkpoint, as T5's do (docs/causal.md)
        (
            "gpt2",
            (),
            ["objective=lm_adapt names a T5 checkpoint, but", "is a causal LM", "next_token"],
        ),
        (
            "gpt2",
            ("objective=next_token", "model.family=t5"),
            ["model.family=t5 but", "holds a causal model ('gpt2'); set model.family=causal"],
        ),
        # LoRA's roles are T5's; each architecture's layers are known by its model_type
        # (docs/lora.md): refused in one line before the weights load
        (
            "gpt2",
            LORA,
            [
                "method=lora does not know the layers of a 'gpt2' causal LM",
                "map onto gpt_neox, llama, mistral, qwen2",
            ],
        ),
        (
            "llama",
            (*LORA, "method.target_modules=[q,wi]"),
            [
                "a llama LM has no wi (its MLP is gated: wi_0 (gate), wi_1 (up), wo)",
                "choose among q, k, v, o, wi_0, wi_1, wo",
            ],
        ),
        (
            "gpt_neox",
            (*LORA, "method.target_modules=[v,wi_0,wi_1]"),
            [
                "a gpt_neox LM has no wi_0, wi_1 (its MLP is not gated: wi, wo)",
                "choose among q, k, v, o, wi, wo",
            ],
        ),
    ],
    ids=["t5_objective", "family", "lora_architecture", "lora_wi_on_llama", "lora_wi_0_on_neox"],
)
def test_what_a_causal_lm_cannot_do_is_refused_before_its_weights_load(
    root, tiny_t5_dir, monkeypatch, capsys, model_type, overrides, fragments
):
    causal = root / model_type  # a config and no weights: each refusal comes before they are read
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"model_type": model_type}))
    args = smoke(root, tiny_t5_dir, f"model.path={causal}", *overrides)
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, *fragments)
    claimed = [p for p in (root / "runs").rglob("*.json") if "earlier" not in p.parts]
    assert not claimed  # no run directory claimed (fingerprint.json, result.json)


def test_a_causal_objective_on_t5_is_refused(root, tiny_t5_dir, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, "objective=instruct"))
    assert_one_error(code, err, "objective=instruct is a causal LM's, but", "T5 encoder-decoder")


@pytest.mark.parametrize("key", ["model.separator=:", "model.positions=unpadded"])
def test_a_causal_only_model_key_on_t5_is_refused(root, tiny_t5_dir, monkeypatch, capsys, key):
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, key))
    name = key.split("=")[0]
    assert_one_error(code, err, f"{name} applies to causal LMs only", "T5 encoder-decoder")


def test_lm_adapt_step_that_is_not_available(root, tiny_t5_dir, monkeypatch, capsys):
    args = [a for a in smoke(root, tiny_t5_dir, "model=base") if "model.path" not in a]
    code, err = cli(monkeypatch, capsys, *args, "lm_adapt_steps=50000")
    assert_one_error(
        code,
        err,
        "no LM-adapted checkpoint for model=base lm_adapt_steps=50000",
        "only 100000 was released",
        "python -m repro.lm_adapt model=base",
    )


def test_data_dir_missing_a_split(root, tiny_t5_dir, monkeypatch, capsys):
    data = write_rte(root / "rte", [RTE_ROW], splits=("train",))
    code, err = cli(
        monkeypatch, capsys, *smoke(root, tiny_t5_dir, "task=rte", f"task.data_dir={data}")
    )
    assert_one_error(
        code, err, "task 'rte': no file for split 'validation'", "expected one of", "val.jsonl"
    )


def test_data_dir_missing_a_column(root, tiny_t5_dir, monkeypatch, capsys):
    row = {k: v for k, v in RTE_ROW.items() if k != "hypothesis"}
    data = write_rte(root / "rte", [row])
    code, err = cli(
        monkeypatch, capsys, *smoke(root, tiny_t5_dir, "task=rte", f"task.data_dir={data}")
    )
    assert_one_error(
        code, err, "lacks column(s) ['hypothesis']", "expected columns ['hypothesis', 'premise'"
    )


@pytest.mark.parametrize(("value", "what"), [(None, "null"), (3, "3 (int)")])
def test_a_null_or_number_in_a_text_field(root, tiny_t5_dir, monkeypatch, capsys, value, what):
    """It trained on the text "None" (or the number's digits) before."""
    data = write_rte(root / "rte", [RTE_ROW, {**RTE_ROW, "premise": value}])
    code, err = cli(
        monkeypatch, capsys, *smoke(root, tiny_t5_dir, "task=rte", f"task.data_dir={data}")
    )
    assert_one_error(
        code,
        err,
        f"{data}/train.jsonl:2: field 'premise' is {what}, not text; task 'rte' reads it as "
        "text: fix the record or drop it",
    )


def toy_data_per_task(directory: Path, names=("toy_keyword", "toy_polarity")) -> Path:
    """Each toy task's generated files in its own sub-directory of one data dir."""
    from repro.tasks import get_task

    for name in names:
        (directory / name).mkdir(parents=True)
        get_task(name).generate(directory / name)
    return directory


def test_a_split_file_any_task_of_a_mixture_could_read_is_refused(
    root, tiny_t5_dir, monkeypatch, capsys
):
    """A mixture with one task.data_dir: DIR/train.jsonl beside DIR/<task>/ trained every task
    on DIR/train.jsonl before (both fingerprints held its SHA-256)."""
    data = toy_data_per_task(root / "data")
    for split in ("train", "validation"):
        shutil.copy(data / f"toy_keyword/{split}.jsonl", data / f"{split}.jsonl")
    args = smoke(
        root, tiny_t5_dir, "method=model_multitask", "task=toy_smoke", f"task.data_dir={data}"
    )
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(
        code,
        err,
        f"task.data_dir={data} holds train.jsonl at its top, which could be the data of any of "
        "the job's 2 tasks (toy_keyword, toy_polarity)",
        "own sub-directory",
    )
    for split in ("train", "validation"):  # each task's own files only: each reads its own
        (data / f"{split}.jsonl").unlink()
    code, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    run_dir = root / "runs/toy_smoke-tiny-span_corruption-model_multitask-s0"
    read = json.loads((run_dir / "fingerprint.json").read_text())["task"]["data_dir"]
    assert read["toy_keyword"]["train"] != read["toy_polarity"]["train"]


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_labels_not_in_the_tasks_label_set(root, tiny_t5_dir):
    data = write_rte(root / "rte", [RTE_ROW, {**RTE_ROW, "label": 7}])
    proc = run_module("repro.run", *smoke(root, tiny_t5_dir, "task=rte", f"task.data_dir={data}"))
    assert_one_error(
        proc.returncode,
        proc.stderr,
        "task 'rte': split 'train' has label(s) 7 outside the task's label set; "
        "allowed: 0 (entailment), 1 (not_entailment)",
    )
    result = json.loads(
        (root / "runs/rte-tiny-lm_adapt100k-p20-class_label-s0/result.json").read_text()
    )
    assert result["status"] == "failed" and "label(s) 7" in result["error"]


def test_prompt_file_of_the_wrong_width_is_refused_and_kept(root, tiny_t5_dir, monkeypatch, capsys):
    run_dir = root / "runs/toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    # a last/ copied from a run of a 64-wide model
    save_prompt(torch.zeros(20, 64), run_dir / "last", step=5)
    torch.save({"state": {"step": 5}}, run_dir / "last/trainer_state.pt")
    before = snapshot(run_dir / "last")
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir))
    assert_one_error(code, err, "has width 64", "the model's d_model is 32")
    assert snapshot(run_dir / "last") == before


def test_prompt_file_of_another_length_is_refused_before_loading(root, monkeypatch, capsys):
    earlier = root / "runs" / "earlier"  # its best/ holds a [3, 32] prompt; smoke has p = 20
    code, err = cli(
        monkeypatch, capsys, "experiment=smoke", f"paths.root={root}", "init=from_file",
        f"init.path={earlier}", "trainer.steps=0",
    )  # fmt: skip
    assert_one_error(
        code, err, f"init.path={earlier} holds a prompt of length 3", "set prompt_len=3"
    )


def test_prompt_file_of_another_width_is_refused_before_the_weights_load(
    root, tiny_t5_dir, monkeypatch, capsys
):
    import numpy as np

    np.save(root / "rte.npy", np.zeros((20, 768), np.float32))  # an official Base prompt
    code, err = cli(
        monkeypatch,
        capsys,
        *smoke(root, tiny_t5_dir, "init=from_file", f"init.path={root}/rte.npy"),
    )
    assert_one_error(code, err, "holds a prompt of width 768", "the model's d_model is 32")
    run_dir = root / "runs/toy_keyword-tiny-lm_adapt100k-p20-from_file-s0"
    assert not (run_dir / "fingerprint.json").exists()  # nothing claimed


EXPORT_CASES = [
    # (what the source is, extra args, fragment)
    ("missing", [], "no prompt at"),
    ("npy", [], "the prompt records no backbone; give --base-model"),
    ("lora", [], "holds a PEFT LORA adapter; only PROMPT_TUNING adapters are prompts"),
    ("npy_exists", ["--base-model", "google/t5-base-lm-adapt"], "already exists"),
]


@pytest.mark.parametrize(
    ("source", "extra", "fragment"), EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES]
)
def test_export_mistake_is_one_line_and_writes_nothing(root, capsys, source, extra, fragment):
    import numpy as np

    from repro.export import main

    np.save(root / "p.npy", np.zeros((4, 8), np.float32))
    (root / "lora").mkdir()
    (root / "lora/adapter_config.json").write_text('{"peft_type": "LORA"}')
    (root / "taken").mkdir()
    (root / "taken/file").write_text("mine")
    paths = {"missing": root / "nothing", "npy": root / "p.npy", "lora": root / "lora"}
    out = root / ("taken" if source == "npy_exists" else "out")
    before = snapshot(root)
    code = main([str(paths.get(source, root / "p.npy")), "--to", "peft", str(out), *extra])
    assert_one_error(code, capsys.readouterr().err, fragment)
    assert snapshot(root) == before


def test_dir_holding_a_finished_run_of_another_config(root, tiny_t5_dir, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir))
    assert code == 0, err
    run_dir = root / "runs/toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    before = snapshot(run_dir)
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir, "trainer.steps=4"))
    assert_one_error(
        code, err, "already holds a run of a different config (differs in: trainer.steps)"
    )
    after = snapshot(run_dir)
    # Every file of the run, Hydra's .hydra/ record included, is untouched; only .lock names
    # the last process that held the directory.
    assert ".hydra/overrides.yaml" in before
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_torn_metrics_line_is_dropped_on_resume(root, tiny_t5_dir, monkeypatch, capsys):
    run_dir = root / "runs/toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 1, "loss": 3.0}\n{"kind": "tr'
    )
    code, err = cli(monkeypatch, capsys, *smoke(root, tiny_t5_dir))
    assert code == 0, err
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("eval", 2)]


def test_collect_keeps_a_corrupt_result_as_a_row_and_says_so(root):
    sweep = root / "multirun/s"
    good, bad = sweep / "good", sweep / "bad"
    for d in (good, bad):
        d.mkdir(parents=True)
    (good / "result.json").write_text(
        json.dumps(
            {
                "status": "finished",
                "size": "tiny",
                "prompt_len": 5,
                "task": "rte",
                "seed": 0,
                "score": 60.0,
                "metrics": {"accuracy": 60.0},
            }
        )
    )
    (bad / "result.json").write_text('{"status": "fini')  # torn by a crash
    before = snapshot(sweep)
    proc = run_module("repro.collect", str(sweep), "-o", str(root / "out.csv"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "unreadable result" in line]
    assert len(warnings) == 1 and str(bad / "result.json") in warnings[0]
    assert "kept as status 'corrupt'" in warnings[0]
    import pandas as pd

    frame = pd.read_csv(root / "out.csv").set_index("run_dir")
    assert frame.loc[str(bad), "status"] == "corrupt"
    assert frame.loc[str(good), "status"] == "finished"
    assert snapshot(sweep) == before  # collect only reads


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- the later-use commands: ensemble, transfer, interpret (a run read back from best/) --------


def fake_run(directory: Path, tiny_t5_dir, task="toy_keyword", checkpoint="ckpt-a", **axes) -> Path:
    """A finished run as repro.run leaves it (config.yaml, result.json, best/), no training."""
    from omegaconf import OmegaConf
    from test_run import smoke_config

    overrides = [f"task={task}", *(f"{k}={v}" for k, v in axes.items())]
    cfg = smoke_config(directory.parent, tiny_t5_dir, *overrides)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    result = {"status": "finished", "task": task, "checkpoint": checkpoint, "score": 50.0}
    (directory / "result.json").write_text(json.dumps(result))
    save_prompt(torch.zeros(cfg.prompt_len, 32), directory / "best", task=task)
    return directory


def later_cli(module: str, capsys, *args: str) -> tuple[int, str]:
    """``python -m repro.<module> *args`` in this process: (exit code, stderr)."""
    import importlib

    code = importlib.import_module(f"repro.{module}").main(list(args))
    return code, capsys.readouterr().err


def test_ensemble_of_runs_of_different_tasks(tmp_path, tiny_t5_dir, capsys):
    a = fake_run(tmp_path / "a", tiny_t5_dir)
    b = fake_run(tmp_path / "b", tiny_t5_dir, task="toy_overlap")
    code, err = later_cli("ensemble", capsys, str(a), str(b), "-o", str(tmp_path / "out"))
    assert_one_error(
        code,
        err,
        "the runs are of different tasks (toy_keyword, toy_overlap)",
        ">= 2 runs per task",
    )
    assert not list(tmp_path.glob("out*"))


def test_ensemble_of_runs_of_different_backbones(tmp_path, tiny_t5_dir, capsys):
    a = fake_run(tmp_path / "a", tiny_t5_dir)
    b = fake_run(tmp_path / "b", tiny_t5_dir, checkpoint="ckpt-b", seed=1)
    code, err = later_cli("ensemble", capsys, str(tmp_path), "-o", str(tmp_path / "out"))
    assert_one_error(code, err, "different backbones: ckpt-a (1 run); ckpt-b (1 run)")
    assert a.exists() and b.exists() and not list(tmp_path.glob("out*"))


def test_ensemble_of_one_prompt(tmp_path, tiny_t5_dir, capsys):
    a = fake_run(tmp_path / "a", tiny_t5_dir)
    code, err = later_cli("ensemble", capsys, str(a), "-o", str(tmp_path / "out"))
    assert_one_error(code, err, "task toy_keyword has only 1 prompt", "needs >= 2 prompts")


def test_ensemble_of_prompts_of_different_lengths(tmp_path, tiny_t5_dir, capsys):
    fake_run(tmp_path / "a", tiny_t5_dir, prompt_len=3)
    fake_run(tmp_path / "b", tiny_t5_dir, prompt_len=5, seed=1)
    code, err = later_cli("ensemble", capsys, str(tmp_path), "-o", str(tmp_path / "out"))
    assert_one_error(
        code, err, "task toy_keyword: the prompts have different prompt lengths (3, 5)"
    )


def test_ensemble_of_an_empty_directory(tmp_path, capsys):
    """It spoke of "no best/ (no evaluated prompt yet ...)" before."""
    (tmp_path / "empty").mkdir()
    code, err = later_cli("ensemble", capsys, str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    assert_one_error(code, err, f"no runs found in {tmp_path / 'empty'}")
    assert "best/ (no evaluated prompt" not in err


@pytest.mark.parametrize("value", ["-5", "0"])
def test_transfer_max_examples_below_one(tmp_path, tiny_t5_dir, capsys, value):
    """--max-examples -5 scored all examples but the last 5 (a slice), 0 scored all of them."""
    a = fake_run(tmp_path / "a", tiny_t5_dir, checkpoint=str(tiny_t5_dir))
    args = [str(a), "--to", "toy_polarity", "--max-examples", value]
    code, err = later_cli("transfer", capsys, *args)
    assert_one_error(
        code,
        err,
        f"--max-examples must be an integer >= 1 (omit it to score every example); got {value}",
    )
    assert not (a / "transfer").exists()
    code, err = later_cli("transfer", capsys, *args[:-2], "--max-examples", "5")
    assert code == 0, err
    result = json.loads((a / "transfer/toy_polarity/result.json").read_text())
    assert (result["n_eval"], result["max_examples"]) == (5, 5)  # the number scored, the cap
    from repro.evaluate import score_prompt  # the same cap in the Python API

    with pytest.raises(ValueError, match=f"max_examples must be an integer >= 1; got {value}"):
        score_prompt(torch.zeros(2, 32), None, None, "toy_polarity", max_examples=int(value))


def test_transfer_between_tasks_whose_labels_cannot_be_mapped(tmp_path, tiny_t5_dir, capsys):
    a = fake_run(tmp_path / "a", tiny_t5_dir)
    code, err = later_cli("transfer", capsys, str(a), "--to", "cb")
    assert_one_error(
        code,
        err,
        "cannot map the answers of toy_keyword (negative, positive) onto cb (entailment, "
        "contradiction, neutral)",
        "same number of classes",
    )
    assert not (a / "transfer").exists()


@pytest.mark.parametrize(
    "module, extra",
    [("ensemble", ("-o", "out")), ("transfer", ("--to", "toy_polarity")), ("interpret", ())],
)
def test_later_command_on_a_run_dir_without_best(module, extra, tmp_path, tiny_t5_dir, capsys):
    run = fake_run(tmp_path / "a", tiny_t5_dir)
    shutil.rmtree(run / "best")
    code, err = later_cli(module, capsys, str(run), *extra)
    assert_one_error(code, err, f"{run} has no best/", "give a run directory that holds best/")


@pytest.mark.parametrize(
    "module, extra", [("transfer", ("--to", "toy_polarity")), ("interpret", ())]
)
def test_later_command_on_a_run_whose_best_prompt_is_torn(
    module, extra, tmp_path, tiny_t5_dir, capsys
):
    """safetensors' bare "Error while deserializing header" (no path) before."""
    run = fake_run(tmp_path / "a", tiny_t5_dir, checkpoint=str(tiny_t5_dir))
    prompt = run / "best/prompt.safetensors"
    prompt.write_bytes(prompt.read_bytes()[:60])
    code, err = later_cli(module, capsys, str(run), *extra)
    assert_one_error(
        code,
        err,
        f"{prompt} cannot be read (",
        f"the run's best prompt is lost: delete {run} and launch its command again",
    )


# --- one rule for named outputs: an existing one is refused unless --overwrite ------------------


def _output_case(command: str, tmp_path: Path, tiny_t5_dir) -> tuple[list[str], list[Path]]:
    """(the command's arguments, the outputs it writes) on inputs that make it succeed."""
    import numpy as np
    import pandas as pd

    if command in ("collect", "ensemble", "transfer", "interpret"):
        a = fake_run(tmp_path / "runs/a", tiny_t5_dir, checkpoint=str(tiny_t5_dir))
        fake_run(tmp_path / "runs/b", tiny_t5_dir, checkpoint=str(tiny_t5_dir), seed=1)
    if command == "collect":
        return [str(tmp_path / "runs"), "-o", str(tmp_path / "out.csv")], [tmp_path / "out.csv"]
    if command == "ensemble":
        out = tmp_path / "table3"
        return [str(tmp_path / "runs"), "-o", str(out)], [
            out.with_suffix(x) for x in (".csv", ".md")
        ]
    if command == "transfer":
        return [str(a), "--to", "toy_polarity"], [a / "transfer/toy_polarity/result.json"]
    if command == "interpret":
        return [str(a)], [a / "interpret" / name for name in ("neighbours.csv", "summary.csv")]
    if command == "export":
        np.save(tmp_path / "p.npy", np.zeros((4, 8), np.float32))
        return [str(tmp_path / "p.npy"), "--to", "repro", str(tmp_path / "out")], [tmp_path / "out"]
    if command == "tables":
        rows = [
            {"task": "qqp", "eval_task": e, "seed": 0, "status": "finished", "metric/f1": 80}
            for e in ("qqp", "mrpc")
        ]
        pd.DataFrame(rows).to_csv(tmp_path / "frame.csv", index=False)
        return [str(tmp_path / "frame.csv"), "-o", str(tmp_path / "t.md")], [tmp_path / "t.md"]
    from test_plots import run_frame

    run_frame().to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "fig"
    args = [str(tmp_path / "runs.csv"), "-o", str(out), "--tasks", "t1", "t2"]
    return args, [out / "figure3b_init.png"]


def _main(command: str):
    import importlib

    module = {"collect": "repro.collect.cli", "plots": "repro.plots.cli"}.get(command)
    return importlib.import_module(module or f"repro.{command}").main


OUTPUT_COMMANDS = ["collect", "ensemble", "export", "tables", "plots", "transfer", "interpret"]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_a_named_output_that_exists_is_refused_unless_overwrite(
    command, tmp_path, tiny_t5_dir, capsys
):
    """repro.ensemble -o X and repro.collect -o X (and the others) replaced files silently."""
    import warnings

    args, outputs = _output_case(command, tmp_path, tiny_t5_dir)
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        if command == "export":
            (out / "mine").parent.mkdir(parents=True, exist_ok=True)
            (out / "mine").write_text("mine")
        else:
            out.write_text("mine")
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repro.collect's CollectWarning on a fake run
        code = _main(command)(args)
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"{outputs[0]}",
        "already exists; choose another output or pass --overwrite to replace it",
    )
    assert snapshot(tmp_path) == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = _main(command)([*args, "--overwrite"])
    assert code == 0, capsys.readouterr().err
    for out in outputs:  # replaced, whole
        assert not (out / "mine").exists() if out.is_dir() else out.read_bytes() != b"mine"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".old"))]
