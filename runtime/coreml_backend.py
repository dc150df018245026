"""Core ML backend (macOS 15+ only): the build's .mlpackage files through coremltools' MLModel.

Follows the Core ML build's runner protocol (export/coreml.py): the stateful `text_decoder` keeps the
text K/V (and the top-k keep mask) as MLState; the stateless `vision_prefill` reads the text K/V of
the layers whose vision attends to text from that state and returns the vision K/V, which are then
passed to every `text_decoder` call as inputs. Integer inputs are int32 (Core ML has no int64/bool).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CoreMLBackend:
    def __init__(self, build_dir: Path, manifest: dict):
        import coremltools as ct

        self.layout = manifest["kv_layout"]
        self.specs = manifest["graphs"]["methods"]
        self.models = {name: ct.models.MLModel(str(build_dir / spec["file"])) for name, spec in self.specs.items()}
        self.reset()

    def _io(self, method: str, kind: str, part: str) -> list[dict]:
        return [t for t in self.specs[method][kind] if f"_{part}_" in t["name"]]

    def reset(self):
        self.state = self.models["text_decoder"].make_state()
        for s in self.specs["text_decoder"].get("states", []):
            if s["name"].endswith("topk_keep"):
                self.state.write_state(s["name"], np.ones(s["shape"], np.float16))
        self.vision_kv = {t["name"]: np.zeros(t["shape"], np.float16)
                          for t in self._io("text_decoder", "inputs", "vision")}

    def encode_image(self, pixels):
        out = self.models["vision_encoder"].predict({"pixels": pixels.astype(np.float32)})
        return np.asarray(out["vision_embeds"], np.float32)

    def embed(self, ids):
        out = self.models["token_embedding"].predict({"ids": ids.astype(np.int32)})
        return np.asarray(out["embeds"], np.float32)

    def prefill_vision(self, embeds, start_pos: int):
        x = {"vision_embeds": embeds.astype(np.float32), "start_pos": np.array([start_pos], np.int32)}
        x.update({t["name"]: self.state.read_state(t["name"]) for t in self._io("vision_prefill", "inputs", "text")})
        out = self.models["vision_prefill"].predict(x)
        self.vision_kv = {name: out[name] for name in self.vision_kv}

    def text(self, embeds, pos, slot: int, select: bool):
        x = {"embeds": embeds.astype(np.float32)}
        if self.layout == "shared":
            x["input_pos"] = np.array([pos[0]], np.int32)
        else:
            x.update(pos=pos.astype(np.int32), slot=np.array([slot], np.int32),
                     select=np.array([int(select)], np.int32), **self.vision_kv)
        out = self.models["text_decoder"].predict(x, state=self.state)
        return np.asarray(out["logits"], np.float32)
