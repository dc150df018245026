"""One pipeline over any backend: preprocess, tokenize, the runner protocol, stream, time.

    pipe = Pipeline("build/foveate-tiny-random-dense-onnx")
    result = pipe.generate("cat.png", "What is this?", max_new_tokens=32, on_text=print)

The conversation is models/protocol.py's `converse` (text before the image, the image, the question,
then one token per step) over the build's KV layout as its manifest records it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.protocol import CapacityError, KVLayout, converse

from .backends import make_backend
from .image import preprocess
from .manifest import BuildError, load_manifest
from .sampler import Sampler
from .tokenizer import PromptTokenizer, StreamDecoder


@dataclass
class Result:
    text: str
    ids: list[int]
    vision_tokens: int
    timings: dict = field(default_factory=dict)  # image_encode_s, prefill_s, ttft_s, decode_s, decode_tok_s
    first_logits: np.ndarray | None = None  # (V,) the distribution the first new token was drawn from


class Pipeline:
    def __init__(self, build_dir, backend=None, manifest: dict | None = None, **backend_options):
        """backend: a name ("torch", "executorch", "onnxruntime", "coreml"), an already made backend, or
        None for the build's own; manifest: an already loaded (e.g. not yet finalised) manifest;
        backend_options: e.g. memory="per-method" for executorch."""
        self.build_dir = Path(build_dir)
        t0 = time.perf_counter()
        self.manifest = manifest or load_manifest(self.build_dir)
        t1 = time.perf_counter()
        self.tokenizer = PromptTokenizer(self.build_dir / self.manifest["tokenizer"], self.manifest["prompt"])
        t2 = time.perf_counter()
        self.backend = (backend if hasattr(backend, "text")
                        else make_backend(backend, self.build_dir, self.manifest, **backend_options))
        self.kv = KVLayout.from_dict(self.manifest["kv"])
        # where loading went: the backend's share includes its engine's imports, the graphs and their methods
        self.load_timings = {"manifest_s": t1 - t0, "tokenizer_s": t2 - t1, "backend_s": time.perf_counter() - t2}

    def generate(self, image, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, on_text=None) -> Result:
        pixels = preprocess(image, self.manifest["image"]) if image is not None else None
        before, after = self.tokenizer.encode_prompt(prompt, with_image=pixels is not None)
        stream = StreamDecoder(self.tokenizer)
        on_token = (lambda token: on_text(stream.push(token))) if on_text is not None else None
        ids, timings, first_logits = self.run_ids(before, pixels, after, max_new_tokens,
                                                  Sampler(temperature, top_p, seed).pick,
                                                  self.tokenizer.stop_ids, on_token)
        if on_text is not None:
            on_text(stream.finish())
        text_ids = [i for i in ids if i not in self.tokenizer.stop_ids]
        return Result(self.tokenizer.decode(text_ids), ids, self.kv.vision_tokens if pixels is not None else 0,
                      timings, first_logits)

    def run_ids(self, before: list[int], pixels, after: list[int], max_new_tokens: int, pick=None, stop_ids=(),
                on_token=None) -> tuple[list[int], dict, np.ndarray]:
        """The conversation on token ids: -> (new ids, timings, the first new token's logits).

        pick(logits) chooses each token (default greedy); decoding ends at a stop id, after
        max_new_tokens, or when the cache is full (stop_ids=() decodes exactly that many, as benchmarks do)."""
        try:
            t = converse(self.backend, self.kv, before, pixels, after, max_new_tokens,
                         pick=pick or (lambda logits: int(np.argmax(logits))), stop_ids=stop_ids, on_token=on_token)
        except CapacityError as e:
            raise BuildError(str(e)) from None
        return t.ids, t.timings, np.asarray(t.prefill_logits, np.float32)
