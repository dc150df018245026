"""export/random_model.py: builds are byte-identical, and the committed checkpoint is what the code makes."""

import hashlib

import pytest
import torch

from export.random_model import RANDOM_MODEL_DIR, SPECIAL_TOKENS, main, make_random_model
from models.checkpoint import load_model
from models.config import ModelConfig
from runtime.tokenizer import PromptTokenizer

FILES = ("config.json", "model.safetensors", "tokenizer.json")
STALE = "checkpoints/foveate-tiny-random is stale: regenerate it with `python -m export.random_model`"


def digests(path):
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in FILES}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("a") / "tiny")


def test_two_builds_are_byte_identical(fresh, tmp_path):
    assert main(["--out", str(tmp_path / "tiny")]) == 0
    assert digests(tmp_path / "tiny") == digests(fresh)
    assert sorted(p.name for p in fresh.iterdir()) == sorted(FILES)  # no staging leftovers
    assert [p.name for p in fresh.parent.iterdir()] == ["tiny"]


def test_vocabulary_matches_the_tokenizer(fresh):
    model = load_model(fresh)
    tok = PromptTokenizer(fresh / "tokenizer.json", {"stop_tokens": list(model.cfg.prompt.stop_tokens)})
    assert model.cfg.decoder.vocab_size == tok.vocab_size
    assert model.cfg.decoder.max_seq_len == 256
    assert all(tok.tokenizer.token_to_id(t) is not None for t in SPECIAL_TOKENS)
    assert len(tok.stop_ids) == 2


def test_committed_checkpoint_equals_a_fresh_one(fresh):
    assert (RANDOM_MODEL_DIR / "tokenizer.json").read_bytes() == (fresh / "tokenizer.json").read_bytes(), STALE
    committed, made = load_model(RANDOM_MODEL_DIR), load_model(fresh)
    assert committed.cfg == made.cfg == ModelConfig.from_dict(committed.cfg.to_dict())
    assert committed.cfg.family == "fastvlm" and committed.cfg.vision.image_size == 128
    for (name, a), (_, b) in zip(committed.state_dict().items(), made.state_dict().items(), strict=True):
        # equal up to the last bit of the init's vectorised math, which differs between CPUs (one ulp,
        # ~4e-9, on an AMD EPYC against the Intel Xeon that wrote the checkpoint); a stale one is ~1e-2 off
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=lambda m, name=name: f"{name}: {STALE}\n{m}")
    tok = PromptTokenizer(fresh / "tokenizer.json", vars_of(committed.cfg.prompt))
    before, after = tok.encode_prompt("What colour is the square?")
    pixels = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    outs = [m.generate(torch.tensor([before]), pixels, torch.tensor([after]), max_new_tokens=8)
            for m in (committed, made)]
    assert outs[0] == outs[1]
    assert len(set(outs[0])) > 1  # random weights scaled so that greedy decoding does not repeat one token


def vars_of(prompt) -> dict:
    return {"before_image": prompt.before_image, "after_image": prompt.after_image,
            "stop_tokens": list(prompt.stop_tokens), "image_token": prompt.image_token}
