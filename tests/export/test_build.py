"""Every runnable target, for three plans: parity floors, greedy token match, vision K/V only where the plan
uses vision (read from the graphs themselves), and generate() through the graph equal to torch."""

import json

import numpy as np
import pytest

from runtime.manifest import load_manifest
from runtime.parity import FLOORS_DB
from runtime.pipeline import Pipeline

PLANS = ("dense", "mixed", "stf-exit")
TARGETS = ("onnx", "executorch")


def _layers(names) -> set[int]:
    return {int(n.rsplit("_", 1)[1]) for n in names if n.startswith(("vision_k_", "vision_v_"))}


def onnx_vision_kv_layers(build) -> set[int]:
    """Layers whose vision K/V vision_prefill.onnx returns and text_decoder.onnx takes (both must agree)."""
    import onnx

    prefill = onnx.load(str(build / "vision_prefill.onnx")).graph
    decoder = onnx.load(str(build / "text_decoder.onnx")).graph
    returned, taken = _layers(o.name for o in prefill.output), _layers(i.name for i in decoder.input)
    assert returned == taken
    return taken


def pte_buffers(build) -> set[str]:
    """Names of the mutable buffers the .pte plans memory for (emit_mutable_buffer_names)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary((build / "model.pte").read_bytes())
    program = getattr(program, "program", program)
    names = set()
    for plan in program.execution_plan:
        for value in plan.values:
            extra = getattr(value.val, "extra_tensor_info", None)
            if extra is not None and extra.fully_qualified_name:
                names.add(extra.fully_qualified_name)
    assert any("text_k" in n for n in names), "no KV buffer names found in the .pte"
    return names


def pte_vision_kv_layers(build) -> set[int]:
    """The vision K/V of the .pte's methods, read from the program: vision_prefill returns 1 + 2n tensors and
    text_decoder takes 4 + 2n, all of the shape of one layer's vision K/V; no method holds vision K/V state."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    manifest = load_manifest(build)
    module = _load_for_executorch(str(build / "model.pte"))
    prefill, decoder = module.method_meta("vision_prefill"), module.method_meta("text_decoder")
    n = prefill.num_outputs() - 1
    assert decoder.num_inputs() == 4 + n
    kv_shape = manifest["kv"]["vision_kv_shape"]
    assert all(list(prefill.output_tensor_meta(1 + i).sizes()) == kv_shape for i in range(n))
    assert all(list(decoder.input_tensor_meta(4 + i).sizes()) == kv_shape for i in range(n))
    assert not [b for b in pte_buffers(build) if "vision" in b]  # nothing shared between methods
    assert n == len(manifest["kv"]["vision_kv"])
    return _layers(manifest["kv"]["vision_kv"])


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("plan", PLANS)
def test_build_meets_parity_floors_and_token_match(builds, target, plan):
    build = builds.get(target, plan)
    report = json.loads((build / "parity.json").read_text())
    assert report["passed"], report
    assert report["tokens_match"] is True
    for stage in ("vision_embeddings", "prefill_logits", "decode_logits"):
        assert report["stages"][stage]["psnr_db"] >= FLOORS_DB["fp32"], (stage, report["stages"][stage])
    manifest = load_manifest(build)
    assert manifest["kv_layout"] == ("shared" if plan == "dense" else "split")
    if target == "executorch":  # checked again with one memory per method, as ExecuTorch's Android binding runs it
        phone = report["per_method_memory"]
        assert phone["passed"] and phone["tokens_match"], phone
        assert phone["same_ids_as_shared"] is True


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("plan", ("mixed", "stf-exit"))
def test_graphs_store_vision_kv_only_in_vision_layers(builds, target, plan):
    build = builds.get(target, plan)
    modes = load_manifest(build)["plan"]["modes"]
    expected = {i for i, m in enumerate(modes) if m in ("full", "cross")}
    found = onnx_vision_kv_layers(build) if target == "onnx" else pte_vision_kv_layers(build)
    assert found == expected, (modes, found)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("plan", ("dense", "mixed"))
def test_generate_through_graph_equals_torch(builds, target, plan):
    build = builds.get(target, plan)
    image = build / "golden" / "case1.png"
    graph = Pipeline(build).generate(image, "How many squares are there?", max_new_tokens=12)
    torch_ = Pipeline(build, backend="torch").generate(image, "How many squares are there?", max_new_tokens=12)
    assert graph.ids == torch_.ids
    assert len(set(graph.ids)) > 1  # not a degenerate repeat that would match by accident
    assert graph.vision_tokens == load_manifest(build)["kv"]["vision_tokens"]


@pytest.mark.slow
def test_all_cross_plan_keeps_parity_on_executorch(builds):
    """No layer updates the vision states, so vision_prefill's output equals its input: the .pte must still
    keep the vision K/V it wrote (it lost them while the method returned its input itself)."""
    build = builds.get("executorch", "cross-all")
    report = json.loads((build / "parity.json").read_text())
    assert report["passed"] and report["tokens_match"], report
    assert report["stages"]["prefill_logits"]["psnr_db"] >= FLOORS_DB["fp32"]
    assert pte_vision_kv_layers(build) == {0, 1, 2, 3}
    assert report["per_method_memory"]["passed"]
    image = build / "golden" / "case1.png"
    graph = Pipeline(build).generate(image, "What colour is the square?", max_new_tokens=8)
    torch_ = Pipeline(build, backend="torch").generate(image, "What colour is the square?", max_new_tokens=8)
    assert graph.ids == torch_.ids


@pytest.mark.slow
def test_earlier_design_with_vision_kv_in_shared_buffers_fails_under_one_memory_per_method(builds, tmp_path, capsys):
    """`--vision-kv buffers` (vision_prefill writes buffers that text_decoder reads) passes when the methods
    share memory and decodes garbage when each method has its own, as on Android: the build refuses it."""
    from export.build import main as build_main
    from export.random_model import RANDOM_MODEL_DIR

    code = build_main(["--target", "executorch", "--model", str(RANDOM_MODEL_DIR), "--plan", str(builds.plan_files["mixed"]), "--out", str(tmp_path), "--vision-kv", "buffers"])
    err = capsys.readouterr()
    assert code == 1
    assert "one memory per method (as on Android)" in err.err
    assert "greedy tokens differ" in err.err
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # no build left behind


@pytest.mark.slow
def test_text_only_question_through_a_planned_graph(builds):
    build = builds.get("onnx", "mixed")
    graph = Pipeline(build).generate(None, "Is there a red shape?", max_new_tokens=6)
    torch_ = Pipeline(build, backend="torch").generate(None, "Is there a red shape?", max_new_tokens=6)
    assert graph.ids == torch_.ids and graph.vision_tokens == 0


@pytest.mark.slow
def test_dense_pte_runs_under_executorch_stock_multimodal_runner(builds, tmp_path):
    """The dense build follows the stock runner protocol: its greedy tokens equal foveate's runtime.

    The prompt goes in as token ids (make_token_input), and the runner's tokenizer is a merge-free BPE
    one that spells id i as "<ti>", so the streamed pieces read back as ids exactly (the random default
    model emits byte pieces that are not valid UTF-8 on their own)."""
    import re

    import torch
    from executorch.extension.llm.runner import GenerationConfig, MultimodalRunner, make_image_input, make_token_input
    from tokenizers import Tokenizer, models

    from runtime.image import preprocess

    build = builds.get("executorch", "dense")
    manifest = load_manifest(build)
    pipe = Pipeline(build)
    image, prompt = build / "golden" / "case0.png", "What colour is the square?"
    ours = pipe.generate(image, prompt, max_new_tokens=6)
    before, after = pipe.tokenizer.encode_prompt(prompt, with_image=True)
    vocab = manifest["model"]["config"]["decoder"]["vocab_size"]
    spelled = Tokenizer(models.BPE({f"<t{i}>": i for i in range(vocab)}, merges=[]))
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    spelled.save(str(tok_dir / "tokenizer.json"))
    runner = MultimodalRunner(str(build / "model.pte"), str(tok_dir / "tokenizer.json"))
    pixels = torch.from_numpy(preprocess(image, manifest["image"]))
    pieces = []
    runner.generate([make_token_input(before), make_image_input(pixels), make_token_input(after)],
                    GenerationConfig(max_new_tokens=6, temperature=0.0, echo=False), token_callback=pieces.append)
    stock = [int(i) for i in re.findall(r"<t(\d+)>", "".join(pieces))]
    assert stock == [i for i in ours.ids if i not in pipe.tokenizer.stop_ids]
    assert len(stock) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("target", ("onnx", "executorch", "coreml"))
def test_manifest_follows_its_json_schema(builds, target):
    import jsonschema

    from runtime.manifest import SCHEMA_PATH

    build = builds.get(target, "mixed")
    manifest = json.loads((build / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))
    for name, spec in manifest["graphs"]["methods"].items():
        assert (build / spec["file"]).exists(), name
    broken = dict(manifest, kv_layout="diagonal")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.slow
def test_coreml_build_on_linux_checks_the_program_and_marks_device_parity_pending(builds, capsys):
    import sys

    from runtime.generate import main as generate_main

    build = builds.get("coreml", "mixed")
    report = json.loads((build / "parity.json").read_text())
    manifest = load_manifest(build)
    assert manifest["dtype"] == "fp16"  # Core ML computes in fp16 by default
    if sys.platform != "darwin":  # pending is not a pass: what was checked here is said apart
        assert report["status"] == "pending" and report["passed"] is None and report["dtype"] == "fp16"
        assert report["pending"]["command"] == f"python -m runtime.parity --build {build}"
        traced = report["checked_here"]["traced_vs_eager"]
        assert traced["ok"] and traced["tokens_match"] and traced["min_psnr_db"] >= FLOORS_DB["fp32"]
        assert set(report["checked_here"]["saved_specs"]["methods"]) == set(manifest["graphs"]["methods"])
        code = generate_main(["--build", str(build), "--prompt", "Hi", "--max-new-tokens", "2"])
        assert code == 2 and "needs macOS" in capsys.readouterr().err
    states = [s for s in manifest["graphs"]["methods"]["text_decoder"]["states"] if "vision" in s["name"]]
    assert states == []  # vision K/V are inputs of the Core ML text decoder, never its state
    code = generate_main(["--build", str(build), "--prompt", "Hi", "--max-new-tokens", "2", "--backend", "torch"])
    assert code == 0


@pytest.mark.slow
def test_parity_of_a_coreml_build_off_macos_is_one_answer(builds, capsys):
    """runtime.parity prints the checks recorded at export and the Mac command (exit 3, pending, no PASS);
    --backend torch is refused with the same advice, and following it gives that answer."""
    import sys

    from runtime.parity import EXIT_PENDING
    from runtime.parity import main as parity_main

    if sys.platform == "darwin":
        return  # Core ML predicts there: runtime.parity runs the real check (test_build_meets_parity_floors...)
    build = builds.get("coreml", "mixed")
    capsys.readouterr()
    assert parity_main(["--build", str(build)]) == EXIT_PENDING
    out = capsys.readouterr().out
    assert "PASS" not in out and '"passed": null' in out
    assert "traced_vs_eager" in out and "saved_specs" in out and "min PSNR" in out
    assert f"`python -m runtime.parity --build {build}`" in out and "macOS 15" in out
    assert parity_main(["--build", str(build), "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"`python -m runtime.parity --build {build}`" in err
    assert "prints the checks" in err and "--backend torch:" in err


@pytest.mark.slow
def test_a_builds_last_line_and_summary_say_pending_for_coreml_and_the_try_command_runs(builds, capsys):
    import shlex
    import sys
    from pathlib import Path

    from export.build import parity_line, summary
    from runtime.generate import main as generate_main

    onnx, coreml = builds.get("onnx", "dense"), builds.get("coreml", "mixed")
    capsys.readouterr()
    table = summary([onnx, coreml], failed="executorch").splitlines()
    rows = {line.split()[0]: line for line in table if line.startswith(("/", "("))}
    graphs_mb = sum(f.stat().st_size for f in onnx.glob("*.onnx*")) / 1e6
    disk_mb = sum(f.stat().st_size for f in onnx.rglob("*") if f.is_file()) / 1e6
    assert rows[str(onnx)].split()[1:6] == ["passed", f"{graphs_mb:.1f}", "MB", f"{disk_mb:.1f}", "MB"]
    assert rows["(executorch:"].split()[3] == "failed"
    command = rows[str(onnx)].split("  ")[-1]
    argv = shlex.split(command)
    assert argv[1:3] == ["-m", "runtime.generate"] and Path(argv[0]).absolute() == Path(sys.executable).absolute()
    assert generate_main(argv[3:] + ["--max-new-tokens", "2"]) == 0  # the command to try it runs as printed
    if sys.platform != "darwin":
        assert "pending on macOS" in rows[str(coreml)] and "passed" not in rows[str(coreml)]
        assert rows[str(coreml)].endswith(f"on macOS 15+: python -m runtime.parity --build {coreml}")
        line = parity_line(json.loads((coreml / "parity.json").read_text()), coreml)
        assert "PENDING" in line and "pass" not in line.lower()
