"""Quantized builds: ONNX int8 (onnxruntime dynamic), judged by fidelity floors instead of the fp32 parity floor."""

import json

import pytest

from export.build import main as build_main
from export.random_model import RANDOM_MODEL_DIR
from models.protocol import KVLayout
from runtime.parity import QUANT_COSINE_FLOOR, judge
from runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant")
    assert build_main(["--target", "onnx", "--model", str(RANDOM_MODEL_DIR), "--plan", "dense", "--quant", "int8",
                       "--out", str(out)]) == 0
    return out / "foveate-tiny-random-dense-onnx-int8"


@pytest.mark.slow
def test_int8_build_is_smaller_and_keeps_fidelity(int8_build, builds):
    fp32 = builds.get("onnx", "dense")
    manifest = json.loads((int8_build / "manifest.json").read_text())
    assert manifest["quant"] == "int8" and json.loads((fp32 / "manifest.json").read_text())["quant"] == "none"
    size = {d: {f: (d / f).stat().st_size for f in manifest["graphs"]["files"]} for d in (fp32, int8_build)}
    # int8 weights are a quarter of fp32; the tied embedding table used by the LM head stays fp32 beside them
    assert size[int8_build]["text_decoder.onnx"] < 0.6 * size[fp32]["text_decoder.onnx"]
    report = json.loads((int8_build / "parity.json").read_text())
    assert report["passed"] and report["quant"] == "int8"
    assert all(m["cosine"] >= QUANT_COSINE_FLOOR for m in report["stages"].values())
    assert min(m["psnr_db"] for m in report["stages"].values()) < 100  # really quantized: not bit-exact


@pytest.mark.slow
def test_int8_build_answers_like_the_fp32_build(int8_build, builds):
    fp32 = Pipeline(builds.get("onnx", "dense"))
    int8 = Pipeline(int8_build)
    image = int8_build / "golden" / "case0.png"
    a = fp32.generate(image, "What colour is the square?", max_new_tokens=6)
    b = int8.generate(image, "What colour is the square?", max_new_tokens=6)
    assert a.ids[0] == b.ids[0]


def test_quantized_graphs_are_judged_by_cosine():
    good = {"prefill_logits": {"cosine": 0.9995, "psnr_db": 41.0, "max_abs": 0.1}}
    bad = {"prefill_logits": {"cosine": 0.70, "psnr_db": 8.0, "max_abs": 3.0}}
    assert judge(good, False, "fp32", "int8")["passed"]  # greedy tokens may differ under quantization
    assert not judge(good, True, "fp32")["passed"]  # 41 dB misses the fp32 export floor
    failed = judge(bad, True, "fp32", "int8")
    assert not failed["passed"] and "cosine 0.7000" in failed["failures"][0]


@pytest.mark.parametrize("target", ["executorch", "all"])
def test_int8_is_for_the_onnx_target(tmp_path, capsys, target):
    assert build_main(["--target", target, "--model", str(RANDOM_MODEL_DIR), "--quant", "int8",
                       "--out", str(tmp_path)]) == 2
    assert "onnx target only" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_8da4w_unties_the_head_and_stores_the_embedding_in_int8():
    import torch

    from export.executorch import Int8Embedding, quantize_8da4w
    from models.checkpoint import load_model

    vlm = load_model(RANDOM_MODEL_DIR)
    table = vlm.decoder.embed_tokens.weight.detach().clone()
    q = quantize_8da4w(vlm)
    assert vlm.decoder.lm_head is None and isinstance(vlm.decoder.embed_tokens, torch.nn.Embedding)  # a copy
    emb = q.decoder.embed_tokens
    assert isinstance(emb, Int8Embedding) and emb.weight_int8.dtype == torch.int8
    assert emb.weight_int8.abs().amax(dim=1).eq(127).all()  # each row uses its whole int8 range
    ids = torch.arange(vlm.cfg.decoder.vocab_size)[None]
    rows = q.decoder.embed(ids)[0]
    assert (rows - table).abs().le(emb.scale[:, None] / 2 + 1e-7).all()  # round to nearest
    assert not torch.equal(rows, table)
    h = torch.randn(1, 3, vlm.cfg.decoder.hidden_size)
    head = torch.nn.functional.cosine_similarity(q.decoder.logits(h).flatten(), vlm.decoder.logits(h).flatten(), 0)
    assert 0.999 < head < 0.999999  # the untied head is int8 per channel now: close, not equal
    linears = [m for m in q.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert {m.weight.target_dtype for m in linears if m is not q.decoder.lm_head} == {torch.int4}
    assert q.decoder.lm_head.weight.target_dtype == torch.int8


@pytest.mark.slow
def test_8da4w_executorch_build_of_the_trained_model(default_builds):
    """torchao 8da4w on the decoder's linears (int8 embedding), lowered to XNNPACK. On random weights
    int4 noise alone puts the logits' cosine near 0.93 (no structure to preserve), so this runs on the
    trained model."""
    from tools.evaluate import run_build, run_model, scores

    build = default_builds("executorch", "8da4w")
    assert build.name == "foveate-tiny-default-executorch-8da4w"
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["quant"] == "8da4w"
    report = json.loads((build / "parity.json").read_text())
    assert report["passed"] and min(m["psnr_db"] for m in report["stages"].values()) < 100
    from data.shapes import samples

    items = samples("test", "all", 48)
    quantized = run_build(build, items)
    fp32 = run_model(build / manifest["weights"], manifest["plan"], items, tokenizer=build / manifest["tokenizer"])
    # measured: 46 of 48 answers agree (92 of 96); int4 weights move a few near-tied answers either way
    agree = sum(a == b for a, b in zip(quantized.answers, fp32.answers)) / len(items)
    assert agree >= 0.9, agree
    q, f = scores(quantized, items, fp32), scores(fp32, items, None)
    assert q["top1_agreement"] >= 0.9
    assert abs(q["accuracy"]["all"] - f["accuracy"]["all"]) * len(items) <= 3 + 1e-9, (q["accuracy"], f["accuracy"])


def _op_counts(mlpackage):
    import collections

    import coremltools as ct

    spec = ct.models.MLModel(str(mlpackage), skip_model_load=True).get_spec()
    return collections.Counter(op.type for f in spec.mlProgram.functions.values()
                               for block in f.block_specializations.values() for op in block.operations)


@pytest.mark.slow
def test_int4_coreml_build_stores_every_linear_weight_in_int4(tmp_path, builds):
    assert build_main(["--target", "coreml", "--model", str(RANDOM_MODEL_DIR), "--plan", "dense", "--quant", "int4",
                       "--out", str(tmp_path)]) == 0
    build = tmp_path / "foveate-tiny-random-dense-coreml-int4"
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["quant"] == "int4" and manifest["dtype"] == "fp16"
    ops = _op_counts(build / "text_decoder.mlpackage")
    assert ops["linear"] > 0 and ops["constexpr_blockwise_shift_scale"] == ops["linear"]
    fp16 = builds.get("coreml", "dense")
    assert "constexpr_blockwise_shift_scale" not in _op_counts(fp16 / "text_decoder.mlpackage")
    size = {d: sum(f.stat().st_size for f in (d / "text_decoder.mlpackage").rglob("*") if f.is_file())
            for d in (build, fp16)}
    assert size[build] < 0.6 * size[fp16]


@pytest.mark.slow
def test_large_onnx_graphs_keep_weights_beside_them(tmp_path, monkeypatch):
    """Over EXTERNAL_DATA_BYTES the weights go to <graph>.onnx.data (a protobuf holds at most 2 GB); the
    manifest lists those files and the build still passes parity. The tiny model stands in, threshold 0."""
    import export.onnx

    monkeypatch.setattr(export.onnx, "EXTERNAL_DATA_BYTES", 0)
    assert build_main(["--target", "onnx", "--model", str(RANDOM_MODEL_DIR), "--plan", "dense",
                       "--out", str(tmp_path)]) == 0
    build = tmp_path / "foveate-tiny-random-dense-onnx"
    manifest = json.loads((build / "manifest.json").read_text())
    data = [f for f in manifest["graphs"]["files"] if f.endswith(".onnx.data")]
    assert "text_decoder.onnx.data" in data and all((build / f).stat().st_size > 0 for f in data)
    assert (build / "text_decoder.onnx").stat().st_size < (build / "text_decoder.onnx.data").stat().st_size
    assert json.loads((build / "parity.json").read_text())["passed"]
    assert build_main(["--target", "onnx", "--model", str(RANDOM_MODEL_DIR), "--plan", "dense", "--quant", "int8",
                       "--out", str(tmp_path / "q")]) == 3


def test_int8_vision_encoder_program_is_quantized_and_close():
    """PT2E int8 of the trained model's vision encoder method, calibrated on task images: the program
    carries quantize/dequantize pairs and its embeddings stay close to fp32 on images it was not
    calibrated on (the build's parity floor is a cosine of 0.99)."""
    import torch

    from export import graphs
    from export.executorch import calibration_pixels, quantize_vision_int8
    from export.load import SHIPPED_MODEL_DIR
    from models.checkpoint import load_model

    vlm = load_model(SHIPPED_MODEL_DIR).eval()
    module = graphs.wrappers(vlm, "split")["vision_encoder"]
    method = graphs.methods(vlm.cfg, KVLayout.derive(vlm.cfg, vlm.plan, "split"))["vision_encoder"]
    pixels = calibration_pixels(vlm, 36)
    program = quantize_vision_int8(module, graphs.example_inputs(method), pixels[:32])  # as the build calibrates
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in targets) and any("dequantize_per_channel" in t for t in targets)
    with torch.no_grad():
        for x in pixels[32:]:  # images the ranges were not calibrated on
            fp32, int8 = module(x).flatten(), program.module()(x).flatten()
            assert not torch.equal(fp32, int8)
            assert torch.nn.functional.cosine_similarity(fp32, int8, dim=0) > 0.99


def test_batch_norms_with_a_shared_input_survive_pt2e_preparation():
    """A conv whose output feeds both a residual and a batch norm (FastViT's attention blocks): after the
    rewrite no batch norm reads a shared input, and the graph prepared for quantization computes what
    the eager module does."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torch.export import export
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from export.executorch import unshare_batch_norms

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.norm = torch.nn.BatchNorm2d(8)
            self.mix = torch.nn.Conv2d(8, 8, 1)
            self.out_norm = torch.nn.BatchNorm2d(8)  # after a conv read by nothing else: left to the fold

        def forward(self, x):
            x = self.pos(x)
            return self.out_norm(self.mix(x + self.norm(x)))

    torch.manual_seed(0)
    block = Block()
    for bn in (block.norm, block.out_norm):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(1, 8, 6, 6)
    graph = unshare_batch_norms(export(block, (x,), strict=False).module())
    norms = [n for n in graph.graph.nodes if n.target is torch.ops.aten.batch_norm.default]
    assert len(norms) == 1 and len(norms[0].args[0].users) == 1  # only out_norm is left
    with torch.no_grad():
        torch.testing.assert_close(graph(x), block(x))
        torch.testing.assert_close(prepare_pt2e(graph, XNNPACKQuantizer())(x), block(x))


@pytest.mark.slow
def test_int8_vision_encoder_answers_like_fp32():
    """The trained model with its vision encoder in PT2E int8 (eager, as calibrated for the build)
    answers 48 test questions as the fp32 model does."""
    from data.shapes import samples
    from export import graphs
    from export.executorch import calibration_pixels, quantize_vision_int8
    from export.load import SHIPPED_MODEL_DIR
    from runtime.fidelity import model_and_tokenizer
    from tools.evaluate import run_vlm, scores

    items = samples("test", "all", 48)
    vlm, tok = model_and_tokenizer(SHIPPED_MODEL_DIR, "dense")
    fp32 = run_vlm(vlm, tok, items, "fp32")
    method = graphs.methods(vlm.cfg, KVLayout.derive(vlm.cfg, vlm.plan, "split"))["vision_encoder"]
    program = quantize_vision_int8(graphs.wrappers(vlm, "split")["vision_encoder"], graphs.example_inputs(method),
                                   calibration_pixels(vlm))
    vlm.encode_image = program.module()
    int8 = run_vlm(vlm, tok, items, "vision int8")
    q, f = scores(int8, items, fp32), scores(fp32, items, None)
    assert q["top1_agreement"] >= 0.9, q
    assert sum(a == b for a, b in zip(int8.answers, fp32.answers)) >= 0.9 * len(items)
    assert abs(q["accuracy"]["all"] - f["accuracy"]["all"]) * len(items) <= 2 + 1e-9, (q["accuracy"], f["accuracy"])


def test_int8_vision_is_for_executorch(tmp_path, capsys):
    assert build_main(["--target", "onnx", "--model", str(RANDOM_MODEL_DIR), "--quant-vision", "int8",
                       "--out", str(tmp_path)]) == 2
    assert "executorch target only" in capsys.readouterr().err
