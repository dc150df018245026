"""A seeded, random-weight tiny FastVLM with a real tokenizer: the fast model of the export tests.

It exports in seconds and is reproducible byte for byte; it answers nothing. The shipped default
model is the trained one (`checkpoints/foveate-tiny`, models/train.py).

    python -m export.random_model                  # writes checkpoints/foveate-tiny-random/
    python -m export.random_model --out /tmp/tiny  # anywhere else

Architecture: preset "fastvlm-tiny" (timm FastViT/MCi tower, mlp2x_gelu projector, Qwen2-style decoder)
with the decoder's vocabulary sized to the tokenizer and a 256-token text KV capacity. The tokenizer is
a byte-level BPE trained with `tokenizers` on the fixed text below (the Qwen2 chat template plus short
visual questions and answers), with Qwen2's special tokens and "<image>". Everything is deterministic:
two runs write byte-identical files. The weights are torch's default init under seed 0, with the
decoder's linear weights scaled by DECODER_GAIN: at the default scale the residual stream stays
dominated by the input token's own (tied) embedding, and greedy decoding repeats one token forever,
which would make token-match tests pass trivially.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from data.tokenizer import SPECIAL_TOKENS, train_bpe

from models.checkpoint import replace_dir, write_model_files
from models.config import QWEN2_PROMPT, ModelConfig, preset
from models.vlm import VLM

RANDOM_MODEL_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "foveate-tiny-random"
VOCAB_SIZE = 512  # the fastvlm-tiny preset's vocabulary, bytes + specials + merges
MAX_SEQ_LEN = 256
SEED = 0
DECODER_GAIN = 3.0

CORPUS = [
    "What colour is the square? The square is red.",
    "What colour is the circle? The circle is blue.",
    "What colour is the triangle? The triangle is green.",
    "Is there a red shape? Yes, there is a red square.",
    "Is there a yellow shape? No, there is no yellow shape.",
    "Is there a blue circle in the image? Yes.",
    "Is there a green triangle in the image? No.",
    "How many circles are there? There are three circles.",
    "How many squares are there? There are two squares.",
    "How many triangles are there? There is one triangle.",
    "How many shapes are in the picture? There are four shapes.",
    "How many red shapes are there? There are five red shapes.",
    "Count the blue dots. Six.",
    "Count the green squares. Seven.",
    "Count the stars. Eight stars.",
    "Is the circle left of the square? Yes, the circle is to the left of the square.",
    "Is the triangle above the circle? No, the triangle is below the circle.",
    "Where is the red square? The red square is in the top left corner.",
    "Where is the blue circle? The blue circle is in the bottom right corner.",
    "Where is the green triangle? It is in the centre of the image.",
    "Which shape is on the right? The square is on the right.",
    "Which shape is at the top? The circle is at the top.",
    "What shape is red? The red shape is a circle.",
    "What shape is purple? The purple shape is a star.",
    "What digit is written in the box? The digit is 3.",
    "What number do you see? I see the number 7.",
    "Read the digit on the left. It is 4.",
    "Read the digit on the right. It is 9.",
    "What is the largest shape? The largest shape is the orange square.",
    "What is the smallest shape? The smallest shape is the white circle.",
    "Are the two circles the same colour? No, one is black and one is white.",
    "Are all the shapes blue? Yes, all the shapes are blue.",
    "What colour is the background? The background is gray.",
    "Describe the image. A red circle and a blue square on a white background.",
    "Describe the image. Two green triangles above a yellow star.",
    "Describe the image. Three black dots in a row from left to right.",
    "Is the star between the circle and the square? Yes, the star is in the middle.",
    "Is the square bigger than the circle? No, the square is smaller.",
    "What is next to the triangle? A small pink circle is next to the triangle.",
    "What is under the star? Nothing is under the star.",
    "How many colours are there? There are zero, one, two, three, four, five, six, seven, eight, nine, "
    "ten colours.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 100.",
    "Colours: red, green, blue, yellow, orange, purple, pink, brown, black, white, gray.",
    "Shapes: circle, square, triangle, star, dot, line, rectangle, diamond, cross, heart.",
    "Positions: left, right, top, bottom, middle, centre, above, below, next to, between, corner.",
    "What is this? This is a picture of shapes.",
    "What is in the image? There is a cat in the image.",
    "Please answer the question with one word. Red.",
    "Answer yes or no. Yes. No.",
]
TEMPLATE = [
    QWEN2_PROMPT.before_image + "<image>" + QWEN2_PROMPT.after_image.replace("{prompt}", question) + answer
    + "<|im_end|>\n<|endoftext|>"
    for question, answer in (("What colour is the square?", "Red."), ("How many circles are there?", "Three."))
]


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE trained on CORPUS and the template; the special tokens get ids 0..3."""
    return train_bpe(TEMPLATE + CORPUS, vocab_size)


def random_config(vocab_size: int) -> ModelConfig:
    return preset("fastvlm-tiny").replace(decoder={"vocab_size": vocab_size, "max_seq_len": MAX_SEQ_LEN})


def build_random_model() -> tuple[VLM, Tokenizer]:
    """The random VLM (eval mode) and its tokenizer, built from seeds alone."""
    tok = train_tokenizer()
    cfg = random_config(tok.get_vocab_size(with_added_tokens=True))
    torch.manual_seed(SEED)
    vlm = VLM(cfg)
    with torch.no_grad():
        for name, p in vlm.decoder.named_parameters():
            if p.dim() == 2 and not name.startswith("embed_tokens"):  # q/k/v/o, gate/up/down projections
                p.mul_(DECODER_GAIN)
    return vlm.eval(), tok


def make_random_model(out_dir=RANDOM_MODEL_DIR) -> Path:
    """Write config.json, model.safetensors and tokenizer.json to `out_dir`, replacing it atomically."""
    out = Path(out_dir)
    vlm, tok = build_random_model()
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_model_files(vlm, staging)
        tok.save(str(staging / "tokenizer.json"), pretty=True)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RANDOM_MODEL_DIR), help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    out = make_random_model(args.out)
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.2f} MB" for f in sorted(out.iterdir()))
    print(f"wrote {out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
