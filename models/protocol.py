"""The runner protocol, written once: the KV layout of a build and the conversation driver.

Every consumer follows this module (the PyTorch model's `generate`, the runtime's `Pipeline`, the parity
check, the Core ML checks) and the apps port it line for line; docs/runner-protocol.md describes it for
them. No torch here: the driver talks to an *engine* with five calls and treats arrays as opaque.

Engine calls (any array type; the driver only calls `.argmax()` through `pick`):
    reset()                                         forget the conversation
    embed(ids: list[int]) -> embeds (1, T, hidden)
    encode_image(pixels) -> vision_embeds (1, N_v, hidden)
    prefill_vision(vision_embeds, start_pos: int, prefix_embeds | None)
                                                    split layout: the image after `start_pos` text tokens;
                                                    the engine keeps the vision K/V it returns
    text(embeds, pos: int, slot: int, select: bool) -> logits (V,) of the chunk's last position;
                                                    positions pos .., text slots slot ..
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

LAYOUTS = ("split", "shared")
VISION_KV_MODES = ("full", "cross")


class CapacityError(ValueError):
    """The conversation does not fit the build's KV cache."""


@dataclass(frozen=True)
class KVLayout:
    """What the KV cache holds, derived once from the config and plan and recorded in the manifest.

    split:  text K/V of every layer (`text_rows` rows) apart from the vision K/V of full/cross layers
            (N_v rows each), which vision_prefill returns and text_decoder takes as inputs.
    shared: the dense plan only, one cache per layer in which the image takes N_v rows like text
            (ExecuTorch's stock MultimodalRunner protocol)."""

    layout: str
    text_rows: int  # rows of each layer's text K/V cache
    vision_tokens: int
    grid: int
    num_kv_heads: int
    head_dim: int
    modes: tuple[str, ...]

    @staticmethod
    def derive(cfg, plan, layout: str) -> "KVLayout":
        """From the model's own config (text capacity `decoder.max_seq_len`) and its plan."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown KV layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        if layout == "shared" and not plan.is_dense:
            raise ValueError("the shared KV layout runs the dense plan only")
        nv, d = cfg.num_vision_tokens, cfg.decoder
        rows = d.max_seq_len + (nv if layout == "shared" else 0)
        return KVLayout(layout, rows, nv, cfg.vision_grid, d.num_kv_heads, d.head_dim, tuple(plan.modes))

    @property
    def image_slots(self) -> int:
        """Text-cache rows the image takes: N_v in the shared layout, none in the split one."""
        return self.vision_tokens if self.layout == "shared" else 0

    @property
    def max_context(self) -> int:
        """Most positions one conversation holds (image included); `get_max_seq_len` of the build."""
        return self.text_rows + (self.vision_tokens if self.layout == "split" else 0)

    @property
    def vision_kv_layers(self) -> tuple[int, ...]:
        """Layers whose vision K/V travel from vision_prefill to text_decoder (split layout)."""
        if self.layout == "shared":
            return ()
        return tuple(i for i, m in enumerate(self.modes) if m in VISION_KV_MODES)

    @property
    def prefix_layers(self) -> int:
        """Leading layers vision_prefill runs the text before the image through: up to the last `full`
        layer (the image attends to that text there); 0 when no layer is full."""
        full = [i for i, m in enumerate(self.modes) if m == "full"]
        return full[-1] + 1 if full and self.layout == "split" else 0

    def vision_kv_names(self) -> list[str]:
        return [f"vision_{kv}_{i}" for i in self.vision_kv_layers for kv in ("k", "v")]

    def text_kv_shape(self) -> list[int]:
        return [1, self.num_kv_heads, self.text_rows, self.head_dim]

    def vision_kv_shape(self) -> list[int]:
        return [1, self.num_kv_heads, self.vision_tokens, self.head_dim]

    def check_fits(self, text_tokens: int, with_image: bool) -> int:
        """Rows a prompt of `text_tokens` takes; CapacityError when nothing could be generated after it."""
        need = text_tokens + (self.image_slots if with_image else 0)
        if need >= self.text_rows:
            raise CapacityError(f"prompt of {need} tokens does not fit the KV capacity of {self.text_rows} "
                                f"rows ({self.layout} layout)")
        return need

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modes"] = list(self.modes)
        d.update(image_slots=self.image_slots, max_context=self.max_context,
                 vision_kv_layers=list(self.vision_kv_layers), vision_kv=self.vision_kv_names(),
                 prefix_layers=self.prefix_layers, text_kv_shape=self.text_kv_shape(),
                 vision_kv_shape=self.vision_kv_shape() if self.layout == "split" else None, dtype="float32")
        return d

    @staticmethod
    def from_dict(d: dict) -> "KVLayout":
        return KVLayout(d["layout"], d["text_rows"], d["vision_tokens"], d["grid"], d["num_kv_heads"],
                        d["head_dim"], tuple(d["modes"]))


@dataclass
class Transcript:
    """What one conversation produced: new ids, timings, and each stage's raw output (for parity)."""

    ids: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)  # image_encode_s, prefill_s, ttft_s, decode_s, decode_tok_s
    vision_embeds: object = None
    prefill_logits: object = None  # (V,) the distribution the first new token is drawn from
    decode_logits: list = field(default_factory=list)  # (V,) after each fed token


def greedy(logits) -> int:
    return int(logits.argmax())


def converse(engine, kv: KVLayout, before: list[int], pixels, after: list[int], max_new_tokens: int,
             pick=greedy, stop_ids=(), on_token=None, forced: list[int] | None = None,
             clock=time.perf_counter) -> Transcript:
    """One conversation: the text before the image, the image (or None), the question, then decode steps.

    Positions count every token, image included; slots count text-cache rows (the image takes rows only
    in the shared layout). Decoding ends at a stop id, after max_new_tokens, or when the cache is full.
    `forced` feeds those tokens instead of the picked ones (parity drives two engines on one sequence)."""
    need = kv.check_fits(len(before) + len(after), pixels is not None)
    if not after:
        raise ValueError("the question chunk is empty: the prompt template puts nothing after the image")
    out = Transcript()
    engine.reset()
    t0 = clock()
    pos = slot = 0
    prefix = None
    if before:
        prefix = engine.embed(before)
        engine.text(prefix, pos, slot, False)
        pos, slot = pos + len(before), slot + len(before)
    if pixels is not None:
        t_img = clock()
        out.vision_embeds = engine.encode_image(pixels)
        out.timings["image_encode_s"] = clock() - t_img
        if kv.layout == "shared":
            engine.text(out.vision_embeds, pos, slot, False)
        else:
            engine.prefill_vision(out.vision_embeds, pos, prefix)
        pos, slot = pos + kv.vision_tokens, slot + kv.image_slots
    logits = out.prefill_logits = engine.text(engine.embed(after), pos, slot, True)
    pos, slot = pos + len(after), slot + len(after)
    out.timings["ttft_s"] = clock() - t0
    out.timings["prefill_s"] = out.timings["ttft_s"] - out.timings.get("image_encode_s", 0.0)
    limit = min(max_new_tokens, kv.text_rows - need + 1)  # every token but the last is fed back
    t1 = clock()
    while len(out.ids) < limit:
        token = forced[len(out.ids)] if forced is not None else pick(logits)
        out.ids.append(token)
        if on_token is not None:
            on_token(token)
        if token in stop_ids or len(out.ids) == limit:
            break
        logits = engine.text(engine.embed([token]), pos, slot, False)
        out.decode_logits.append(logits)
        pos, slot = pos + 1, slot + 1
    decode_s = clock() - t1
    n = len(out.ids)
    out.timings.update(decode_s=decode_s, decode_tok_s=(n - 1) / decode_s if n > 1 and decode_s else 0.0)
    return out
