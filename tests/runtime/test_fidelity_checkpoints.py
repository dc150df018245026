"""runtime/fidelity.py on checkpoints as releases ship them: the tokenizer converted when there is no
tokenizer.json (the directory left as it is), and the model at an --image-size, as export/build.py loads it."""

import json

import pytest
import torch

from export.random_model import RANDOM_MODEL_DIR
from models.checkpoint import CheckpointError, load_model
from models.checkpoint_files import convert_tokenizer
from models.plan import PlanError
from runtime.fidelity import checkpoint_config, checkpoint_model, model_and_tokenizer, resized_config
from runtime.tokenizer import PromptTokenizer
from tests.models.test_checkpoint_files import V1_SYSTEM, llama_slow_ids
from tests.releases import files_of, sentencepiece_release, sizeless_fastvlm, vocab_merges_release


@pytest.fixture(scope="module")
def spm_release(tmp_path_factory):
    return sentencepiece_release(tmp_path_factory.mktemp("releases") / "MobileVLM_V2-tiny")


@pytest.fixture(scope="module")
def sizeless(tmp_path_factory):
    return sizeless_fastvlm(tmp_path_factory.mktemp("releases") / "fastvlm")


def test_a_sentencepiece_release_gets_its_converted_tokenizer(spm_release):
    import sentencepiece as spm

    before = files_of(spm_release)
    vlm, tok = model_and_tokenizer(spm_release)
    assert files_of(spm_release) == before  # nothing written into the checkpoint
    sp = spm.SentencePieceProcessor(model_file=str(spm_release / "tokenizer.model"))
    question = "How many circles? café 東京"
    first, second = f"{V1_SYSTEM} USER: <image>\n{question} ASSISTANT:".split("<image>")
    assert tok.encode_prompt(question) == (llama_slow_ids(sp, first), llama_slow_ids(sp, second, bos=False))
    assert tok.stop_ids == (sp.eos_id(),) and vlm.cfg.family == "mobilevlm"


def test_a_vocab_merges_release_encodes_as_its_converted_tokenizer_json(tmp_path):
    release = vocab_merges_release(tmp_path / "qwen")
    before = files_of(release)
    vlm, tok = model_and_tokenizer(release)
    assert files_of(release) == before
    convert_tokenizer(release).save(str(tmp_path / "tokenizer.json"))
    prompt = {"before_image": vlm.cfg.prompt.before_image, "after_image": vlm.cfg.prompt.after_image,
              "stop_tokens": vlm.cfg.prompt.stop_tokens}
    saved = PromptTokenizer(tmp_path / "tokenizer.json", prompt)
    for text in ("What shape is left of the circle?", "déjà vu 🙂", ""):
        assert tok.encode_prompt(text) == saved.encode_prompt(text)
    im_end = json.loads((release / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert set(tok.stop_ids) == {int(i) for i, t in im_end.items() if t["content"] in vlm.cfg.prompt.stop_tokens}


def test_a_release_missing_half_its_tokenizer_is_refused(tmp_path):
    release = vocab_merges_release(tmp_path / "qwen")
    (release / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="needs vocab.json and merges.txt"):
        model_and_tokenizer(release)


def test_the_size_of_a_sizeless_checkpoint_comes_from_image_size(sizeless):
    with pytest.raises(CheckpointError, match="--image-size"):
        checkpoint_config(sizeless)
    vlm, _ = model_and_tokenizer(sizeless, image_size=64)
    assert (vlm.cfg.vision.image_size, vlm.cfg.num_vision_tokens) == (64, 4)  # stride 32: 2 x 2 tokens
    assert checkpoint_config(sizeless, 64) == vlm.cfg


def test_image_size_runs_a_sized_encoder_at_another_side_with_the_same_weights():
    original = load_model(RANDOM_MODEL_DIR)
    assert (original.cfg.vision.image_size, original.cfg.num_vision_tokens) == (128, 16)
    plan = {"name": "top-40", "keep_topk": {"from_layer": 1, "k": 40}}  # 40 of the 64 tokens at 256 px
    with pytest.raises(PlanError):
        checkpoint_model(RANDOM_MODEL_DIR, plan)  # there are 16 at 128 px
    vlm = checkpoint_model(RANDOM_MODEL_DIR, plan, image_size=256)
    assert not vlm.training and vlm.cfg.num_vision_tokens == 64 and vlm.plan.keep_topk.k == 40
    assert vlm.cfg == original.cfg.replace(vision={"image_size": 256})
    theirs = original.state_dict()
    for name, t in vlm.state_dict().items():
        assert torch.equal(t, theirs[name]), name
    with torch.no_grad():
        tokens = vlm.encode_image(torch.rand(1, 3, 256, 256))
    assert tokens.shape == (1, 64, vlm.cfg.decoder.hidden_size) and torch.isfinite(tokens).all()


@pytest.mark.parametrize("size, says", [(100, "multiple of the encoder stride 32"), (0, "positive multiple"),
                                        (-32, "positive multiple")])
def test_sizes_the_encoder_cannot_take_are_refused(size, says):
    with pytest.raises(CheckpointError, match=says):
        checkpoint_config(RANDOM_MODEL_DIR, size)


def test_a_clip_encoder_keeps_the_size_of_its_position_embeddings(spm_release):
    cfg = checkpoint_config(spm_release)
    assert cfg.vision.kind == "clip" and cfg.vision.image_size == 56  # 8 x 8 patches of 7 px
    assert resized_config(cfg, 56) is cfg
    with pytest.raises(CheckpointError) as e:
        checkpoint_config(spm_release, 112)
    message = str(e.value)
    assert "position_embedding" in message and "(65, 32)" in message and "\n" not in message
