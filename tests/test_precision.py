"""trainer.precision: what `auto` resolves to where, the context it computes in, and that a CPU
run of today's default is the fp32 run of before, bit for bit."""

import json
import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_run import CONF, metric_lines, smoke_config

from repro import rundir
from repro.collect.frame import row_from_result, to_frame
from repro.job.experiment import run_experiment
from repro.precision import Precision, resolve_precision
from repro.resolve import load_config

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def test_auto_is_fp32_on_a_cpu():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: CPU autocast (trainer=official)


def test_auto_is_bf16_on_a_gpu_with_bf16_and_fp32_without(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("tf32", CUDA) == "tf32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    assert resolve_precision("auto", CUDA) == "fp32"
    with pytest.raises(ValueError, match="Tesla V100-SXM2-16GB has no bf16; use trainer.prec"):
        resolve_precision("bf16", CUDA)


def test_tf32_on_a_cpu_is_fp32_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="repro.precision"):
        assert resolve_precision("tf32", CPU) == "fp32"
    assert "trainer.precision=tf32 means nothing on cpu" in caplog.text


def test_an_unknown_precision_is_one_line():
    with pytest.raises(ValueError, match=r"trainer.precision='fp16' is not allowed; choose one"):
        resolve_precision("fp16", CPU)


def test_bf16_computes_matmuls_in_bf16_and_keeps_the_loss_fp32():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with Precision("bf16", CPU):
        product = a @ b
        loss = torch.nn.functional.cross_entropy(product, torch.tensor([0, 1, 2, 0]))
    assert product.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert (a @ b).dtype == torch.float32  # left on exit
    context = Precision("bf16", CPU)
    for _ in range(2):  # reusable: entered around every step and evaluation
        with context:
            assert torch.is_autocast_enabled("cpu")
        assert not torch.is_autocast_enabled("cpu")


def test_fp32_on_a_cpu_is_plain_fp32_bit_for_bit():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(16, 16), torch.randn(5, 16)
    with Precision("fp32", CPU):
        inside = layer(x)
    assert torch.equal(inside, layer(x))


def test_cuda_matmuls_are_tf32_inside_bf16_and_tf32_and_ieee_inside_fp32(monkeypatch):
    monkeypatch.setattr(torch, "autocast", NullAutocast)  # CUDA autocast needs a CUDA build
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    seen = {}
    for name in ("bf16", "tf32", "fp32"):
        with Precision(name, CUDA):
            seen[name] = matmul.fp32_precision
        assert matmul.fp32_precision == before  # restored on leaving
    assert seen == {"bf16": "tf32", "tf32": "tf32", "fp32": "ieee"}


class NullAutocast:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def compose_trainer(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides))).trainer


def test_the_papers_trainer_is_auto_and_the_official_one_bf16():
    assert compose_trainer().precision == "auto"
    assert compose_trainer("trainer=official").precision == "bf16"
    with pytest.raises(ValueError, match="trainer.precision='half' is not allowed"):
        compose_trainer("trainer.precision=half")


def files_of(run_dir):
    """What a run computed: its prompts' bytes and its metrics lines (less the wall clock)."""
    names = ["best/prompt.safetensors", "last/prompt.safetensors"]
    out = {name: (run_dir / name).read_bytes() for name in names}
    out["metrics"] = metric_lines(run_dir / "metrics.jsonl")
    return out


def test_a_default_cpu_run_is_the_fp32_run_bit_for_bit(tmp_path, tiny_t5_dir):
    short = ["trainer.steps=6", "trainer.eval_every=3", "trainer.log_every=3"]
    results = {}
    for precision in ("auto", "fp32"):
        cfg = smoke_config(
            tmp_path / precision, tiny_t5_dir, f"trainer.precision={precision}", *short
        )
        run_experiment(cfg, tmp_path / precision / "run")
        results[precision] = json.loads((tmp_path / precision / "run/result.json").read_text())
    assert results["auto"]["precision"] == results["fp32"]["precision"] == "fp32"
    assert files_of(tmp_path / "auto/run") == files_of(tmp_path / "fp32/run")
    assert results["auto"]["metrics"] == results["fp32"]["metrics"]
    # the frame carries what the run computed in; a run from before the key has NA there
    frame = to_frame([row_from_result(results["auto"]), row_from_result({"task": "rte"})])
    assert list(frame["precision"]) == ["fp32", None]


def test_a_fingerprint_from_before_the_key_reads_as_its_precision(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir)
    mine = rundir.fingerprint(cfg, None, "fp32")
    assert mine["trainer"]["precision"] == "fp32"
    old = {**mine, "trainer": {k: v for k, v in mine["trainer"].items() if k != "precision"}}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / rundir.FINGERPRINT).write_text(
        json.dumps(old | {"trainer": {**old["trainer"], "bf16_autocast": False}})
    )
    assert rundir.status_of(tmp_path / "old", mine) == "resume"  # the same run: it resumes
    (tmp_path / "old" / rundir.FINGERPRINT).write_text(
        json.dumps(old | {"trainer": {**old["trainer"], "bf16_autocast": True}})
    )
    with pytest.raises(rundir.RunDirError, match=r"differs in: trainer\.precision"):
        rundir.status_of(tmp_path / "old", mine)


def test_under_bf16_the_logits_are_computed_in_fp32_as_t5x_does(tiny_t5_dir):
    from repro.backbone import load_backbone

    backbone = load_backbone(tiny_t5_dir)
    head = backbone.get_output_embeddings()
    x = torch.randn(2, 3, head.in_features)
    assert torch.equal(head(x), torch.nn.functional.linear(x, head.weight))  # fp32: as before
    with Precision("bf16", CPU):
        assert head(x.bfloat16()).dtype == torch.float32
        ids = torch.tensor([[5, 6, 1]])
        out = backbone(input_ids=ids, decoder_input_ids=ids)
        assert out.logits.dtype == torch.float32
        assert backbone.encoder.block[0].layer[0].SelfAttention.q(x).dtype == torch.bfloat16
    copy = __import__("copy").deepcopy(backbone)  # the copy's head uses its own weight
    with torch.no_grad():
        copy.get_output_embeddings().weight.zero_()
    with Precision("bf16", CPU):
        assert not copy.get_output_embeddings()(x).any() and head(x).any()
