"""Core ML backend (macOS 15+ only): the build's .mlpackage files through coremltools' MLModel.

The same runner protocol as every target (models/protocol.py): the stateful `text_decoder` keeps its
text K/V (and the top-k keep mask) as its own MLState; the stateless `vision_prefill` takes the image,
its start position and the embeddings of the text before it, and returns the vision K/V, which are
then passed to every `text_decoder` call. Integer inputs are int32 and the vision K/V float16, as the
manifest declares them (GraphCalls casts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import GraphCalls


class CoreMLBackend(GraphCalls):
    def __init__(self, build_dir: Path, manifest: dict):
        import coremltools as ct

        self._setup(manifest)
        self.specs = manifest["graphs"]["methods"]
        self.models = {name: ct.models.MLModel(str(build_dir / spec["file"])) for name, spec in self.specs.items()}
        self.reset()

    def reset(self):
        super().reset()
        self.state = self.models["text_decoder"].make_state()
        for s in self.specs["text_decoder"].get("states", []):
            if s["name"].endswith("topk_keep"):
                self.state.write_state(s["name"], np.ones(s["shape"], np.float16))

    def _run(self, name, *arrays):
        spec = self.specs[name]
        feeds = {t["name"]: np.ascontiguousarray(a) for t, a in zip(spec["inputs"], arrays)}
        state = self.state if name == "text_decoder" else None
        out = self.models[name].predict(feeds, state=state) if state is not None else self.models[name].predict(feeds)
        return [np.asarray(out[t["name"]], np.float32) for t in spec["outputs"]]
