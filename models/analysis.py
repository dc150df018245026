"""Per-layer measurements of how a dense VLM uses its vision tokens: the seeds' layer analyses.

One observed whole-sequence forward (`trace`, models/reference.py) of [system text | image |
instruction | answer] through the dense decoder records per layer:
- allocation ("Multimodal Alignment and Acceleration of Large Models", eqs. 1-3): for each query
  that produces an answer token (the prompt's last token, then each answer token), the attention
  mass it puts on system / image / instruction / output keys, averaged over heads. The four sum to 1.
  Summed over the answer's queries that is λ; divided by the number of keys of the type, ε.
- influence (VisiPruner §4.3, eqs. 5-8): for every vision token j, the last prompt token's attention
  output (heads concatenated, before o_proj) with and without token j's attention weight (set to 0
  in every head, not renormalised): cosine similarity and L2 distance.
- vision states: the vision tokens' hidden states entering every layer and leaving the last, for
  linear CKA between layers (VISOR App. M): CKA(X, Y) = <K~, L~>_F / (|K~|_F |L~|_F), with K = X X^T
  and L = Y Y^T centred; computed here in the equivalent feature-space form.

`summarise` turns the traces of a calibration set into per-layer tables, including VisiPruner's
filtering layer (the first where masking a vision token drops the cosine below 0.995) and vision
exit layer (the later of two consecutive layers after it where none of the tokens kept at the
filtering layer, L2 >= threshold there, has a cosine below 0.995).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .reference import forward_sequence

TOKEN_TYPES = ("system", "image", "instruction", "output")
FILTER_COSINE = 0.995  # VisiPruner §4.4
KEEP_L2 = 0.2  # VisiPruner §4.4: tokens below this L2 at the filtering layer are dropped


@dataclass
class Trace:
    allocation: np.ndarray  # (L, Q, 4) attention mass per layer, answer query and token type (mean over heads)
    influence_cos: np.ndarray  # (L, N_v) last prompt token's attention output: cosine, masked vs not
    influence_l2: np.ndarray  # (L, N_v) the same, L2 distance
    vision_states: np.ndarray  # (L + 1, N_v, hidden) vision hidden states entering each layer, then leaving
    type_counts: np.ndarray  # (4,) keys of each type (output: answer tokens)
    logits: torch.Tensor  # (Q, V) the answer queries' next-token logits


@torch.no_grad()
def trace(vlm, prefix_ids: torch.Tensor, vision: torch.Tensor, after_ids: torch.Tensor,
          answer_ids: torch.Tensor) -> Trace:
    """prefix_ids (P,), vision embeddings (1, N_v, hidden), after_ids (T,) the prompt after the image,
    answer_ids (A,) the answer without its stop token. The model must be under the dense plan; the
    forward is models/reference.py's whole-sequence one, observed layer by layer."""
    dec = vlm.decoder
    if not dec.plan.is_dense:
        raise ValueError(f"layer analyses need the dense model, got plan {dec.plan.name!r}")
    P, N, T, A = len(prefix_ids), vision.shape[1], len(after_ids), len(answer_ids)
    seen = []
    logits = forward_sequence(dec, dec.embed(prefix_ids[None]), vision, dec.embed(torch.cat([after_ids, answer_ids])[None]),
                              T, observe=lambda x, probs, v: seen.append((x, probs, v)))
    kinds = torch.tensor([0] * P + [1] * N + [2] * T + [3] * A)
    last = P + N + T - 1  # the prompt's last token: its output picks the first answer token
    queries = torch.arange(last, P + N + T + A)  # (Q,) each predicts the next answer token or the stop token
    allocation, inf_cos, inf_l2 = [], [], []
    for x, probs, v in seen[:-1]:
        v = v.repeat_interleave(probs.shape[1] // v.shape[1], dim=1)  # (1, H, S, D)
        mass = probs[0][:, queries].mean(0)  # (Q, S)
        allocation.append(torch.stack([mass[:, kinds == t].sum(-1) for t in range(len(TOKEN_TYPES))], dim=-1))
        out = (probs[0, :, last, None] @ v[0])[:, 0]  # (H, D) the last prompt token's attention output per head
        c, d = _influence(probs[0, :, last, P:P + N], v[0, :, P:P + N], out)
        inf_cos.append(c)
        inf_l2.append(d)
    states = torch.stack([x[0, P:P + N] for x, _, _ in seen])  # (L + 1, N_v, hidden)
    return Trace(allocation=torch.stack(allocation).numpy(), influence_cos=torch.stack(inf_cos).numpy(),
                 influence_l2=torch.stack(inf_l2).numpy(), vision_states=states.numpy(),
                 type_counts=np.array([P, N, T, A]), logits=logits[0, T - 1:])


def _influence(weights, values, out):
    """weights (H, N) of one query on the vision keys, values (H, N, D), its output out (H, D) ->
    cosine and L2 (N,) between out and out with key j's weight zeroed in every head."""
    masked = out[:, None] - weights[..., None] * values  # (H, N, D)
    masked = masked.transpose(0, 1).reshape(values.shape[1], -1)  # (N, H*D)
    full = out.reshape(1, -1)  # (1, H*D)
    return F.cosine_similarity(masked, full, dim=-1), (masked - full).norm(dim=-1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two sets of features of the same n tokens, x (n, d1) and y (n, d2)."""
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else 0.0


def cka_matrix(states: np.ndarray) -> np.ndarray:
    """states (M, n, d) -> (M, M) pairwise linear CKA."""
    m = len(states)
    out = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = linear_cka(states[i], states[j])
    return out


def filtering_and_exit(cos: np.ndarray, l2: np.ndarray, threshold: float = FILTER_COSINE,
                       keep_l2: float = KEEP_L2) -> tuple[int | None, int | None, int]:
    """VisiPruner's layers for one sample, from influence (L, N_v): (filtering layer or None, vision
    exit layer or None, tokens kept at the filtering layer)."""
    layers = len(cos)
    hit = (cos < threshold).any(-1)  # (L,)
    if not hit.any():
        return None, None, 0
    first = int(np.argmax(hit))
    kept = l2[first] >= keep_l2
    quiet = ~(cos[:, kept] < threshold).any(-1)  # (L,) no kept token has a measurable influence
    for layer in range(first + 2, layers):
        if quiet[layer - 1] and quiet[layer]:
            return first, layer, int(kept.sum())
    return first, None, int(kept.sum())


def summarise(traces: list[Trace]) -> dict:
    """Per-layer means over a calibration set, as lists (JSON-ready)."""
    lam = np.stack([t.allocation.sum(1) for t in traces])  # (n, L, 4)
    eps = lam / np.maximum(np.stack([t.type_counts for t in traces])[:, None, :], 1)
    cos = np.stack([t.influence_cos for t in traces])  # (n, L, N_v)
    l2 = np.stack([t.influence_l2 for t in traces])
    layers = [filtering_and_exit(c, d) for c, d in zip(cos, l2)]
    num_layers = cos.shape[1]
    return {
        "token_types": list(TOKEN_TYPES),
        "allocation_per_query": np.concatenate([t.allocation for t in traces], 1).mean(1).tolist(),  # (L, 4)
        "lambda": lam.mean(0).tolist(),  # (L, 4)
        "epsilon": eps.mean(0).tolist(),  # (L, 4)
        "influence_cos_mean": cos.mean(0).tolist(),  # (L, N_v)
        "influence_cos_min": cos.min(-1).mean(0).tolist(),  # (L,) mean over samples of the layer's minimum
        "influence_l2_max": l2.max(-1).mean(0).tolist(),  # (L,)
        "influential_tokens": (cos < FILTER_COSINE).sum(-1).mean(0).tolist(),  # (L,) tokens below the threshold
        "filtering_layer": _histogram([f for f, _, _ in layers], num_layers),
        "exit_layer": _histogram([e for _, e, _ in layers], num_layers),
        "kept_tokens_median": float(np.median([k for f, _, k in layers if f is not None] or [0])),
        "cka": np.mean([cka_matrix(t.vision_states) for t in traces], axis=0).tolist(),  # (L+1, L+1)
        "samples": len(traces),
    }


def _histogram(values: list[int | None], num_layers: int) -> dict:
    """Counts per layer, 'none' for samples without one, and the mean over samples that have one."""
    counts = {str(layer): sum(v == layer for v in values) for layer in range(num_layers)}
    found = [v for v in values if v is not None]
    return {"counts": counts, "none": len(values) - len(found), "mean": float(np.mean(found)) if found else None}
