"""The vision plan: a static, per-decoder-layer decision of what the decoder does with vision tokens.

Modes (docs/design.md §3):
  full   text attends vision + text; vision states updated by the layer; vision K/V stored.
  cross  text attends vision + text; vision states frozen; K/V computed from the frozen states.
  text   text attends text only; vision states frozen; no vision K/V.
  exit   vision dropped from here on: this layer and every later one is text-only.
Options:
  window        radius h: in `full` layers a vision token attends only vision tokens within Chebyshev
                distance h on the 2-D token grid (YOPO's neighbour-aware attention), causally.
  keep_topk     {"from_layer": l, "k": k}: at layer l the last prompt token picks the k vision tokens it
                attends to most (mean over heads); layers >= l let text and decode attend only those.
  vision_heads  query heads allowed to attend to vision; the other heads of text queries see text only.

JSON form (all keys but "layers"/"modes" optional):
  {"name": "example", "default": "full",
   "layers": {"0-1": "full", "2-7": "text", "8-15": "full/cross", "16": "exit"},
   "window": 2, "keep_topk": {"from_layer": 4, "k": 16}, "vision_heads": [0, 1]}
A range given "a/b" alternates a and b. Layers after the first `exit` are exit. "modes": [...] gives
every layer explicitly instead. The string "dense" is the all-`full` plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODES = ("full", "cross", "text", "exit")
VISION_MODES = ("full", "cross")  # layers that store vision K/V


class PlanError(ValueError):
    """A plan that cannot be applied to the model; the message says what and where."""


@dataclass(frozen=True)
class TopK:
    from_layer: int
    k: int


@dataclass(frozen=True)
class Plan:
    name: str
    modes: tuple[str, ...]
    window: int | None = None
    keep_topk: TopK | None = None
    vision_heads: tuple[int, ...] | None = None

    @property
    def vision_layers(self) -> tuple[int, ...]:
        """Layers that store vision K/V (text attends to vision there)."""
        return tuple(i for i, m in enumerate(self.modes) if m in VISION_MODES)

    @property
    def vision_depth(self) -> int:
        """Number of leading layers the vision prefill must run through."""
        return max(self.vision_layers) + 1 if self.vision_layers else 0

    @property
    def is_dense(self) -> bool:
        return (all(m == "full" for m in self.modes) and self.window is None and self.keep_topk is None
                and self.vision_heads is None)

    def to_dict(self) -> dict:
        d = {"name": self.name, "modes": list(self.modes)}
        if self.window is not None:
            d["window"] = self.window
        if self.keep_topk is not None:
            d["keep_topk"] = {"from_layer": self.keep_topk.from_layer, "k": self.keep_topk.k}
        if self.vision_heads is not None:
            d["vision_heads"] = list(self.vision_heads)
        return d


def dense_plan(num_layers: int) -> Plan:
    return Plan(name="dense", modes=("full",) * num_layers)


def load_plan(spec, num_layers: int, num_heads: int, num_vision_tokens: int) -> Plan:
    """Resolve "dense", a JSON file path, a dict or a Plan into a validated Plan."""
    if isinstance(spec, Plan):
        spec = spec.to_dict()
    if spec is None or spec == "dense":
        return dense_plan(num_layers)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise PlanError(f"plan file not found: {path} (give a JSON file or 'dense')")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise PlanError(f"plan file {path} is not valid JSON: {e}") from None
        if not isinstance(spec, dict):
            raise PlanError(f"plan file {path}: a plan is a JSON object, got {_json_kind(spec)}")
        spec.setdefault("name", path.stem)
    if not isinstance(spec, dict):
        raise PlanError(f"a plan is a JSON object, got {type(spec).__name__}")
    return _from_dict(spec, num_layers, num_heads, num_vision_tokens)


def _json_kind(value) -> str:
    kinds = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _from_dict(d: dict, num_layers: int, num_heads: int, num_vision_tokens: int) -> Plan:
    known = {"name", "default", "layers", "modes", "window", "keep_topk", "vision_heads", "description"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PlanError(f"unknown plan keys {unknown}; valid keys: {sorted(known)}")
    modes = _modes(d, num_layers)
    plan = Plan(name=str(d.get("name", "custom")), modes=modes, window=_window(d.get("window")),
                keep_topk=_topk(d.get("keep_topk"), modes, num_vision_tokens),
                vision_heads=_heads(d.get("vision_heads"), num_heads))
    return plan


def _modes(d: dict, n: int) -> tuple[str, ...]:
    if "modes" in d and "layers" in d:
        raise PlanError("give either 'modes' (a list) or 'layers' (a map), not both")
    if "modes" in d:
        modes = list(d["modes"])
        if len(modes) != n:
            raise PlanError(f"'modes' lists {len(modes)} layers, the decoder has {n}")
        explicit = [True] * n
    else:
        default = d.get("default", "full")
        modes, explicit = [default] * n, [False] * n
        for key, value in (d.get("layers") or {}).items():
            layers = _layer_range(str(key), n)
            options = str(value).split("/")
            for j, layer in enumerate(layers):
                modes[layer], explicit[layer] = options[j % len(options)], True
    for i, m in enumerate(modes):
        if m not in MODES:
            raise PlanError(f"layer {i}: unknown mode {m!r}; valid modes: {', '.join(MODES)}")
    if "exit" in modes:
        first = modes.index("exit")
        for i in range(first + 1, n):
            if modes[i] != "exit" and explicit[i]:
                raise PlanError(f"layer {i}: mode {modes[i]!r} after 'exit' at layer {first} "
                                "(vision is dropped for every later layer)")
            modes[i] = "exit"
    return tuple(modes)


def _layer_range(key: str, n: int) -> range:
    try:
        lo, _, hi = key.partition("-")
        first, last = int(lo), int(hi) if hi else int(lo)
    except ValueError:
        raise PlanError(f"bad layer key {key!r}: use 'i' or 'i-j'") from None
    if first > last:
        raise PlanError(f"bad layer range {key!r}: start after end")
    if first < 0 or last >= n:
        raise PlanError(f"plan names layer {last if last >= n else first}, the decoder has layers 0-{n - 1}")
    return range(first, last + 1)


def _window(w) -> int | None:
    if w is None:
        return None
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise PlanError(f"'window' is a radius in tokens (an integer >= 0), got {w!r}")
    return w


def _topk(t, modes: tuple[str, ...], num_vision_tokens: int) -> TopK | None:
    if t is None:
        return None
    if not isinstance(t, dict) or set(t) != {"from_layer", "k"}:
        raise PlanError("'keep_topk' is {\"from_layer\": l, \"k\": k}")
    layer, k = t["from_layer"], t["k"]
    if not isinstance(layer, int) or not 0 <= layer < len(modes):
        raise PlanError(f"keep_topk names layer {layer}, the decoder has layers 0-{len(modes) - 1}")
    if modes[layer] not in VISION_MODES:
        raise PlanError(f"keep_topk from layer {layer}: that layer is {modes[layer]!r}; "
                        "it must attend to vision (full or cross)")
    if not isinstance(k, int) or not 1 <= k <= num_vision_tokens:
        raise PlanError(f"keep_topk k={k} must be between 1 and the {num_vision_tokens} vision tokens")
    return TopK(layer, k)


def _heads(h, num_heads: int) -> tuple[int, ...] | None:
    if h is None:
        return None
    heads = tuple(h)
    if not heads or len(set(heads)) != len(heads):
        raise PlanError(f"'vision_heads' must list distinct heads, got {list(heads)}")
    bad = [x for x in heads if not isinstance(x, int) or not 0 <= x < num_heads]
    if bad:
        raise PlanError(f"vision_heads {bad} out of range; the decoder has heads 0-{num_heads - 1}")
    return tuple(sorted(heads))
