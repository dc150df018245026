"""tools/bench.py smoke run on the tiny preset: the JSON is complete and every ratio comes from the timings."""

import json
import os
from pathlib import Path

import pytest

from tools.bench import main

PLAN = {"name": "cross-exit", "layers": {"0": "full", "1-2": "cross", "3": "exit"}}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    plan = tmp / "plan.json"
    plan.write_text(json.dumps(PLAN))
    argv = ["--preset", "fastvlm-tiny", "--plans", f"dense,{plan}", "--backends", "onnxruntime",
            "--prompt-tokens", "8", "--new-tokens", "4", "--repeats", "2", "--quant", "int8", "--cache", str(tmp / "cache"),
            "--json", str(tmp / "results.json")]
    assert main(argv) == 0
    return tmp, argv, json.loads((tmp / "results.json").read_text())


@pytest.mark.slow
def test_every_run_is_measured_with_median_min_max(bench):
    _, _, result = bench
    assert [(r["backend"], r["plan"], r["quant"]) for r in result["results"]] == [
        ("onnxruntime", "dense", "none"), ("onnxruntime", "cross-exit", "none"),
        ("onnxruntime", "dense+int8", "int8"), ("onnxruntime", "cross-exit+int8", "int8")]
    for r in result["results"]:
        for metric in ("image_encode_s", "prefill_s", "ttft_s", "decode_tok_s"):
            t = r["timings"][metric]
            assert 0 < t["min"] <= t["median"] <= t["max"], (metric, t)
        assert r["graph_bytes"] > 0 and r["cost"]["prefill_flops"] > 0 and r["text_only_prefill_s"] > 0
    assert result["gemm_flops_per_s"]["onnxruntime"] > 1e8 and result["memory_bytes_per_s"] > 1e8
    assert result["prefix_tokens"] > 0 and result["prompt_tokens"] == 8 and result["new_tokens"] == 4


@pytest.mark.slow
def test_ratios_and_roofline_come_from_the_timings(bench):
    _, _, result = bench
    dense, plan, dense_int8, _ = result["results"]
    assert dense_int8["vs_dense"]["prefill_speedup"] == pytest.approx(
        dense["timings"]["prefill_s"]["median"] / dense_int8["timings"]["prefill_s"]["median"])
    assert dense_int8["graph_bytes"] < dense["graph_bytes"]
    # the text-only floor and the roofline are the fp32 weights': a quantized row has neither
    assert dense_int8["vs_dense"]["vision_prefill_time_removed"] is None and dense_int8["roofline"] is None
    med = {k: {m: r["timings"][m]["median"] for m in r["timings"]} for k, r in (("d", dense), ("p", plan))}
    v = plan["vs_dense"]
    assert v["prefill_speedup"] == pytest.approx(med["d"]["prefill_s"] / med["p"]["prefill_s"])
    assert v["ttft_speedup"] == pytest.approx(med["d"]["ttft_s"] / med["p"]["ttft_s"])
    floor = plan["text_only_prefill_s"]
    if med["d"]["prefill_s"] > floor:
        assert v["vision_prefill_time_removed"] == pytest.approx(
            (med["d"]["prefill_s"] - med["p"]["prefill_s"]) / (med["d"]["prefill_s"] - floor))
    assert v["kv_ratio"] == pytest.approx(plan["cost"]["kv_bytes_static"] / dense["cost"]["kv_bytes_static"])
    assert v["kv_ratio"] < 1  # layer 3 exits: it stores no vision K/V
    roof = plan["roofline"]
    assert roof["prefill_of_gemm_peak"] == pytest.approx(
        plan["cost"]["prefill_flops"] / med["p"]["prefill_s"] / result["gemm_flops_per_s"]["onnxruntime"])
    assert plan["cost"]["prefill_flops"] < dense["cost"]["prefill_flops"]


@pytest.mark.slow
def test_builds_are_cached_by_content(bench, capsys):
    tmp, argv, _ = bench
    before = sorted(p.name for p in (tmp / "cache").iterdir())
    assert len(before) == 4  # dense and the plan, fp32 and int8
    stale = tmp / "cache" / "0123456789abcdef"  # a build of an older source: this run does not need it
    stale.mkdir()
    (stale / "model.pte").write_bytes(bytes(1000))
    assert main(argv + ["--cache-max-gb", "0"]) == 0
    out = capsys.readouterr().out
    assert "[bench] building" not in out and "removed 0123456789abcdef" in out
    assert sorted(p.name for p in (tmp / "cache").iterdir()) == before


def test_the_cache_forgets_the_least_recently_used_entries_a_run_does_not_need(tmp_path):
    from tools.build_cache import prune_cache

    for i, name in enumerate(["old", "mid", "new", "needed"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pte").write_bytes(bytes(100))
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    os.utime(tmp_path / "needed", (1, 1))  # the oldest, but this run needs it
    said = []
    prune_cache(tmp_path, {"needed"}, 250, log=said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["needed", "new"]
    assert [m.split()[2] for m in said] == ["old", "mid"]
    prune_cache(tmp_path, {"needed", "new"}, 0, log=said.append)  # what a run needs stays, over the bound too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["needed", "new"]
    assert "alone hold" in said[-1]


def test_a_plan_that_does_not_fit_fails_before_any_build(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"7": "exit"}}))
    code = main(["--preset", "fastvlm-tiny", "--plans", str(plan), "--backends", "onnxruntime",
                 "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "layer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists()


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "fastvlm-tiny", "--backends", "tensorrt", "--cache", str(tmp_path)])
    assert e.value.code == 2


def test_a_negative_cache_bound_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "fastvlm-tiny", "--cache-max-gb", "-1", "--cache", str(tmp_path / "cache")])
    assert e.value.code == 2 and "--cache-max-gb" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def _write(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_build_key_covers_the_modules_a_build_imports_and_no_others(tmp_path, monkeypatch):
    import tools.build_cache as cache

    _write(tmp_path, {
        "export/__init__.py": "",
        "export/build.py": "import json\nfrom models.vlm import VLM\n\ndef main():\n    from . import graphs\n",
        "export/graphs.py": "from runtime import parity\n",
        "export/onnx.py": "from .graphs import x\n",
        "models/__init__.py": "",
        "models/vlm.py": "from .plan import load_plan\n",
        "models/plan.py": "import numpy\n",
        "models/train.py": "from models.vlm import VLM\n",
        "runtime/__init__.py": "",
        "runtime/parity.py": "",
        "tools/__init__.py": "",
        "tools/bench.py": "from export import build\n",
    })
    monkeypatch.setattr(cache, "REPO", tmp_path)
    got = {str(p.relative_to(tmp_path)) for p in cache.imported_sources(tmp_path / "export" / "build.py",
                                                                        tmp_path / "export" / "onnx.py")}
    assert got == {"export/__init__.py", "export/build.py", "export/graphs.py", "export/onnx.py", "models/__init__.py",
                   "models/vlm.py", "models/plan.py", "runtime/__init__.py", "runtime/parity.py"}

    def key():
        return cache.build_key("fastvlm-tiny", {"name": "dense"}, 128, 64, "onnx")

    first = key()
    (tmp_path / "models" / "train.py").write_text("# edited\n")
    (tmp_path / "tools" / "bench.py").write_text("# edited\n")
    assert key() == first
    (tmp_path / "models" / "plan.py").write_text("import numpy  # edited\n")
    assert key() != first
    assert cache.build_key("fastvlm-tiny", {"name": "dense"}, 128, 64, "onnx-int8") != key()


def test_int8_vision_needs_the_8da4w_builds(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "fastvlm-tiny", "--backends", "executorch", "--quant-vision", "int8",
              "--cache", str(tmp_path)])
    assert e.value.code == 2
    assert "--quant 8da4w" in capsys.readouterr().err


@pytest.mark.slow
def test_8da4w_with_int8_vision_is_measured_beside_fp32_and_the_stock_runner(tmp_path):
    # enough decode steps for the stock runner's millisecond clock to see them on the tiny model
    argv = ["--preset", "fastvlm-tiny", "--plans", "dense", "--backends", "executorch", "--prompt-tokens", "8",
            "--new-tokens", "32", "--repeats", "1", "--quant", "8da4w", "--quant-vision", "int8",
            "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "results.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    fp32, quant = result["results"]
    assert [(r["plan"], r["quant"], r["quant_vision"]) for r in (fp32, quant)] == [
        ("dense", "none", "none"), ("dense+8da4w+vision-int8", "8da4w", "int8")]
    assert quant["graph_bytes"] < fp32["graph_bytes"]
    assert quant["vs_dense"]["ttft_speedup"] == pytest.approx(
        fp32["timings"]["ttft_s"]["median"] / quant["timings"]["ttft_s"]["median"])
    stock = result["stock_runner"]
    assert stock["ours_decode_over_stock"] == pytest.approx(
        fp32["timings"]["decode_tok_s"]["median"] / stock["timings"]["decode_tok_s"]["median"])


@pytest.mark.slow
def test_kv_capacity_holds_a_long_template(tmp_path):
    """MobileVLM's LLaVA template takes 84 tokens before the image: the capacity follows it."""
    argv = ["--preset", "mobilevlm-tiny", "--plans", "dense", "--backends", "onnxruntime", "--prompt-tokens", "8",
            "--new-tokens", "4", "--repeats", "1", "--cache", str(tmp_path / "cache"),
            "--json", str(tmp_path / "results.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["prefix_tokens"] > 48
    assert result["max_seq_len"] >= result["prefix_tokens"] + 8 + 4


@pytest.mark.slow
def test_an_stf_model_is_measured_against_the_main_dense_build(tmp_path):
    """--also: the STF model's rows sit beside the dense model's and every ratio is against its dense build."""
    root = Path(__file__).resolve().parents[2]
    argv = ["--model", str(root / "checkpoints" / "foveate-tiny"), "--plans", "dense",
            "--also", f"{root / 'checkpoints' / 'foveate-tiny-stf'}=dense,{root / 'plans' / 'tiny' / 'cross.json'}",
            "--backends", "onnxruntime", "--prompt-tokens", "8", "--new-tokens", "4", "--repeats", "1",
            "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "results.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    dense, stf, stf_cross = result["results"]
    assert [r["plan"] for r in result["results"]] == ["dense", "dense@foveate-tiny-stf", "cross@foveate-tiny-stf"]
    assert stf["vision_tokens"] * 4 == dense["vision_tokens"]  # k = 2: a quarter of the tokens
    for r in (stf, stf_cross):
        v = r["vs_dense"]
        assert v["prefill_speedup"] == pytest.approx(
            dense["timings"]["prefill_s"]["median"] / r["timings"]["prefill_s"]["median"])
        assert v["kv_ratio"] == pytest.approx(r["cost"]["kv_bytes_static"] / dense["cost"]["kv_bytes_static"])
        assert v["kv_ratio"] < 1 and r["text_only_prefill_s"] == dense["text_only_prefill_s"]
    assert stf_cross["cost"]["prefill_flops"] < stf["cost"]["prefill_flops"] < dense["cost"]["prefill_flops"]


def test_also_needs_the_same_decoder(tmp_path, capsys):
    code = main(["--preset", "fastvlm-tiny", "--also", "mobilevlm-tiny=dense", "--backends", "onnxruntime",
                 "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "decoder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists()
    with pytest.raises(SystemExit) as e:
        main(["--preset", "fastvlm-tiny", "--also", "fastvlm-tiny", "--cache", str(tmp_path / "cache")])
    assert e.value.code == 2
