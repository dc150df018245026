"""Checkpoint directories shaped as real releases ship them, made by the tests: only a SentencePiece
tokenizer.model (MobileVLM V2), only a Qwen2 vocab.json + merges.txt (the original FastVLM release), and a
transformers FastVLM whose files do not say its input size."""

import json
import shutil

from export.random_model import RANDOM_MODEL_DIR
from tests.export.test_load import write_mobilevlm_release
from tests.models.test_checkpoint import hf_fastvlm
from tests.models.test_checkpoint_files import train_sentencepiece, write_qwen2_files


def sentencepiece_release(path):
    """MobileVLM V2's layout, random tiny weights (a 56 px CLIP, 2 LLaMA layers), and a tokenizer.model."""
    write_mobilevlm_release(path, vocab_size=320)
    train_sentencepiece(path)
    assert not (path / "tokenizer.json").exists()
    return path


def vocab_merges_release(path):
    """The random tiny FastVLM with vocab.json + merges.txt (and Qwen2's added tokens) for its tokenizer."""
    shutil.copytree(RANDOM_MODEL_DIR, path)
    (path / "tokenizer.json").unlink()
    write_qwen2_files(path)  # 420 pieces + 3 added tokens: ids within the decoder's 512
    return path


def sizeless_fastvlm(path):
    """A transformers FastVLM (stride 32) with neither preprocessor_config.json nor image_seq_length."""
    hf_fastvlm(tied=True).save_pretrained(path)
    raw = json.loads((path / "config.json").read_text())
    del raw["image_seq_length"]
    (path / "config.json").write_text(json.dumps(raw))
    train_sentencepiece(path, vocab_size=300)
    return path


def files_of(path) -> dict:
    """Every file under `path` and its bytes: to check that loading wrote nothing there."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
