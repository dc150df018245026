"""One pipeline over any backend: preprocess, tokenize, chunked prefill, decode, stream, time.

    pipe = Pipeline("build/foveate-tiny-random-dense-onnx")
    result = pipe.generate("cat.png", "What is this?", max_new_tokens=32, on_text=print)

The conversation follows the manifest's runner protocol: text before the image, the image, the
question (which picks top-k vision tokens when the plan keeps them), then one token per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import make_backend
from .image import preprocess
from .manifest import BuildError, load_manifest
from .tokenizer import PromptTokenizer, StreamDecoder


@dataclass
class Result:
    text: str
    ids: list[int]
    vision_tokens: int
    timings: dict = field(default_factory=dict)  # image_encode_s, prefill_s, ttft_s, decode_s, decode_tok_s
    first_logits: np.ndarray | None = None  # (V,) the distribution the first new token was drawn from


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature == 0, else nucleus sampling over softmax(logits / temperature)."""
    logits = logits.astype(np.float64).ravel()
    if temperature <= 0:
        return int(np.argmax(logits))
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
    return int(rng.choice(keep, p=p[keep] / p[keep].sum()))


class Pipeline:
    def __init__(self, build_dir, backend=None, manifest: dict | None = None):
        """backend: a name ("torch", "executorch", "onnxruntime", "coreml"), an already made backend, or
        None for the build's own; manifest: an already loaded (e.g. not yet finalised) manifest."""
        self.build_dir = Path(build_dir)
        self.manifest = manifest or load_manifest(self.build_dir)
        self.tokenizer = PromptTokenizer(self.build_dir / self.manifest["tokenizer"], self.manifest["prompt"])
        self.backend = backend if hasattr(backend, "text") else make_backend(backend, self.build_dir, self.manifest)
        self.num_vision = self.manifest["kv"]["vision_tokens"]
        self.capacity = self.manifest["kv"]["text_capacity"]

    def generate(self, image, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, on_text=None) -> Result:
        pixels = preprocess(image, self.manifest["image"]) if image is not None else None
        before, after = self.tokenizer.encode_prompt(prompt, with_image=pixels is not None)
        rng, stream = np.random.default_rng(seed), StreamDecoder(self.tokenizer)
        on_token = (lambda token: on_text(stream.push(token))) if on_text is not None else None
        ids, timings, first_logits = self.run_ids(before, pixels, after, max_new_tokens,
                                                  lambda logits: sample(logits, temperature, top_p, rng),
                                                  self.tokenizer.stop_ids, on_token)
        if on_text is not None:
            on_text(stream.finish())
        text_ids = [i for i in ids if i not in self.tokenizer.stop_ids]
        return Result(self.tokenizer.decode(text_ids), ids, self.num_vision if pixels is not None else 0, timings,
                      first_logits)

    def run_ids(self, before: list[int], pixels, after: list[int], max_new_tokens: int, pick=None, stop_ids=(),
                on_token=None) -> tuple[list[int], dict, np.ndarray]:
        """The conversation on token ids: -> (new ids, timings, the first new token's logits).

        pick(logits) chooses each token (default greedy); decoding ends at a stop id or after
        max_new_tokens (stop_ids=() decodes exactly that many, as benchmarks do)."""
        pick = pick or (lambda logits: int(np.argmax(logits)))
        need = len(before) + len(after)
        if need >= self.capacity:
            raise BuildError(f"prompt of {need} tokens does not fit the KV capacity of {self.capacity} text tokens")
        timings = {}
        self.backend.reset()
        t0 = time.perf_counter()
        pos = slot = 0
        if before:
            self._text(before, pos, slot, select=False)
            pos, slot = pos + len(before), slot + len(before)
        if pixels is not None:
            t_img = time.perf_counter()
            embeds = self.backend.encode_image(pixels)
            timings["image_encode_s"] = time.perf_counter() - t_img
            if self.backend.layout == "shared":
                self.backend.text(embeds, np.arange(pos, pos + self.num_vision), slot, False)
                slot += self.num_vision
            else:
                self.backend.prefill_vision(embeds, pos)
            pos += self.num_vision
        logits = self._text(after, pos, slot, select=True)
        pos, slot = pos + len(after), slot + len(after)
        timings["ttft_s"] = time.perf_counter() - t0
        timings["prefill_s"] = timings["ttft_s"] - timings.get("image_encode_s", 0.0)
        ids, t1, first_logits = [], time.perf_counter(), np.asarray(logits[0, -1], np.float32)
        limit = min(max_new_tokens, self.capacity - need + 1)  # every token but the last is fed back
        for _ in range(max(limit, 0)):
            token = pick(logits[0, -1])
            ids.append(token)
            if on_token is not None:
                on_token(token)
            if token in stop_ids or len(ids) == limit:
                break
            logits = self._text([token], pos, slot, select=False)
            pos, slot = pos + 1, slot + 1
        decode_s = time.perf_counter() - t1
        timings.update(decode_s=decode_s, decode_tok_s=(len(ids) - 1) / decode_s if len(ids) > 1 and decode_s else 0.0)
        return ids, timings, first_logits

    def _text(self, ids, pos: int, slot: int, select: bool):
        embeds = self.backend.embed(np.array([ids], np.int64))
        return self.backend.text(embeds, np.arange(pos, pos + len(ids), dtype=np.int64), slot, select)
