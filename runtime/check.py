"""Stage-by-stage parity of a build's graphs against the PyTorch model with the same plan.

Stages: vision embeddings, prefill logits (text before the image, image, question), decode logits
over N steps fed with the reference's greedy tokens; then exact greedy-token match on every golden
case. Floors and metrics live in runtime/parity.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backends import TorchBackend, make_backend
from .image import preprocess
from .manifest import BuildError, load_manifest
from .parity import compare, judge
from .pipeline import Pipeline
from .tokenizer import PromptTokenizer

N_DECODE = 4


def _drive(backend, manifest, pixels, before, after, tokens):
    """Run one conversation; return (vision embeds, prefill logits, decode logits per fed token)."""
    nv, shared = manifest["kv"]["vision_tokens"], backend.layout == "shared"
    backend.reset()
    pos = slot = 0

    def text(ids, select):
        nonlocal pos, slot
        embeds = backend.embed(np.array([ids], np.int64))
        out = backend.text(embeds, np.arange(pos, pos + len(ids), dtype=np.int64), slot, select)
        pos, slot = pos + len(ids), slot + len(ids)
        return out

    if before:
        text(before, False)
    vision = backend.encode_image(pixels)
    if shared:
        backend.text(vision, np.arange(pos, pos + nv, dtype=np.int64), slot, False)
        slot += nv
    else:
        backend.prefill_vision(vision, pos)
    pos += nv
    prefill = text(after, True)
    decode = [text([t], False) for t in tokens]
    return vision, prefill, np.concatenate(decode, axis=1) if decode else None


def stage_metrics(ref, backend, manifest, pixels, before, after, n_decode: int = N_DECODE) -> dict:
    tokens = _greedy_tokens(ref, manifest, pixels, before, after, n_decode)
    r = _drive(ref, manifest, pixels, before, after, tokens)
    o = _drive(backend, manifest, pixels, before, after, tokens)
    names = ("vision_embeddings", "prefill_logits", "decode_logits")
    return {name: compare(a, b) for name, a, b in zip(names, r, o)}


def _greedy_tokens(backend, manifest, pixels, before, after, n) -> list[int]:
    tokens = []
    for _ in range(n):
        _, prefill, decode = _drive(backend, manifest, pixels, before, after, tokens)
        last = decode[0, -1] if tokens else prefill[0, -1]
        tokens.append(int(np.argmax(last)))
    return tokens


def check_build(build_dir: Path, backend: str | None = None, manifest: dict | None = None) -> dict:
    """Parity report of the build's backend (or `backend`) against the PyTorch model."""
    build_dir = Path(build_dir)
    manifest = manifest or load_manifest(build_dir)
    golden = json.loads((build_dir / "golden.json").read_text())
    if backend == "torch":
        raise BuildError("parity compares an exported graph with torch; choose the build's own backend")
    ref = TorchBackend(build_dir, manifest)
    out = make_backend(backend, build_dir, manifest)
    tok = PromptTokenizer(build_dir / manifest["tokenizer"], manifest["prompt"])
    first = golden["cases"][0]
    pixels = preprocess(build_dir / first["image"], manifest["image"])
    before, after = tok.encode_prompt(first["prompt"], with_image=True)
    room = manifest["kv"]["text_capacity"] - len(before) - len(after)
    if room < 1:
        raise BuildError(f"the parity prompt takes {len(before) + len(after)} text tokens, the KV capacity is "
                         f"{manifest['kv']['text_capacity']}: raise --max-seq-len")
    stages = stage_metrics(ref, out, manifest, pixels, before, after, min(N_DECODE, room))
    pipe = Pipeline(build_dir, backend=out, manifest=manifest)
    match = all(pipe.generate(build_dir / c["image"], c["prompt"], max_new_tokens=len(c["ids"])).ids == c["ids"]
                for c in golden["cases"])
    quant = manifest.get("quant", "none")
    if manifest.get("quant_vision", "none") != "none":
        quant = f"vision-{manifest['quant_vision']}" + ("" if quant == "none" else f"+{quant}")
    return judge(stages, match, manifest["dtype"], quant)
