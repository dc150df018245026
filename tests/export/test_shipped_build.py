"""The README's main command: the default build is the trained model with its plan, and it answers."""

import json
from pathlib import Path

import pytest

from data.shapes import samples
from export.build import main as build_main
from runtime.generate import main as generate_main
from tools.evaluate import run_build, run_model, scores

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints" / "foveate-tiny"


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("shipped")
    assert build_main(["--target", "onnx", "--out", str(out)]) == 0  # no --model, no --plan: the defaults
    (build,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return build


@pytest.mark.slow
def test_the_default_build_is_the_trained_model_with_its_plan(shipped_onnx):
    manifest = json.loads((shipped_onnx / "manifest.json").read_text())
    assert Path(manifest["model"]["source"]).resolve() == SHIPPED.resolve()
    shipped_plan = json.loads((SHIPPED / "plan.json").read_text())
    assert manifest["plan"]["name"] == shipped_plan["name"]
    cost = json.loads((shipped_onnx / "cost.json").read_text())
    assert cost["plan"]["prefill_flops"] < cost["dense"]["prefill_flops"]


@pytest.mark.slow
def test_the_build_answers_as_the_pytorch_model_does(shipped_onnx):
    items = samples("test", "all", 24)
    built = run_build(shipped_onnx, items)
    eager = run_model(SHIPPED, str(SHIPPED / "plan.json"), items)
    assert built.answers == eager.answers
    assert scores(built, items, None)["accuracy"]["all"] >= 0.4  # far above chance (the floors: test_shipped_model)


@pytest.mark.slow
def test_runtime_generate_answers_an_example(shipped_onnx, capsys):
    listing = json.loads((REPO / "examples" / "questions.json").read_text())
    answers = []
    for e in listing:
        code = generate_main(["--build", str(shipped_onnx), "--image", str(REPO / "examples" / e["image"]),
                              "--prompt", e["question"], "--max-new-tokens", "4"])
        assert code == 0
        answers.append(capsys.readouterr().out.splitlines()[0].strip())
    assert sum(a == e["answer"] for a, e in zip(answers, listing)) >= len(listing) // 2, answers
