"""Prompt ensembling (Table 3): one batched forward equals N separate passes; the votes and
their tie-breaks; the command end to end on three tiny-model prompts."""

import json

import pandas as pd
import pytest
import torch

from repro.backbone import load_backbone
from repro.ensemble import (
    MultiPromptT5,
    main,
    majority_vote,
    predict_all,
    prepend_prompts,
    rank_vote,
)
from repro.evaluate import predict
from repro.model import PromptedT5
from repro.prompts import SoftPrompt


def test_prepend_prompts_puts_prompt_r_mod_n_in_front_of_row_r():
    prompts = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)  # prompt n is all n
    embeds = torch.full((6, 5, 4), -1.0)
    out, mask = prepend_prompts(prompts, embeds, torch.ones(6, 5, dtype=torch.long))
    assert out.shape == (6, 7, 4) and mask.shape == (6, 7) and bool(mask.all())
    assert out[:, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]
    assert bool((out[:, 2:] == -1).all())
    with pytest.raises(ValueError, match="not a whole number of copies"):
        prepend_prompts(prompts, embeds[:5], torch.ones(5, 5))


@pytest.fixture(scope="module")
def backbone(tiny_t5_dir):
    return load_backbone(tiny_t5_dir).eval()


def test_one_batched_forward_predicts_what_n_separate_passes_predict(backbone, tokenizer):
    torch.manual_seed(0)
    prompts = torch.randn(3, 4, backbone.config.d_model)
    texts = ["sentence: the cat sat", "sentence: a dog ran to the house", "a", "the tree"]
    ids = [tokenizer(t).input_ids for t in texts]
    labels = ["negative", "positive"]
    batched = MultiPromptT5(backbone, prompts)
    gen, none = predict_all(batched, tokenizer, ids, batch_size=3, max_new_tokens=5)
    ranked, scores = predict_all(batched, tokenizer, ids, candidates=labels, batch_size=3)
    assert none is None and scores.shape == (4, 3, 2)
    label_ids = [tokenizer(c).input_ids for c in labels]
    for n in range(3):
        single = PromptedT5(backbone, SoftPrompt(prompts[n])).eval()
        alone = predict(single, tokenizer, ids, mode="generate", batch_size=3, max_new_tokens=5)
        assert [row[n] for row in gen] == alone
        alone = predict(single, tokenizer, ids, mode="rank", candidates=labels, batch_size=3)
        assert [row[n] for row in ranked] == alone
        batch = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(x) for x in ids], batch_first=True, padding_value=0
        )
        mask = (torch.arange(batch.shape[1]) < torch.tensor([len(x) for x in ids])[:, None]).long()
        torch.testing.assert_close(
            scores[:, n], single.score_candidates(batch, mask, label_ids), atol=1e-4, rtol=1e-4
        )


def test_majority_vote_ties_go_to_the_earliest_prompt_among_the_tied_strings():
    assert majority_vote([["a", "b", "b"], ["c", "b", "a"], ["x", "y", "y", "x"]]) == [
        "b",
        "c",
        "x",
    ]


def test_rank_vote_ties_go_to_the_highest_summed_log_likelihood():
    scores = torch.tensor(
        [
            [[-1.0, -2.0], [-3.0, -0.1], [-0.5, -4.0]],  # votes 2:1 for label 0
            [[-1.0, -2.0], [-3.0, -0.5]],  # 1:1; sums -4.0 vs -2.5 → label 1
        ][0:1]
    )
    assert rank_vote(scores, ["no", "yes"]) == ["no"]
    tie = torch.tensor([[[-1.0, -2.0], [-3.0, -0.5]]])
    assert rank_vote(tie, ["no", "yes"]) == ["yes"]
    even = torch.tensor([[[-1.0, -2.0], [-2.0, -1.0]]])  # equal sums: the lower class id
    assert rank_vote(even, ["no", "yes"]) == ["no"]


@pytest.mark.slow
def test_ensemble_command_writes_table_3_rows_that_reproduce_each_runs_score(
    prompt_runs, tmp_path, capsys
):
    runs = [prompt_runs[f"kw-s{s}"] for s in range(3)]
    assert main([*map(str, runs), "-o", str(tmp_path / "ens"), "--device", "cpu"]) == 0
    frame = pd.read_csv(tmp_path / "ens.csv")
    rows = frame.set_index("ensemble_row")
    assert list(rows.index) == ["average", "best", "ensemble"]
    assert set(frame["n_prompts"]) == {3} and set(frame["task"]) == {"toy_keyword"}
    recorded = [json.loads((r / "result.json").read_text())["score"] for r in runs]
    # each prompt's score out of the one batched pass is the score its own run recorded
    assert rows.loc["average", "score"] == pytest.approx(sum(recorded) / 3)
    assert rows.loc["best", "score"] == pytest.approx(max(recorded))
    assert 0 <= rows.loc["ensemble", "score"] <= 100
    table = (tmp_path / "ens.md").read_text()
    assert "| toy_keyword | 3 |" in table and "90.5 / 91.0 / 91.3" in table
    assert "one batched pass" in capsys.readouterr().out
