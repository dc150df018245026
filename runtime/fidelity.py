"""Fidelity helpers: how far a run's answer distribution is from the dense model's, and the PyTorch model
with its prompt tokenizer from a checkpoint directory, as export/build.py would load them.

Shared by the plan search (export/calibrate.py) and the evaluation tool (tools/evaluate.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from models.checkpoint_files import resized_config


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row, in nats."""
    lp = _log_softmax(p_logits.astype(np.float64))
    lq = _log_softmax(q_logits.astype(np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def model_and_tokenizer(model_dir, plan="dense", tokenizer=None, image_size: int | None = None):
    """The PyTorch model under `plan` (eval mode) at `image_size` (see checkpoint_config), and its prompt
    tokenizer: `tokenizer` (a tokenizer.json) or the checkpoint's own (see checkpoint_tokenizer)."""
    vlm = checkpoint_model(model_dir, plan, image_size)
    tok = prompt_tokenizer(vlm.cfg, tokenizer) if tokenizer else checkpoint_tokenizer(vlm.cfg, model_dir)
    return vlm, tok


def checkpoint_config(model_dir, image_size: int | None = None):
    """The checkpoint's config (no weights read) at `image_size`, as export/build.py's --image-size: the
    input side of a checkpoint whose files do not say it, else the encoder run at that side where its
    weights allow. A CheckpointError says why a size cannot be used."""
    from models.checkpoint import load_config

    cfg = load_config(model_dir, image_size=image_size)
    return cfg if image_size is None else resized_config(cfg, image_size)


def checkpoint_model(model_dir, plan="dense", image_size: int | None = None):
    """The checkpoint's VLM under `plan` (eval mode), at `image_size` as in checkpoint_config."""
    from models.checkpoint import load_config, load_model
    from models.vlm import VLM

    stated = load_config(model_dir, image_size=image_size)
    if image_size is None or image_size == stated.vision.image_size:
        return load_model(model_dir, plan=plan, image_size=image_size)
    sized = VLM(resized_config(stated, image_size), plan).eval()  # the plan resolved at this size's tokens
    sized.load_state_dict(load_model(model_dir, image_size=image_size).state_dict())
    return sized


def checkpoint_tokenizer(cfg, model_dir):
    """The prompt tokenizer of a checkpoint: its tokenizer.json, else one converted from tokenizer.model or
    vocab.json + merges.txt (models/checkpoint_files.py); the checkpoint directory is left as it is."""
    from models.checkpoint_files import convert_tokenizer

    converted = convert_tokenizer(model_dir)
    if converted is None:
        return prompt_tokenizer(cfg, Path(model_dir) / "tokenizer.json")
    with tempfile.TemporaryDirectory(prefix="foveate-tokenizer-") as tmp:  # read whole, then removed
        converted.save(str(Path(tmp) / "tokenizer.json"))
        return prompt_tokenizer(cfg, Path(tmp) / "tokenizer.json")


def prompt_tokenizer(cfg, path):
    """The prompt tokenizer of a model config (its template and stop tokens) over a tokenizer.json."""
    from .tokenizer import PromptTokenizer

    p = cfg.prompt
    return PromptTokenizer(path, {"before_image": p.before_image, "after_image": p.after_image,
                                  "stop_tokens": p.stop_tokens})
