"""Fidelity helpers: how far a run's answer distribution is from the dense model's.

Shared by the plan search (export/calibrate.py) and the evaluation tool (tools/evaluate.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row, in nats."""
    lp = _log_softmax(p_logits.astype(np.float64))
    lq = _log_softmax(q_logits.astype(np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def model_and_tokenizer(model_dir, plan="dense", tokenizer=None):
    """The PyTorch model under `plan` (eval mode) and its prompt tokenizer (default: the model's file)."""
    from models.checkpoint import load_model

    vlm = load_model(model_dir, plan=plan).eval()
    return vlm, prompt_tokenizer(vlm.cfg, tokenizer or Path(model_dir) / "tokenizer.json")


def prompt_tokenizer(cfg, path):
    """The prompt tokenizer of a model config (its template and stop tokens) over a tokenizer.json."""
    from .tokenizer import PromptTokenizer

    p = cfg.prompt
    return PromptTokenizer(path, {"before_image": p.before_image, "after_image": p.after_image,
                                  "stop_tokens": p.stop_tokens})
