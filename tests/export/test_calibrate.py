"""export/calibrate.py on the tiny random checkpoint: scoring, moves, the search, the CLI and --plan auto."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from export.calibrate import (Budget, Options, Scorer, answer_logits, calibrate, load_for_calibration, main, moves,
                              prepare, questions, search, with_modes)
from export.random_model import RANDOM_MODEL_DIR
from models.plan import load_plan
from models.vlm import VLM, Cursor, resolve_plan
from tests.releases import files_of, sentencepiece_release, sizeless_fastvlm, vocab_merges_release


@pytest.fixture(scope="module")
def model():
    return load_for_calibration(RANDOM_MODEL_DIR)


@pytest.fixture(scope="module")
def scorer(model):
    vlm, tok = model
    return Scorer(vlm, prepare(vlm, tok, questions("val", 8), progress=False), tok.stop_ids)


def test_teacher_forced_logits_are_those_of_decoding(model, scorer):
    """Plans are scored from one teacher-forced chunk; decoding token by token (what generation does,
    fed the reference answer) must give the same logits, so exact match there is the greedy answer."""
    vlm, _ = model
    for spec in ("dense", {"layers": {"1": "cross", "2-3": "text"}}, {"keep_topk": {"from_layer": 1, "k": 4}}):
        planned = VLM(vlm.cfg, spec).eval()
        planned.load_state_dict(vlm.state_dict())
        for item in scorer.items[:4]:
            torch.testing.assert_close(answer_logits(planned, item), _decoded_logits(planned, item),
                                       atol=1e-4, rtol=1e-4)


def _decoded_logits(vlm, item):
    vlm.decoder.reset()
    cur = Cursor()
    vlm.prefill_text(cur, item.prefix[None])
    vlm.prefill_image(cur, item.vision)
    out = [vlm.prefill_text(cur, item.after[None], select_topk=True)[0, -1]]
    for token in item.answer.tolist():
        out.append(vlm.decode(cur, token)[0, -1])
    return torch.stack(out)


def test_the_dense_plan_agrees_with_itself(scorer):
    d = scorer.dense
    assert d["top1"] == 1.0 and d["kl"] == pytest.approx(0.0, abs=1e-9) and d["vision_removed"] == 0.0
    text = scorer.score(with_modes(resolve_plan(scorer.vlm.cfg, "dense"), ["text"] * 4))
    assert text["vision_removed"] == pytest.approx(1.0) and text["kl"] > 0


def test_moves_only_reduce_and_read_plainly(scorer):
    cfg = scorer.vlm.cfg
    dense = resolve_plan(cfg, "dense")
    cands = moves(dense, cfg.num_vision_tokens, "graph", None, 0)
    assert {m.modes for m in cands} >= {("cross", "full", "full", "full"), ("full", "exit", "exit", "exit")}
    assert all(scorer.flops(m) < scorer.flops(dense) for m in cands)
    assert with_modes(dense, ["full", "text", "cross", "text"]).modes == ("full", "text", "cross", "exit")
    ideal = moves(dense, cfg.num_vision_tokens, "ideal", 1, 3)
    assert any(m.window == 1 for m in ideal) and any(m.keep_topk and m.keep_topk.k == 3 for m in ideal)


def test_budget():
    dense = {"easy": 0.80, "hard": 0.60, "top1": 1.0, "kl": 0.0}
    b = Budget(max_easy_drop=1.0, max_hard_drop=3.0, min_top1=0.9)
    assert b.allows({"easy": 0.79, "hard": 0.57, "top1": 0.95, "kl": 0.1}, dense)
    assert not b.allows({"easy": 0.78, "hard": 0.60, "top1": 0.95, "kl": 0.1}, dense)
    assert not b.allows({"easy": 0.80, "hard": 0.56, "top1": 0.95, "kl": 0.1}, dense)
    assert not b.allows({"easy": 0.80, "hard": 0.60, "top1": 0.85, "kl": 0.1}, dense)


def test_search_picks_the_cheapest_plan_within_budget(scorer):
    loose = search(scorer, Budget(100.0, 100.0), None, 0, progress=False)
    cheapest = min(s["flops"] for s in scorer.scored.values())
    assert loose["chosen"]["flops"] == cheapest
    assert [s["flops"] for s in loose["path"]] == sorted((s["flops"] for s in loose["path"]), reverse=True)
    strict = search(scorer, Budget(0.0, 0.0, min_top1=1.0), None, 0, progress=False)
    fits = [s for s in scorer.scored.values() if s["top1"] == 1.0 and s["easy"] >= scorer.dense["easy"]
            and s["hard"] >= scorer.dense["hard"]]
    assert strict["chosen"]["flops"] == min(s["flops"] for s in fits)
    assert strict["chosen"]["top1"] == 1.0


def test_calibration_never_uses_the_test_split(model):
    vlm, tok = model
    with pytest.raises(ValueError, match="test split"):
        calibrate(vlm, tok, Options(split="test", n=2, progress=False))


def test_cli_writes_a_loadable_plan_and_its_report(tmp_path):
    out = tmp_path / "plan.json"
    assert main(["--model", str(RANDOM_MODEL_DIR), "--out", str(out), "--n", "6", "--test-n", "4",
                 "--max-accuracy-drop", "100", "--max-hard-drop", "100", "--name", "tiny-auto"]) == 0
    spec = json.loads(out.read_text())
    plan = load_plan(str(out), 4, 4, 16)
    assert plan.name == "tiny-auto" and list(plan.modes) == spec["modes"]
    report = tmp_path / "plan-report"
    result = json.loads((report / "calibration.json").read_text())
    assert result["plan"]["modes"] == spec["modes"] and result["test"]["n"] == 4
    assert result["chosen"]["flops"] == min(s["flops"] for s in result["scored"])  # budget allows everything
    np.testing.assert_allclose(np.array(result["measurements"]["allocation_per_query"]).sum(-1), 1.0, atol=1e-5)
    text = (report / "README.md").read_text()
    assert " ".join(spec["modes"]) in text and "Test split" in text
    for name in ("allocation", "influence", "knockout", "cka", "pareto"):
        with Image.open(report / f"{name}.png") as im:
            assert im.width > 200 and im.height > 200
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("argv,message", [
    (["--model", "no/such/dir"], "config.json"),
    (["--n", "1"], "--n must be at least 2"),
    (["--min-top1-agreement", "1.5"], "between 0 and 1"),
    (["--image-size", "0"], "--image-size must be a positive"),
    (["--image-size", "100"], "multiple of the encoder stride 32"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    base = {"--model": str(RANDOM_MODEL_DIR), "--out": str(tmp_path / "p.json"), "--n": "4", "--test-n": "0"}
    args = dict(zip(argv[::2], argv[1::2]))
    merged = [x for k, v in {**base, **args}.items() for x in (k, v)]
    assert main(merged) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_cli_refuses_the_test_split(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--model", str(RANDOM_MODEL_DIR), "--out", str(tmp_path / "p.json"), "--split", "test"])
    assert e.value.code == 2


def test_a_checkpoint_without_tokenizer_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(RANDOM_MODEL_DIR, ckpt)
    (ckpt / "tokenizer.json").unlink()
    assert main(["--model", str(ckpt), "--out", str(tmp_path / "p.json"), "--n", "2", "--test-n", "0"]) == 2
    assert "tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_build_plan_auto_builds_with_the_calibrated_plan(tmp_path):
    from export.build import main as build_main

    out = tmp_path / "build"
    assert build_main(["--target", "onnx", "--model", str(RANDOM_MODEL_DIR), "--plan", "auto",
                       "--calibration-n", "4", "--out", str(out)]) == 0
    calibrated = json.loads((out / "foveate-tiny-random-auto-calibration" / "plan.json").read_text())
    manifest = json.loads((out / "foveate-tiny-random-auto-onnx" / "manifest.json").read_text())
    assert manifest["plan"]["modes"] == calibrated["modes"] and manifest["plan"]["name"] == "auto"
    assert (out / "foveate-tiny-random-auto-calibration" / "report" / "README.md").is_file()


def test_build_plan_auto_refuses_presets(tmp_path, capsys):
    from export.build import main as build_main

    assert build_main(["--target", "onnx", "--model", "fastvlm-tiny", "--plan", "auto", "--out", str(tmp_path)]) == 2
    assert "nothing to calibrate" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_prepared_items_hold_the_dense_image_embeddings(model):
    vlm, tok = model
    items = prepare(vlm, tok, questions("val", 2), progress=False)
    assert [i.kind for i in items] == ["easy", "hard"]
    assert items[0].vision.shape == (1, vlm.cfg.num_vision_tokens, vlm.cfg.decoder.hidden_size)
    assert torch.isfinite(items[0].vision).all()


def test_the_shipped_plan_is_its_committed_calibration():
    """checkpoints/foveate-tiny/plan.json was written by export/calibrate.py; its report is committed
    beside it and says the plan is the cheapest scored plan within the recorded budget."""
    from export.load import SHIPPED_MODEL_DIR

    repo = SHIPPED_MODEL_DIR.parents[1]
    result = json.loads((repo / "reports" / "calibration" / "foveate-tiny" / "calibration.json").read_text())
    shipped = json.loads((SHIPPED_MODEL_DIR / "plan.json").read_text())
    assert shipped["modes"] == result["plan"]["modes"] and shipped["name"] == result["plan"]["name"]
    budget = Budget(**result["options"]["budget"])
    fits = [s for s in result["scored"] if budget.allows(s, result["dense"])]
    assert budget.allows(result["chosen"], result["dense"])
    assert result["chosen"]["flops"] == min(s["flops"] for s in fits) < result["dense"]["flops"]
    assert result["options"]["split"] == "val" and result["test"]["n"] > 0


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    return {"tokenizer.model": sentencepiece_release(root / "MobileVLM_V2-tiny"),
            "vocab.json + merges.txt": vocab_merges_release(root / "fastvlm-qwen2"),
            "sizeless": sizeless_fastvlm(root / "fastvlm-sizeless")}


def _calibrate_cli(model, out, *extra):
    return main(["--model", str(model), "--out", str(out), "--report", str(out.with_suffix("")), "--n", "2",
                 "--test-n", "0", "--max-accuracy-drop", "100", "--max-hard-drop", "100", *extra])


@pytest.mark.parametrize("kind", ["tokenizer.model", "vocab.json + merges.txt"])
def test_a_release_without_tokenizer_json_is_calibrated(releases, tmp_path, kind):
    from runtime.fidelity import checkpoint_config

    release, before = releases[kind], files_of(releases[kind])
    out = tmp_path / "plan.json"
    assert _calibrate_cli(release, out) == 0
    assert files_of(release) == before  # the converted tokenizer is not written into the release
    cfg = checkpoint_config(release)
    plan = load_plan(str(out), cfg.decoder.num_layers, cfg.decoder.num_heads, cfg.num_vision_tokens)
    result = json.loads((tmp_path / "plan" / "calibration.json").read_text())
    assert list(plan.modes) == result["plan"]["modes"] and result["options"]["n"] == 2


def test_a_checkpoint_that_does_not_say_its_size_needs_image_size(releases, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert _calibrate_cli(releases["sizeless"], out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "--image-size" in err and "preprocessor_config.json" in err and not out.exists()
    vlm, _ = load_for_calibration(releases["sizeless"], 64)
    assert vlm.plan.is_dense and vlm.cfg.num_vision_tokens == 4  # 64 px at stride 32
    assert _calibrate_cli(releases["sizeless"], out, "--image-size", "64") == 0
    plan = load_plan(str(out), vlm.cfg.decoder.num_layers, vlm.cfg.decoder.num_heads, 4)
    assert plan.name == "auto"


def test_image_size_calibrates_at_that_size(tmp_path):
    vlm, tok = load_for_calibration(RANDOM_MODEL_DIR, 64)
    assert vlm.cfg.num_vision_tokens == 4  # the checkpoint's own 128 px gives 16
    dense = Scorer(vlm, prepare(vlm, tok, questions("val", 2), progress=False), tok.stop_ids).dense
    assert _calibrate_cli(RANDOM_MODEL_DIR, tmp_path / "plan.json", "--image-size", "64") == 0
    assert json.loads((tmp_path / "plan" / "calibration.json").read_text())["dense"] == dense
