"""The runtime pipeline: the torch backend equals the models' eager forward; sampling options behave
(the sampler itself: tests/runtime/test_sampler.py)."""

import pytest
import torch

from models.checkpoint import load_model
from runtime.image import preprocess
from runtime.manifest import load_manifest
from runtime.pipeline import Pipeline


@pytest.mark.slow
def test_torch_backend_equals_eager_model(builds):
    build = builds.get("onnx", "mixed")
    manifest = load_manifest(build)
    pipe = Pipeline(build, backend="torch")
    image, prompt = build / "golden" / "case1.png", "Where is the red square?"
    result = pipe.generate(image, prompt, max_new_tokens=10)
    model = load_model(build / "weights", plan=manifest["plan"], max_seq_len=manifest["kv"]["text_rows"])
    before, after = pipe.tokenizer.encode_prompt(prompt, with_image=True)
    pixels = torch.from_numpy(preprocess(image, manifest["image"]))
    eager = model.generate(torch.tensor([before]), pixels, torch.tensor([after]), max_new_tokens=10,
                           stop_ids=pipe.tokenizer.stop_ids)
    assert result.ids == eager


@pytest.mark.slow
def test_sampling_is_seeded_and_top_p_tiny_is_greedy(builds):
    pipe = Pipeline(builds.get("onnx", "mixed"))
    image = pipe.build_dir / "golden" / "case0.png"
    greedy = pipe.generate(image, "What is it?", max_new_tokens=8).ids
    a = pipe.generate(image, "What is it?", max_new_tokens=8, temperature=1.5, seed=3).ids
    b = pipe.generate(image, "What is it?", max_new_tokens=8, temperature=1.5, seed=3).ids
    assert a == b
    assert pipe.generate(image, "What is it?", max_new_tokens=8, temperature=1.0, top_p=1e-9).ids == greedy
