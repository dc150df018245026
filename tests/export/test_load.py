"""export/load.py on real-layout checkpoints: a MobileVLM V2 release with only a SentencePiece tokenizer.model
builds, and its build's tokenizer.json encodes as SentencePiece does; a transformers FastVLM whose files do
not say its input size is refused in one line, and --image-size reaches the loader."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from export.build import main as build_main
from export.load import load, load_model_config
from runtime.tokenizer import PromptTokenizer
from tests.models.test_checkpoint import CLIP_TINY, hf_fastvlm
from tests.models.test_checkpoint_files import V1_SYSTEM, llama_slow_ids, train_sentencepiece


def assert_one_line_error(code, err, *words):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])


def write_mobilevlm_release(path, vocab_size):
    """MobileVLM V2's layout (config.json, weights) with random tiny weights, and no tokenizer files."""
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP_TINY))
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, intermediate_size=160, vocab_size=vocab_size))
    state = {f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()}
    state.update(llama.state_dict())
    for i, shape in ((0, (64, 32)), (2, (64, 64))):
        state[f"model.mm_projector.mlp.mlp.{i}.weight"] = torch.randn(shape) / shape[1] ** 0.5
        state[f"model.mm_projector.mlp.mlp.{i}.bias"] = torch.zeros(64)
    state["model.mm_projector.peg.peg.0.weight"] = torch.randn(64, 1, 3, 3) / 3
    state["model.mm_projector.peg.peg.0.bias"] = torch.zeros(64)
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    config = {"model_type": "mobilevlm", "vocab_size": vocab_size, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 160, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 2048, "tie_word_embeddings": False, "vision_tower_type": "clip",
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "ldpnetv2",
              "mm_hidden_size": 32, "mm_vision_select_layer": -2, "image_aspect_ratio": "pad",
              "vision_config": CLIP_TINY}
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_mobilevlm_release_with_only_tokenizer_model_builds(tmp_path):
    ckpt = tmp_path / "MobileVLM_V2-tiny"
    write_mobilevlm_release(ckpt, vocab_size=320)
    sp = train_sentencepiece(ckpt)
    assert sp.get_piece_size() == 320 and not (ckpt / "tokenizer.json").exists()
    assert build_main(["--target", "onnx", "--model", str(ckpt), "--out", str(tmp_path / "build"),
                       "--max-seq-len", "256"]) == 0
    build = tmp_path / "build" / "MobileVLM_V2-tiny-dense-onnx"
    manifest = json.loads((build / "manifest.json").read_text())
    assert not (ckpt / "tokenizer.json").exists()  # the release directory is left as it was
    tok = PromptTokenizer(build / manifest["tokenizer"], manifest["prompt"])
    question = "What colour is the square? café 東京 🙂"
    first, second = f"{V1_SYSTEM} USER: <image>\n{question} ASSISTANT:".split("<image>")
    assert tok.encode_prompt(question) == (llama_slow_ids(sp, first), llama_slow_ids(sp, second, bos=False))
    assert tok.stop_ids == (sp.eos_id(),)


@pytest.fixture(scope="module")
def sizeless_fastvlm(tmp_path_factory):
    """A transformers FastVLM with neither preprocessor_config.json nor image_seq_length, and a tokenizer."""
    path = tmp_path_factory.mktemp("fastvlm") / "ckpt"
    hf_fastvlm(tied=True).save_pretrained(path)
    raw = json.loads((path / "config.json").read_text())
    del raw["image_seq_length"]
    (path / "config.json").write_text(json.dumps(raw))
    train_sentencepiece(path, vocab_size=300)  # any tokenizer: the size is what is checked here
    return path


def test_build_refuses_a_checkpoint_that_does_not_say_its_size(sizeless_fastvlm, tmp_path, capsys):
    code = build_main(["--target", "onnx", "--model", str(sizeless_fastvlm), "--out", str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, "preprocessor_config.json", "--image-size")
    assert not any(tmp_path.iterdir())


def test_image_size_reaches_the_loader(sizeless_fastvlm):
    loaded = load(str(sizeless_fastvlm), "dense", 192, 32)
    assert (loaded.vlm.cfg.vision.image_size, loaded.vlm.cfg.num_vision_tokens) == (192, 36)
    assert loaded.tokenizer.name == "tokenizer.json" and loaded.tokenizer.is_file()
    cfg, tokenizer = load_model_config(str(sizeless_fastvlm), 192, None)
    assert cfg == loaded.vlm.cfg.replace(decoder={"max_seq_len": cfg.decoder.max_seq_len})
    assert tokenizer.read_text() == loaded.tokenizer.read_text()
