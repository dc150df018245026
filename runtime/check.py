"""Stage-by-stage parity of a build's graphs against the PyTorch model with the same plan.

Both sides run models/protocol.py's `converse` on one sequence (the reference's greedy tokens fed to
both): stages vision_embeddings, prefill_logits, decode_logits; then exact greedy-token match on every
golden case. An ExecuTorch build is checked under both of its runtimes' memory modes: methods sharing
memory (`executorch.runtime`) and each method with its own (what ExecuTorch's Android binding does).
Floors and metrics live in runtime/parity.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.protocol import KVLayout, converse

from .backends import TorchBackend, make_backend
from .image import preprocess
from .manifest import BuildError, load_manifest
from .parity import compare, judge
from .pipeline import Pipeline
from .tokenizer import PromptTokenizer

N_DECODE = 4
STAGES = ("vision_embeddings", "prefill_logits", "decode_logits")


def stage_outputs(engine, kv: KVLayout, pixels, before, after, tokens: list[int]) -> tuple:
    """(vision embeddings, prefill logits, decode logits after each of `tokens`) of one conversation."""
    t = converse(engine, kv, before, pixels, after, len(tokens) + 1, forced=list(tokens) + [0])
    decode = np.stack([np.asarray(x, np.float32) for x in t.decode_logits]) if t.decode_logits else None
    return np.asarray(t.vision_embeds, np.float32), np.asarray(t.prefill_logits, np.float32), decode


def stage_metrics(ref, engine, kv: KVLayout, pixels, before, after, n_decode: int = N_DECODE) -> dict:
    """Parity of `engine` against `ref` (both engines of the runner protocol), stage by stage; the same
    stage names for every target."""
    tokens = converse(ref, kv, before, pixels, after, n_decode).ids
    r = stage_outputs(ref, kv, pixels, before, after, tokens[:-1])
    o = stage_outputs(engine, kv, pixels, before, after, tokens[:-1])
    return {name: compare(a, b) for name, a, b in zip(STAGES, r, o) if a is not None}


def golden_ids(build_dir: Path, manifest: dict, backend) -> tuple[list[list[int]], bool]:
    """Greedy ids of every golden case through `backend`, and whether they equal golden.json's."""
    golden = json.loads((build_dir / manifest["golden"]).read_text())
    pipe = Pipeline(build_dir, backend=backend, manifest=manifest)
    ids = [pipe.generate(build_dir / c["image"], c["prompt"], max_new_tokens=len(c["ids"])).ids for c in golden["cases"]]
    return ids, ids == [c["ids"] for c in golden["cases"]]


def torch_is_the_reference(build_dir: Path, manifest: dict) -> str:
    """Why `--backend torch` is refused, and what to run instead (for a Core ML build, on any machine)."""
    own = f"`python -m runtime.parity --build {build_dir}`"
    why = "--backend torch: torch is the reference that parity compares a build's graphs with"
    if manifest["target"] != "coreml":
        return f"{why}; {own} checks this build's own graphs"
    return (f"{why}; for this Core ML build, {own} runs the Core ML prediction check on macOS 15 or later, and "
            "elsewhere prints the checks its parity.json records from export")


def check_build(build_dir: Path, backend: str | None = None, manifest: dict | None = None) -> dict:
    """Parity report of the build's backend (or `backend`) against the PyTorch model."""
    build_dir = Path(build_dir)
    manifest = manifest or load_manifest(build_dir)
    if backend == "torch":
        raise BuildError(torch_is_the_reference(build_dir, manifest))
    kv = KVLayout.from_dict(manifest["kv"])
    ref = TorchBackend(build_dir, manifest)
    out = make_backend(backend, build_dir, manifest)
    tok = PromptTokenizer(build_dir / manifest["tokenizer"], manifest["prompt"])
    golden = json.loads((build_dir / manifest["golden"]).read_text())
    first = golden["cases"][0]
    pixels = preprocess(build_dir / first["image"], manifest["image"])
    before, after = tok.encode_prompt(first["prompt"], with_image=True)
    room = kv.text_rows - kv.image_slots - len(before) - len(after)
    if room < 1:
        raise BuildError(f"the parity prompt takes {len(before) + len(after)} text tokens, the KV capacity is "
                         f"{kv.text_rows} rows: raise --max-seq-len")
    stages = stage_metrics(ref, out, kv, pixels, before, after, min(N_DECODE, room))
    ids, match = golden_ids(build_dir, manifest, out)
    quant = manifest.get("quant", "none")
    if manifest.get("quant_vision", "none") != "none":
        quant = f"vision-{manifest['quant_vision']}" + ("" if quant == "none" else f"+{quant}")
    report = judge(stages, match, manifest["dtype"], quant)
    if getattr(out, "memory", None) == "shared":  # ExecuTorch: again with one memory per method, as on Android
        phone = make_backend(backend, build_dir, manifest, memory="per-method")
        phone_ids, phone_match = golden_ids(build_dir, manifest, phone)
        per_method = judge(stage_metrics(ref, phone, kv, pixels, before, after, min(N_DECODE, room)),
                           phone_match, manifest["dtype"], quant)
        # the same program under the other memory mode: the same ids, quantized or not
        per_method["same_ids_as_shared"] = phone_ids == ids
        if not per_method["same_ids_as_shared"]:
            per_method["passed"] = False
            per_method["failures"].append("greedy tokens differ from the shared-memory run of the same program")
        report["per_method_memory"] = per_method
        if not per_method["passed"]:
            report["passed"] = False
            report["failures"] += [f"one memory per method (as on Android): {f}" for f in per_method["failures"]]
    return report
