"""repro.causal: prompt tuning a frozen decoder-only LM gives what PEFT's causal prompt tuning
gives, on tiny random GPT-NeoX (Pythia) and Llama configs: the loss, the logits of every target
token, the prompt's gradient, greedy output (KV cache, left padding) and label ranking."""

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    LlamaConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from repro.causal import PromptedCausalLM, is_causal_lm
from repro.prompts import SoftPrompt

VOCAB, WIDTH, P = 97, 32, 5
SHAPE = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4)
CONFIGS = {
    "gpt_neox": lambda: GPTNeoXConfig(
        **SHAPE, intermediate_size=64, max_position_embeddings=128, eos_token_id=2, pad_token_id=0
    ),
    "llama": lambda: LlamaConfig(
        **SHAPE,
        intermediate_size=64,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=1,
    ),
}


def backbone(family: str):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family]())
    return model.eval()


def batch():
    """Three inputs of lengths 6, 3, 7 (left-padded to 7) and targets of 2, 4, 1 tokens (eos
    last; right-padded with -100)."""
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(3, VOCAB, (n,), generator=g) for n in (6, 3, 7)]
    targets = [
        torch.cat([torch.randint(3, VOCAB, (n - 1,), generator=g), torch.tensor([2])])
        for n in (2, 4, 1)
    ]
    width, length = max(map(len, inputs)), max(map(len, targets))
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    labels = torch.full((3, length), -100)
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        ids[i, width - len(x) :], mask[i, width - len(x) :] = x, 1
        labels[i, : len(y)] = y
    return ids, mask, labels


def both(family: str):
    """Ours and PEFT's on one frozen backbone, the same prompt in both."""
    ours = PromptedCausalLM(backbone(family), SoftPrompt(torch.randn(P, WIDTH) * 0.5))
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)
    peft = get_peft_model(backbone(family), config).eval()
    with torch.no_grad():
        peft.prompt_encoder["default"].embedding.weight.copy_(ours.prompt.weight)
    return ours, peft


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_loss_target_logits_and_prompt_gradient_equal_pefts(family):
    ours, peft = both(family)
    ids, mask, labels = batch()
    loss, logits = ours(ids, mask, labels)
    loss.backward()

    full_ids = torch.cat([ids, labels.clamp(min=0)], dim=1)
    full_mask = torch.cat([mask, (labels != -100).long()], dim=1)
    lm_labels = torch.cat([torch.full_like(ids, -100), labels], dim=1)
    out = peft(input_ids=full_ids, attention_mask=full_mask, labels=lm_labels)
    out.loss.backward()

    start = P + ids.shape[1] - 1
    theirs = out.logits[:, start : start + labels.shape[1]].float()
    keep = labels != -100
    torch.testing.assert_close(loss, out.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits[keep], theirs[keep], rtol=1e-5, atol=1e-5)
    grad = peft.prompt_encoder["default"].embedding.weight.grad
    torch.testing.assert_close(ours.prompt.weight.grad, grad, rtol=1e-4, atol=1e-7)
    assert ours.prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ours.backbone.parameters())


def peft_greedy(peft, ids, mask, steps: int) -> torch.Tensor:
    """Greedy decoding by PEFT's own forward, without a cache: each step runs the whole
    sequence (prompt, input, the tokens so far) and takes the argmax of its last logits."""
    new = ids[:, :0]
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.cat([ids, new], dim=1)
            seq_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            logits = peft(input_ids=seq, attention_mask=seq_mask).logits
            new = torch.cat([new, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return new


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_greedy_output_with_the_kv_cache_and_left_padding_equals_pefts_forward(family):
    """Our cached greedy decoding gives the tokens PEFT's forward picks one step at a time."""
    ours, peft = both(family)
    ids, mask, _ = batch()
    new = ours.generate(ids, mask, max_new_tokens=6, eos_token_id=-1)  # -1: never stops early
    assert new.shape == (3, 6)
    assert torch.equal(new, peft_greedy(peft, ids, mask, 6))


@pytest.mark.xfail(
    strict=False,  # a record of another library's behaviour, not a gate on its next release
    reason="observed with peft 0.21.2 + transformers 5.25: PeftModelForCausalLM.generate (prompt "
    "tuning, KV cache, left padding) does not continue as its own forward does: its tokens leave "
    "the forward's argmax from the 2nd-3rd new token on, on these tiny models (with peft 0.22.0 "
    "it does: XPASS). So the suite decodes with its own loop (PromptedCausalLM.generate), "
    "checked against PEFT's forward above",
)
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_pefts_generate_continues_as_its_forward_does(family):
    _, peft = both(family)
    ids, mask, _ = batch()
    out = peft.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=6,
        do_sample=False,
        num_beams=1,
        eos_token_id=-1,  # never stops early
        pad_token_id=0,
    )
    assert torch.equal(out[:, ids.shape[1] :], peft_greedy(peft, ids, mask, 6))


def test_generation_stops_at_eos_and_pads_after_it():
    ours, _ = both("llama")
    ids, mask, _ = batch()
    free = ours.generate(ids, mask, max_new_tokens=4, eos_token_id=-1)
    stop = int(free[0, 1])  # row 0's second token as eos: row 0 stops there
    out = ours.generate(ids, mask, max_new_tokens=4, eos_token_id=stop, pad_token_id=0)
    first = [int((row == stop).nonzero()[0]) if (row == stop).any() else None for row in free]
    for row, at in zip(out, first, strict=True):
        if at is not None:
            assert (row[at + 1 :] == 0).all() and row[at] == stop
    assert first[0] is not None and first[0] <= 1


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_score_candidates_is_each_targets_summed_log_likelihood(family):
    ours, _ = both(family)
    ids, mask, _ = batch()
    candidates = [[5, 2], [7, 8, 2], [2]]
    scores = ours.score_candidates(ids, mask, candidates)
    assert scores.shape == (3, 3)
    for c, cand in enumerate(candidates):
        labels = torch.tensor(cand).expand(3, -1)
        _, logits = ours(ids, mask, labels)
        expected = logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0].sum(-1)
        torch.testing.assert_close(scores[:, c], expected)
    assert (scores < 0).all()


def test_the_family_is_read_from_the_config_and_a_t5_is_refused():
    t5 = T5ForConditionalGeneration(
        T5Config(vocab_size=VOCAB, d_model=WIDTH, d_ff=64, num_layers=1, num_heads=2, d_kv=8)
    )
    assert not is_causal_lm(t5.config) and is_causal_lm(backbone("gpt_neox").config)
    with pytest.raises(ValueError, match="encoder-decoder model .* repro.model .PromptedT5"):
        PromptedCausalLM(t5, SoftPrompt(torch.zeros(P, WIDTH)))
    with pytest.raises(ValueError, match=r"prompt shape \(5, 16\) does not fit .* width is 32"):
        PromptedCausalLM(backbone("llama"), SoftPrompt(torch.zeros(P, 16)))


# --- a task's example as a causal sequence (encode_causal) and its left-padded batch ----------


def bpe_tokenizer(adds_bos: bool):
    """A byte-level BPE tokenizer trained here on a few sentences (GPT-2's kind), with eos and
    pad; with ``adds_bos`` its post-processor puts bos in front, as Llama's tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the movie was great\n", "positive negative\n", "premise: a cat sat. hypothesis:"]
    special = ["<pad>", "<s>", "</s>"]
    tok.train_from_iterator(
        corpus * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=special)
    )
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize("adds_bos", [False, True])
def test_an_example_becomes_bos_input_separator_then_target_eos(adds_bos):
    from repro.causal import encode_causal
    from repro.tasks.base import Example

    tok = bpe_tokenizer(adds_bos)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    examples = [Example("the movie was great", "positive"), Example("a cat sat", "negative")]
    enc = encode_causal(examples, tok, max_input_length=64, max_target_length=8)
    head = [tok.bos_token_id] if adds_bos else []
    for example, x, y in zip(examples, enc.input_ids, enc.labels, strict=True):
        assert x == [*head, *ids(example.inputs), *ids("\n")]
        assert y == [*ids(example.targets), tok.eos_token_id]
    assert (enc.n_truncated_inputs, enc.n_truncated_targets) == (0, 0)
    # too long: the input loses its end, never the separator; the target keeps its eos
    cut = encode_causal(examples[:1], tok, max_input_length=len(head) + 3, max_target_length=2)
    assert cut.input_ids[0] == [*head, *ids(examples[0].inputs)[:2], *ids("\n")]
    assert cut.labels[0] == [ids("positive")[0], tok.eos_token_id]
    assert (cut.n_truncated_inputs, cut.n_truncated_targets) == (1, int(len(ids("positive")) > 1))
    with pytest.raises(ValueError, match="max_input_length 1 leaves no room"):
        encode_causal(examples, tok, max_input_length=1, max_target_length=8)


def tiny_llama(tok, positions: str) -> PromptedCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        **{**SHAPE, "vocab_size": len(tok)},
        intermediate_size=64,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.3,  # at the default 0.02 a random model's logits are nearly uniform
    )
    backbone = AutoModelForCausalLM.from_config(config).eval()
    return PromptedCausalLM(backbone, SoftPrompt(torch.randn(P, WIDTH) * 0.5), positions=positions)


def left_padded_batch(tok):
    from repro.causal import encode_causal
    from repro.data import collate
    from repro.tasks.base import Example

    examples = [Example("the movie was great", "positive"), Example("a cat", "negative")]
    enc = encode_causal(examples, tok, max_input_length=32, max_target_length=8)
    batch = collate([enc[i] for i in range(2)], tok.pad_token_id, padding_side="left")
    alone = [collate([enc[i]], tok.pad_token_id, padding_side="left") for i in range(2)]
    return enc, batch, alone


@pytest.mark.parametrize("positions", ["peft", "unpadded"])
def test_left_padding_moves_an_example_only_under_pefts_positions(positions):
    """Under PEFT's positions a left-padded example's input sits further from the prompt than
    alone, so its loss and its output depend on its batch; under "unpadded" the batch's loss is
    the mean of each example's own loss (weighted by its target tokens) and each decodes as
    alone."""
    tok = bpe_tokenizer(False)
    enc, batch, alone = left_padded_batch(tok)
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()
    model = tiny_llama(tok, positions)
    loss, _ = model(**batch)
    counts = [len(y) for y in enc.labels]
    own = [model(**b)[0] for b in alone]
    weighted = sum(x * n for x, n in zip(own, counts, strict=True)) / sum(counts)
    new = model.generate(
        batch["input_ids"], batch["attention_mask"], max_new_tokens=5, eos_token_id=-1
    )
    by_itself = [
        model.generate(b["input_ids"], b["attention_mask"], 5, eos_token_id=-1) for b in alone
    ]
    if positions == "unpadded":
        torch.testing.assert_close(loss, weighted, rtol=1e-5, atol=1e-6)
        assert torch.equal(new, torch.cat(by_itself))
    else:
        assert abs(float(loss) - float(weighted)) > 1e-3
        assert torch.equal(new[0], by_itself[0][0])  # the longest input has no padding


@pytest.mark.parametrize("positions", ["peft", "unpadded"])
def test_a_tuned_prompt_makes_each_input_decode_its_target(positions):
    """encode_causal + collate(padding_side="left") + PromptedCausalLM: 100 Adam steps on the
    prompt alone (the backbone frozen) and greedy decoding gives each example's target."""
    tok = bpe_tokenizer(False)
    _, batch, _ = left_padded_batch(tok)
    model = tiny_llama(tok, positions)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        model(**batch)[0].backward()
        optimizer.step()
    new = model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=8)
    assert [tok.decode(row, skip_special_tokens=True) for row in new] == ["positive", "negative"]
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in frozen.items())


def test_positions_must_be_one_the_module_knows():
    with pytest.raises(ValueError, match="positions must be one of peft, unpadded; got 'mask'"):
        PromptedCausalLM(backbone("llama"), SoftPrompt(torch.zeros(P, WIDTH)), positions="mask")
