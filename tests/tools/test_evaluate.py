"""tools/evaluate.py: the metrics, a build's evaluation against its dense weights, clear errors."""

import json

import numpy as np
import pytest

from tools.evaluate import Run, main, scores


def test_scores_count_exact_matches_per_kind_and_agreement():
    from data.shapes import samples

    items = samples("val", "all", 4)  # easy, hard, easy, hard
    logits = np.eye(4)
    run = Run("x", [items[0].answer, "wrong", f" {items[2].answer} ", items[3].answer], logits, 64)
    ref = Run("ref", [], logits[[0, 1, 3, 2]], 64)
    s = scores(run, items, ref)
    assert s["accuracy"] == pytest.approx({"all": 0.75, "easy": 1.0, "hard": 0.5, items[0].qtype: 1.0,
                                           items[1].qtype: 0.0, items[2].qtype: 1.0, items[3].qtype: 1.0})
    assert s["top1_agreement"] == 0.5 and s["kl_mean"] > 0


@pytest.mark.slow
def test_a_planned_build_is_compared_with_its_dense_weights(builds, tmp_path, capsys):
    build = builds.get("onnx", "mixed")
    out = tmp_path / "r.json"
    assert main(["--build", str(build), "--n", "6", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["accuracy"]) >= {"all", "easy", "hard"}
    assert 0.0 <= result["top1_agreement"] <= 1.0 and result["kl_mean"] > 0  # the plan changes the distribution
    dense = builds.get("onnx", "dense")
    assert main(["--build", str(dense), "--n", "6", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["top1_agreement"] == 1.0 and result["kl_mean"] == 0.0  # the dense build is its own reference


def test_bad_inputs_get_one_line_errors(tmp_path, capsys):
    assert main(["--build", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    table = tmp_path / "t.json"
    table.write_text("{}")
    assert main(["--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert "not a fidelity table" in err and err.count("\n") == 1


def test_a_table_runs_every_row_against_one_reference(tmp_path, capsys):
    from export.random_model import RANDOM_MODEL_DIR

    plan = tmp_path / "exit.json"
    plan.write_text(json.dumps({"name": "exit-1", "layers": {"0": "full", "1": "exit"}}))
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"reference": {"model": str(RANDOM_MODEL_DIR)},
                                 "rows": [{"name": "dense", "plan": "dense"}, {"name": "exit", "plan": "exit.json"}]}))
    md = tmp_path / "t.md"
    assert main(["--table", str(table), "--n", "4", "--json", str(tmp_path / "t.json"), "--markdown", str(md)]) == 0
    dense, exit_ = json.loads((tmp_path / "t.json").read_text())["results"]
    assert dense["top1_agreement"] == 1.0 and dense["kl_mean"] == 0.0
    assert dense["cost"]["plan"] == dense["cost"]["dense"] > exit_["cost"]["plan"] > exit_["cost"]["text_only"]
    removed = (exit_["cost"]["dense"] - exit_["cost"]["plan"]) / (exit_["cost"]["dense"] - exit_["cost"]["text_only"])
    row = md.read_text().splitlines()[3]
    assert row.startswith("| exit |") and f"{100 * removed:.1f}%" in row
