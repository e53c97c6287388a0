"""``eval.protocol``: the trainer evaluates with it and records it in metrics.json, and ``dcsnas eval --run``
uses the run's protocol unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcsnas.cli import main

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"


@pytest.mark.slow
def test_run_is_evaluated_and_reevaluated_with_its_protocol(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set", "optim.epochs=1",
                 "--set", "eval.protocol=cuhk03", "--set", "eval.protocol_seed=3", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "cuhk03"
    assert main(["eval", "--run", str(out)]) == 0
    same = json.loads(capsys.readouterr().out)
    cmc = [f"rank-{r}" for r in (1, 5, 10)]
    assert same["protocol"] == "cuhk03" and same["mAP"] == metrics["test"]["mAP"]
    assert [same[k] for k in cmc] == [metrics["test"][k] for k in cmc]
    # the protocols differ in the CMC only (single-gallery-shot draws); AP uses every remaining item in both
    assert main(["eval", "--run", str(out), "--protocol", "market"]) == 0
    market = json.loads(capsys.readouterr().out)
    assert market["protocol"] == "market" and market["mAP"] == metrics["test"]["mAP"]
    assert [market[k] for k in cmc] != [metrics["test"][k] for k in cmc]
