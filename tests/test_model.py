"""The prompted frozen T5: invariants, and agreement with an independent implementation (PEFT)."""

import json

import pytest
import torch

from repro.backbone import fuse_gelu, load_backbone, set_dropout
from repro.model import PromptedT5, token_loss
from repro.prompts import SoftPrompt, init_prompt

INPUTS = ["premise: The cat sat on the mat. hypothesis: a dog ran", "question: who sat?"]
TARGETS = ["not_entailment", "True"]


def batch(tokenizer, inputs=INPUTS, targets=TARGETS):
    enc = tokenizer(inputs, return_tensors="pt", padding=True)
    labels = tokenizer(targets, return_tensors="pt", padding=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    return enc.input_ids, enc.attention_mask, labels


def prompted(tiny_t5_dir, p=5, dtype="float32", seed=0):
    backbone = load_backbone(tiny_t5_dir, dtype=dtype)
    table = backbone.get_input_embeddings().weight
    return PromptedT5(backbone, SoftPrompt(init_prompt("random_uniform", table, p, seed=seed)))


def test_backbone_is_frozen_and_only_the_prompt_trains(tiny_t5_dir):
    model = prompted(tiny_t5_dir)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["prompt.weight"]
    assert model.prompt.weight.dtype == torch.float32


def test_after_one_step_only_the_prompt_changed(tiny_t5_dir, tokenizer):
    model = prompted(tiny_t5_dir).train()
    set_dropout(model, 0.1)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    prompt_before = model.prompt.weight.detach().clone()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    loss, _ = model(*batch(tokenizer))
    loss.backward()
    optimizer.step()
    after = model.backbone.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"backbone tensor {name} changed"
    # The backward pass reached the prompt and formed no gradient for any backbone parameter
    # (the parameters themselves: state_dict() tensors are detached and never hold a .grad).
    assert model.prompt.weight.grad is not None and model.prompt.weight.grad.abs().sum() > 0
    with_grad = [n for n, p in model.backbone.named_parameters() if p.grad is not None]
    assert with_grad == [], f"backbone parameters with a gradient: {with_grad[:5]}"
    assert not torch.equal(prompt_before, model.prompt.weight.detach())
    # and the backbone is bit-equal to the checkpoint on disk
    reloaded = load_backbone(tiny_t5_dir).state_dict()
    assert all(torch.equal(reloaded[k], after[k]) for k in reloaded)


def test_loss_logits_and_generation_equal_peft(tiny_t5_dir, tokenizer):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    p = 7
    ours = prompted(tiny_t5_dir, p=p).eval()
    peft_model = get_peft_model(
        load_backbone(tiny_t5_dir, fused_gelu=False),  # stock transformers on PEFT's side
        PromptTuningConfig(
            task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=p, num_transformer_submodules=1
        ),
    ).eval()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(ours.prompt.weight)

    input_ids, mask, labels = batch(tokenizer)
    loss, logits = ours(input_ids, mask, labels)
    reference = peft_model(input_ids=input_ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(logits, reference.logits.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, reference.loss, rtol=1e-5, atol=1e-6)

    ours_tokens = ours.generate(input_ids, mask, max_new_tokens=8)
    peft_tokens = peft_model.generate(
        input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=False
    )
    assert torch.equal(ours_tokens, peft_tokens)

    # gradients reach the prompt identically
    ours.zero_grad()
    ours(input_ids, mask, labels)[0].backward()
    peft_model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
    torch.testing.assert_close(
        ours.prompt.weight.grad,
        peft_model.prompt_encoder["default"].embedding.weight.grad,
        rtol=1e-4,
        atol=1e-6,
    )


def test_right_padding_does_not_change_unpadded_results(tiny_t5_dir, tokenizer):
    model = prompted(tiny_t5_dir).eval()
    short = ["question: who sat?"]
    alone = batch(tokenizer, short, ["True"])
    padded = batch(tokenizer, [*short, INPUTS[0]], ["True", "not_entailment"])
    assert alone[0].shape[1] < padded[0].shape[1]  # the short input really is padded
    _, logits_alone = model(*alone)
    _, logits_padded = model(*padded)
    length = logits_alone.shape[1]
    torch.testing.assert_close(logits_padded[0, :length], logits_alone[0], rtol=1e-5, atol=1e-5)
    gen_alone = model.generate(alone[0], alone[1], max_new_tokens=6)
    gen_padded = model.generate(padded[0], padded[1], max_new_tokens=6)
    assert gen_alone[0].tolist() == gen_padded[0, : gen_alone.shape[1]].tolist()


def test_candidate_scores_are_target_log_likelihoods(tiny_t5_dir, tokenizer):
    model = prompted(tiny_t5_dir).eval()
    input_ids, mask, _ = batch(tokenizer)
    candidates = [tokenizer(w).input_ids for w in ["True", "False", "entailment"]]
    scores = model.score_candidates(input_ids, mask, candidates)
    assert scores.shape == (2, 3)
    for c, ids in enumerate(candidates):
        labels = torch.tensor([ids, ids])
        loss, logits = model(input_ids, mask, labels)
        per_token = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(scores[:, c], per_token.sum(-1))
        torch.testing.assert_close(-scores[:, c].sum() / labels.numel(), loss)


def test_bf16_backbone_keeps_fp32_prompt_and_trains(tiny_t5_dir, tokenizer):
    model = prompted(tiny_t5_dir, dtype="bfloat16").train()
    assert model.backbone.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.prompt.weight.dtype == torch.float32
    loss, logits = model(*batch(tokenizer))
    assert logits.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert model.prompt.weight.grad.dtype == torch.float32
    assert model.prompt.weight.grad.abs().sum() > 0


def test_z_loss_adds_the_squared_log_partition():
    logits = torch.randn(2, 3, 11)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    keep = labels != -100
    expected_z = logits[keep].logsumexp(-1).pow(2).mean()
    delta = token_loss(logits, labels, z_loss=1e-4) - token_loss(logits, labels)
    torch.testing.assert_close(delta, 1e-4 * expected_z)


def test_prompt_of_another_width_is_refused(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    with pytest.raises(ValueError, match=r"prompt shape \(4, 64\) does not fit.*d_model is 32"):
        PromptedT5(backbone, SoftPrompt(torch.zeros(4, 64)))


def test_load_backbone_errors_are_clear(tmp_path, tiny_t5_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "nope")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1 is set: pass a local directory"):
        load_backbone("google/t5-base-lm-adapt")
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="'vit' model, neither a T5-family encoder-decoder"):
        load_backbone(vit)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_backbone(tiny_t5_dir, dtype="fp8")


def test_fused_gelu_is_gelu_new_in_one_kernel(tiny_t5_dir, tokenizer):
    """Every gated-GELU activation is swapped; outputs and prompt gradients stay gelu_new's."""
    from transformers.activations import NewGELUActivation

    stock = load_backbone(tiny_t5_dir, fused_gelu=False)
    n_gelu = sum(type(m) is NewGELUActivation for m in stock.modules())
    assert n_gelu == stock.config.num_layers + stock.config.num_decoder_layers
    fused = load_backbone(tiny_t5_dir)  # the default
    assert not any(type(m) is NewGELUActivation for m in fused.modules())
    assert sum(type(m) is torch.nn.GELU for m in fused.modules()) == n_gelu
    assert fuse_gelu(fused) == 0  # idempotent

    x = torch.linspace(-8, 8, 10_001)
    torch.testing.assert_close(torch.nn.GELU("tanh")(x), NewGELUActivation()(x), rtol=0, atol=1e-6)

    table = stock.get_input_embeddings().weight
    prompt = init_prompt("random_uniform", table, 4, seed=0)
    input_ids, mask, labels = batch(tokenizer)
    grads = []
    for backbone in (stock, fused):
        model = PromptedT5(backbone, SoftPrompt(prompt.clone()))
        loss, logits = model(input_ids, mask, labels)
        loss.backward()
        grads.append((loss, logits, model.prompt.weight.grad))
    (loss0, logits0, grad0), (loss1, logits1, grad1) = grads
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits1, logits0, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(grad1, grad0, rtol=1e-4, atol=1e-6)
