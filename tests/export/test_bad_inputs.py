"""Bad input: a clear one-line error and a non-zero exit, nothing half-written; odd images work."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.build import main as build_main
from runtime.generate import main as generate_main

REPO = Path(__file__).resolve().parents[2]


def run_generate(capsys, build, *extra):
    code = generate_main(["--build", str(build), "--max-new-tokens", "4", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def onnx_build(builds):
    return builds.get("onnx", "mixed")


@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((rng.integers(0, 65536, (30, 50))).astype(np.uint16)).save(tmp_path / "deep.png")
    data = (tmp_path / "rgb.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rgb.png", "gray.png", "rgba.png", "deep.png"])
def test_odd_images_are_converted_and_answered(onnx_build, image_dir, capsys, name):
    code, out, err = run_generate(capsys, onnx_build, "--image", str(image_dir / name), "--prompt", "What is it?")
    assert code == 0, err
    assert "vision tokens seen by the decoder: 16" in out


@pytest.mark.slow
@pytest.mark.parametrize("name, words", [("truncated.png", ["truncated"]), ("corrupt.png", ["corrupt.png"]),
                                         ("missing.png", ["missing.png"])])
def test_broken_images_are_refused(onnx_build, image_dir, capsys, name, words):
    code, _, err = run_generate(capsys, onnx_build, "--image", str(image_dir / name), "--prompt", "Hi")
    assert_one_line_error(code, err, *words)


@pytest.mark.slow
def test_huge_image_is_refused_quickly(onnx_build, image_dir, capsys):
    t0 = time.perf_counter()
    code, _, err = run_generate(capsys, onnx_build, "--image", str(image_dir / "huge.png"), "--prompt", "Hi")
    assert time.perf_counter() - t0 < 10
    assert_one_line_error(code, err, "too large")


@pytest.mark.slow
def test_prompt_longer_than_kv_capacity(onnx_build, image_dir, capsys):
    capacity = json.loads((onnx_build / "manifest.json").read_text())["kv"]["text_rows"]
    code, _, err = run_generate(capsys, onnx_build, "--image", str(image_dir / "rgb.png"),
                                "--prompt", "red square " * capacity)
    assert_one_line_error(code, err, "KV capacity", str(capacity))


@pytest.mark.slow
def test_build_with_missing_graph_or_other_schema_is_refused(onnx_build, tmp_path, image_dir, capsys):
    missing = tmp_path / "missing"
    shutil.copytree(onnx_build, missing)
    (missing / "text_decoder.onnx").unlink()
    code, _, err = run_generate(capsys, missing, "--prompt", "Hi")
    assert_one_line_error(code, err, "text_decoder.onnx")
    other = tmp_path / "other"
    shutil.copytree(onnx_build, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_generate(capsys, other, "--prompt", "Hi")
    assert_one_line_error(code, err, "schema version 99")


@pytest.mark.slow
def test_truncated_onnx_graph_is_one_line_naming_the_file(onnx_build, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_build, broken)
    graph = broken / "text_decoder.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    code, _, err = run_generate(capsys, broken, "--prompt", "Hi")
    assert_one_line_error(code, err, "text_decoder.onnx", "onnxruntime cannot load it")


def test_bogus_target_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build_main(["--target", "bogus"])
    assert e.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_plan_naming_a_missing_layer_writes_nothing(tmp_path, capsys):
    plan = tmp_path / "bad.json"
    plan.write_text(json.dumps({"layers": {"99": "exit"}}))
    out = tmp_path / "out"
    code = build_main(["--target", "onnx", "--plan", str(plan), "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "layer 99")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO / "export" / "build.py"), "--target", "onnx", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        for line in proc.stdout:  # kill it in the middle of the export stage
            if "export onnx ..." in line:
                time.sleep(2)
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode != 0
    visible = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    assert visible == []
    assert not list(out.rglob("manifest.json"))


def test_missed_parity_floor_fails_the_build_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """A floor no graph can meet: the build exits 1 and leaves no build directory."""
    from runtime import parity

    monkeypatch.setitem(parity.FLOORS_DB, "fp32", 1000.0)
    out = tmp_path / "out"
    code = build_main(["--target", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "parity failed" in err and "1000 dB floor" in err
    assert not list(out.rglob("manifest.json"))
    assert [p for p in out.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.slow
def test_parity_command_rechecks_a_build(onnx_build, capsys):
    from runtime.parity import main as parity_main

    assert parity_main(["--build", str(onnx_build)]) == 0
    out = capsys.readouterr().out
    assert "prefill_logits" in out and '"passed": true' in out
    assert parity_main(["--build", str(onnx_build.parent / "nowhere")]) == 2


@pytest.mark.slow
def test_skip_parity_is_loud_and_recorded(tmp_path, capsys):
    out = tmp_path / "out"
    assert build_main(["--target", "onnx", "--plan", "dense", "--skip-parity", "--out", str(out)]) == 0
    assert "WARNING: parity skipped" in capsys.readouterr().out
    (build,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["parity"]["skipped"] is True
    assert json.loads((build / "parity.json").read_text()) == {"skipped": True}


def _edited_copy(build, dest, section, key, value):
    shutil.copytree(build, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest[section] = value if key is None else {**manifest[section], key: value}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("section, key, value, words", [
    ("image", "size", "256px", ["image.size: '256px' is not of type 'integer'"]),
    ("image", "mean", [0.5, 0.5], ["image.mean: [0.5, 0.5] is too short"]),
    ("prompt", None, {}, ["prompt: 'before_image' is a required property"]),
])
def test_manifest_against_its_schema_is_refused_before_anything_runs(onnx_build, tmp_path, image_dir, capsys,
                                                                     section, key, value, words):
    broken = _edited_copy(onnx_build, tmp_path / "broken", section, key, value)
    code, out, err = run_generate(capsys, broken, "--image", str(image_dir / "rgb.png"), "--prompt", "Hi")
    assert_one_line_error(code, err, f"{broken / 'manifest.json'}: ", *words)
    assert out == ""


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["runtime.parity", "tools.evaluate"])
def test_every_cli_that_loads_a_build_refuses_a_manifest_against_its_schema(onnx_build, tmp_path, capsys, cli):
    from runtime.parity import main as parity_main
    from tools.evaluate import main as evaluate_main

    broken = _edited_copy(onnx_build, tmp_path / "broken", "image", "size", -1)
    main = {"runtime.parity": parity_main, "tools.evaluate": evaluate_main}[cli]
    code = main(["--build", str(broken)] + (["--n", "2"] if cli == "tools.evaluate" else []))
    assert_one_line_error(code, capsys.readouterr().err, "image.size: -1 is less than the minimum of 1")


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["shared", "per-method"])
def test_truncated_pte_is_one_line_naming_the_file(builds, tmp_path, capsys, memory):
    broken = tmp_path / "broken"
    shutil.copytree(builds.get("executorch", "mixed"), broken)
    capsys.readouterr()  # the build's own output
    program = broken / "model.pte"
    program.write_bytes(program.read_bytes()[: program.stat().st_size - 1000])
    code, _, err = run_generate(capsys, broken, "--prompt", "Hi", "--memory", memory)
    native = re.compile(r"^\[\w+\.cpp:\d+\] ")  # ExecuTorch's C++ log ("File size is too small ..."), its own
    assert_one_line_error(code, "\n".join(line for line in err.splitlines() if not native.match(line)),
                          str(program), "ExecuTorch cannot load it")


def _break_package(build, how: str) -> Path:
    """Break one of a Core ML build's packages the way a partial copy would; the file to be named."""
    package = build / "text_decoder.mlpackage"
    data = package / "Data" / "com.apple.CoreML"
    if how == "no Manifest.json":
        (package / "Manifest.json").unlink()
        return package
    if how == "no weights":
        shutil.rmtree(data / "weights")
        return package
    file = data / ("weights/weight.bin" if how == "truncated weights" else "model.mlmodel")
    file.write_bytes(file.read_bytes()[: file.stat().st_size * 2 // 3])
    return file


@pytest.mark.slow
@pytest.mark.parametrize("how, words", [("no Manifest.json", ["not a Core ML package"]),
                                        ("no weights", ["incomplete Core ML package", "weights"]),
                                        ("truncated weights", ["truncated or corrupt Core ML weights"]),
                                        ("truncated spec", ["corrupt or truncated Core ML model spec"])])
def test_broken_mlpackage_is_one_line_naming_the_file(builds, tmp_path, capsys, how, words):
    broken = tmp_path / "broken"
    shutil.copytree(builds.get("coreml", "mixed"), broken)
    capsys.readouterr()  # the build's own output
    named = _break_package(broken, how)
    code, _, err = run_generate(capsys, broken, "--prompt", "Hi")
    assert_one_line_error(code, err, f"{named}:", *words)


@pytest.mark.slow
def test_coreml_build_off_macos_is_told_what_was_checked_and_what_to_run_on_a_mac(builds, capsys):
    build = builds.get("coreml", "mixed")
    capsys.readouterr()  # the build's own output
    code, _, err = run_generate(capsys, build, "--prompt", "Hi")
    if sys.platform == "darwin":  # Core ML predicts there
        assert code == 0, err
        return
    assert_one_line_error(code, err, "needs macOS 15 or later", "parity.json records the checks made at export",
                          f"`python -m runtime.parity --build {build}` on a Mac")
    assert "--backend torch" not in err
