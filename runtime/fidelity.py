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

    from .tokenizer import PromptTokenizer

    vlm = load_model(model_dir, plan=plan).eval()
    p = vlm.cfg.prompt
    tok = PromptTokenizer(tokenizer or Path(model_dir) / "tokenizer.json", {"before_image": p.before_image,
                          "after_image": p.after_image, "stop_tokens": p.stop_tokens})
    return vlm, tok
