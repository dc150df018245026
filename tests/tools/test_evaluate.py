"""tools/evaluate.py: the metrics, a build's evaluation against its dense weights, clear errors."""

import io
import json
import shutil

import numpy as np
import pytest

import tools.evaluate as evaluate
from export.random_model import RANDOM_MODEL_DIR
from tests.releases import files_of, sentencepiece_release, sizeless_fastvlm, vocab_merges_release
from tools.evaluate import Progress, Run, main, scores


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
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["--build", str(build), "--n", "6", "--json", str(out), "--markdown", str(md)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["accuracy"]) >= {"all", "easy", "hard"}
    assert 0.0 <= result["top1_agreement"] <= 1.0 and result["kl_mean"] > 0  # the plan changes the distribution
    cost = json.loads((build / "cost.json").read_text())  # the build's own figures fill the FLOPs columns
    assert result["cost"]["plan"] == cost["plan"]["prefill_flops"] < result["cost"]["dense"]
    row = md.read_text().splitlines()[2].split(" | ")
    assert row[2] == f"{cost['plan']['prefill_flops'] / 1e6:,.1f}" and row[4].endswith("%")
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


def _no_work(monkeypatch):
    """Fail the test if an evaluation starts: no samples drawn, no model run."""
    def refuse(*args, **kwargs):
        raise AssertionError("the evaluation started before the arguments were checked")
    for name in ("load_items", "run_model", "run_vlm", "run_pipeline"):
        monkeypatch.setattr(evaluate, name, refuse)


@pytest.mark.parametrize("plan, says", [({"layers": {"0": "fly"}}, "unknown mode 'fly'"),
                                        ({"layers": {"0-9": "exit"}}, "layer 9"),
                                        (None, "plan file not found")])
def test_a_bad_plan_is_refused_before_the_dense_reference_runs(tmp_path, capsys, monkeypatch, plan, says):
    _no_work(monkeypatch)
    path = tmp_path / "plan.json"
    if plan is not None:
        path.write_text(json.dumps(plan))
    assert main(["--model", str(RANDOM_MODEL_DIR), "--plan", "dense", "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_table_row_with_a_bad_plan_is_named_before_any_run(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "bad.json").write_text(json.dumps({"layers": {"0": "full", "1": "sideways"}}))
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"reference": {"model": str(RANDOM_MODEL_DIR)},
                                 "rows": [{"name": "dense"}, {"name": "broken", "plan": "bad.json"}]}))
    assert main(["--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert "'broken'" in err and "sideways" in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, says", [(["--json", "{tmp}/no/such/dir/r.json"], "does not exist"),
                                         (["--markdown", "{tmp}"], "is a directory"),
                                         (["--n", "0"], "--n"),
                                         (["--backend", "onnxruntime"], "--backend goes with --build"),
                                         (["--image-size", "0"], "--image-size must be a positive"),
                                         (["--image-size", "100"], "multiple of the encoder stride 32")])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, extra, says):
    _no_work(monkeypatch)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(["--model", str(RANDOM_MODEL_DIR), *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_plan_without_a_model_is_refused(tmp_path, capsys):
    assert main(["--build", str(tmp_path), "--plan", "dense"]) == 2
    assert "--plan goes with --model" in capsys.readouterr().err


def test_progress_off_a_terminal_is_a_line_every_tenth_with_time_and_rate():
    out = io.StringIO()  # not a terminal
    progress = Progress("run", 20, out)
    for i in range(1, 21):
        progress.update(i)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [f"{i}/20" for i in range(2, 21, 2)]
    assert all(line.startswith("run: ") and " s, " in line and line.endswith(" items/s") for line in lines)
    assert "\r" not in out.getvalue()


def test_progress_off_a_terminal_also_reports_after_a_pause(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_S", 0.0)  # every pause is long enough
    progress = Progress("run", 100, out)
    for i in range(1, 4):
        progress.update(i)
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == ["run: 1/100", "run: 2/100", "run: 3/100"]


def test_a_plan_file_that_is_not_an_object_is_refused_naming_it(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    for text in ("[1, 2]", "7", '"exit"'):
        path = tmp_path / "plan.json"
        path.write_text(text)
        assert main(["--model", str(RANDOM_MODEL_DIR), "--plan", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(path) in err and "JSON object" in err and err.count("\n") == 1


def test_image_size_goes_with_a_model_only(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["--build", str(tmp_path), "--image-size", "256"]) == 2
    assert "--image-size goes with --model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    return {"tokenizer.model": sentencepiece_release(root / "MobileVLM_V2-tiny"),
            "vocab.json + merges.txt": vocab_merges_release(root / "fastvlm-qwen2"),
            "sizeless": sizeless_fastvlm(root / "fastvlm-sizeless")}


@pytest.mark.parametrize("kind", ["tokenizer.model", "vocab.json + merges.txt"])
def test_a_release_without_tokenizer_json_is_evaluated_with_its_converted_tokenizer(releases, tmp_path, kind):
    """The same results as the release with its converted tokenizer.json put beside the weights, and the
    release directory left as it was."""
    from models.checkpoint_files import convert_tokenizer

    release, before = releases[kind], files_of(releases[kind])
    assert main(["--model", str(release), "--n", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert files_of(release) == before
    with_json = tmp_path / release.name
    shutil.copytree(release, with_json)
    convert_tokenizer(release).save(str(with_json / "tokenizer.json"))
    assert main(["--model", str(with_json), "--n", "2", "--json", str(tmp_path / "j.json")]) == 0
    (converted,), (saved,) = (json.loads((tmp_path / f).read_text())["results"] for f in ("r.json", "j.json"))
    assert converted["n"] == 2 and converted["cost"]["prompt_tokens"] > 0
    assert converted == saved


def test_a_checkpoint_that_does_not_say_its_size_needs_image_size(releases, tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as m:
        _no_work(m)
        assert main(["--model", str(releases["sizeless"]), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--image-size" in err and "preprocessor_config.json" in err
    assert err.count("\n") == 1
    out = tmp_path / "r.json"
    assert main(["--model", str(releases["sizeless"]), "--image-size", "64", "--n", "2", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["vision_tokens"] == 4 and result["n"] == 2  # 64 px at stride 32


def test_image_size_runs_a_model_that_says_its_size_at_another(tmp_path):
    out = tmp_path / "r.json"
    assert main(["--model", str(RANDOM_MODEL_DIR), "--image-size", "96", "--n", "2", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["vision_tokens"] == 9  # 3 x 3 at stride 32; the checkpoint's 128 px gives 16


def test_image_size_a_clip_encoder_cannot_take_is_refused_before_any_work(releases, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["--model", str(releases["tokenizer.model"]), "--image-size", "112"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this encoder's weights" in err and "position_embedding" in err and err.count("\n") == 1
