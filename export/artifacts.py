"""What a build directory holds besides its graphs: manifest.json, golden.json, cost.json, golden images.

The manifest is the contract with runtime/ and the apps (schema: runtime/manifest.schema.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.config import ModelConfig
from models.cost import estimate
from models.plan import Plan
from models.protocol import KVLayout
from models.vlm import VLM
from runtime.manifest import SCHEMA_VERSION

from . import graphs

GOLDEN_PROMPTS = ("What is in the image?", "Is there a red shape?")


def manifest(name: str, target: str, dtype: str, vlm: VLM, kv: KVLayout, source: str, built: dict,
             stop_ids: list[int], skip_parity: bool, quant: str = "none", quant_vision: str = "none",
             vision_kv: str = "io") -> dict:
    cfg: ModelConfig = vlm.cfg
    declared = graphs.methods(cfg, kv, vision_kv)
    methods = {}
    for mname, method in declared.items():
        entry = {"file": built["files"][0], **method.to_dict()}
        entry.update(built.get("methods", {}).get(mname, {}))
        methods[mname] = entry
    d = cfg.decoder
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "target": target,
        "dtype": dtype,
        "quant": quant,
        "quant_vision": quant_vision,
        "model": {"family": cfg.family, "source": source, "config": cfg.to_dict()},
        "weights": "weights",
        "plan": vlm.plan.to_dict(),
        "kv_layout": kv.layout,
        "image": cfg.image_spec(),
        "prompt": {"before_image": cfg.prompt.before_image, "after_image": cfg.prompt.after_image,
                   "image_token": cfg.prompt.image_token, "stop_tokens": list(cfg.prompt.stop_tokens),
                   "stop_ids": stop_ids},
        "tokenizer": "tokenizer.json",
        "graphs": {"files": built["files"], "methods": methods},
        "kv": {**kv.to_dict(), "vision_kv": kv.vision_kv_names() if vision_kv == "io" else [],
               **({"vision_kv_design": "buffers"} if vision_kv == "buffers" else {})},
        "runner": {"protocol": "docs/runner-protocol.md", "layout": kv.layout},
        "parity": {"file": "parity.json", "skipped": skip_parity},
        "golden": "golden.json",
        "cost": "cost.json",
    }


def golden_images(out_dir: Path, size: int) -> list[str]:
    """Deterministic test pictures (coloured rectangles on grey) written as PNG."""
    from PIL import Image

    (out_dir / "golden").mkdir(exist_ok=True)
    names, rng = [], np.random.default_rng(0)
    for i in range(len(GOLDEN_PROMPTS)):
        img = np.full((size, size, 3), 128, np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, size * 3 // 4, 2)
            w, h = rng.integers(size // 8, size // 3, 2)
            img[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        name = f"golden/case{i}.png"
        Image.fromarray(img).save(out_dir / name)
        names.append(name)
    return names


def cost_section(cfg: ModelConfig, plan: Plan, prefix_tokens: int, prompt_tokens: int) -> dict:
    def est(p, image=True):
        return estimate(cfg, p, prefix_tokens, prompt_tokens, image=image).to_dict()

    dense, planned, text_only = est("dense"), est(plan), est("dense", image=False)
    removed = ((dense["prefill_flops"] - planned["prefill_flops"]) /
               max(dense["prefill_flops"] - text_only["prefill_flops"], 1))
    return {"prefix_tokens": prefix_tokens, "prompt_tokens": prompt_tokens, "dense": dense, "plan": planned,
            "text_only": text_only, "vision_prefill_share_removed": removed}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
