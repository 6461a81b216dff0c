"""``python -m repro.toyworld pilot`` (issue 19's groundwork): a tiny run writes its files, bad
settings stop before any work, and the defaults leave the shipped world as it is."""

import json
from dataclasses import asdict
from pathlib import Path

from repro.toyworld import world
from repro.toyworld.build import BuildConfig
from repro.toyworld.pilot import PilotConfig

MODELS = Path(world.__file__).resolve().parents[1] / "toy_models"


def test_defaults_are_the_shipped_world():
    shares = PilotConfig().shares()
    assert shares == {k: weight for k, (_, weight) in world.DOC_KINDS.items()}
    assert list(world.documents(300, 0, shares=shares)) == list(world.documents(300, 0))
    shipped = json.loads((MODELS / "manifest.json").read_text())["config"]
    build = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(BuildConfig()).items()}
    assert {k: build[k] for k in shipped} == shipped
    assert PilotConfig().n_docs == shipped["n_docs"]


def test_shares_reshape_the_corpus():
    docs = list(world.documents(200, 0, shares={"review": 1.0, "qa": 0.0, "story": 0.0}))
    for doc in docs:
        assert "?" not in doc and ("positive" in doc or "negative" in doc), doc
    assert docs != list(world.documents(200, 0))


def test_tiny_pilot_writes_json_and_table(tmp_path, capsys):
    from repro.toyworld.__main__ import main

    out = tmp_path / "pilot"
    args = ["pilot", "-o", str(out), "--d-models", "16", "32", "--steps", "4", "--every", "2"]
    assert main([*args, "--probe-items", "10", "--n-docs", "400", "--review-share", "0.6"]) == 0
    result = json.loads((out / "pilot.json").read_text())
    assert result["shares"] == {"review": 0.6, "qa": 0.4, "story": 0.0}
    # the shipped tokenizer as the repository names it, not this machine's path (issue 30 item 5)
    assert result["tokenizer"] == "repro/toy_models/toy_small/span_corruption"
    assert [s["size"] for s in result["sizes"]] == ["d16", "d32"]
    assert result["sizes"][0]["params"] < result["sizes"][1]["params"]
    assert result["sizes"][1]["shape"] == {
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 4,
        "d_ff": 80,
    }
    for size in result["sizes"]:
        assert [p["step"] for p in size["curve"]] == [2, 4]
        for p in size["curve"]:
            assert 0 <= p["review"] <= 100 and 0 <= p["fact"] <= 100 and p["loss"] > 0
        assert size["seconds_per_step"] > 0
    table = (out / "pilot.md").read_text()
    assert table.count("| d16 |") == 2 and table.count("| d32 |") == 2
    assert table in capsys.readouterr().out


def test_pilot_rejects_bad_shares_before_any_work(tmp_path, capsys):
    from repro.toyworld.__main__ import main

    out = tmp_path / "pilot"
    assert main(["pilot", "-o", str(out), "--review-share", "0.8", "--qa-share", "0.4"]) == 2
    assert "review_share=0.8, qa_share=0.4: each in [0, 1]" in capsys.readouterr().err
    assert main(["pilot", "-o", str(out), "--d-models", "30"]) == 2
    assert "d_models must be multiples of num_heads=4" in capsys.readouterr().err
    assert not out.exists()
