"""Test vectors for the Java and Swift ports, recorded from this runtime (docs/design.md §13; format: docs/vectors.md).

    python -m runtime.vectors --build build/foveate-tiny-random-dense-onnx --out vectors.json

One JSON file: tokenizer cases, the prompt split, preprocessing of odd images given as raw RGBA8,
seeded sampling, every golden case's full sequence of graph calls with their inputs and outputs, and
manifests the runtime refuses (the build's own, each with one edit).
Arrays are {"dtype", "shape", "b64"}: the little-endian raw bytes, row-major, base64 (RFC 4648 with
padding); dtypes float32, float64, int64, int32, uint8 and bool (one byte, 0 or 1). Ports match
integers and ids exactly and float32 tensors within TOLERANCE (max-abs).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .image import preprocess
from .manifest import BuildError, load_manifest
from .sampler import Sampler, SplitMix64
from .tokenizer import PromptTokenizer

FORMAT = 1
TOLERANCE = 1e-5  # max-abs, float32 tensors (preprocessed pixels)
MARGIN = 1e-9  # a sampler case is refused when a draw or top_p lies this close to a running sum
DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")

ENCODE_TEXTS = ("What is in the image?", "Is there a red shape? Yes.", "héllo café naïve Ünïcode",
                "猫が好き 日本語", "emoji 🙂👍🏽 done", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                "  leading, double  spaces,\ttab\n\nand blank lines \n", "<image>", "")
VARIANT_IMAGES = ("landscape_64x40", "tiny_3x2", "alpha_ramp_50x30")  # also under the other resize mode, BGR
SPLIT_CANDIDATES = ("猫", "日本", "🙂", "€", "é", "𝄞")
PROMPTS = (("What is in the image?", True), ("Describe the 猫 🙂", True), ("", True), ("Hi", False),
           ("Is there a red shape?", False))
SAMPLER_LOGITS = (
    ("ties", [2.0, 1.0, 0.5, 0.5, -1.0, 3.0, 3.0, 0.0]),
    ("random64", np.random.default_rng(0).normal(0.0, 2.0, 64).tolist()),
    ("large", [30.0, 29.5, 29.5, 10.0, -40.0, 28.0]),
)
SAMPLER_SETTINGS = ((0.0, 1.0, 0), (1.0, 1.0, 0), (0.7, 0.9, 42), (1.5, 0.5, 7), (1.0, 1e-9, 3))
SPLITMIX_SEEDS = (0, 42)
BAD_MANIFESTS = (  # name, (op, path, value), what every port's message must mention
    ("other_schema_version", ("set", ["schema_version"], 1), ["schema version 1"]),
    ("missing_kv", ("remove", ["kv"], None), ["kv"]),
    ("missing_text_decoder", ("remove", ["graphs", "methods", "text_decoder"], None), ["text_decoder"]),
    ("missing_vision_prefill", ("remove", ["graphs", "methods", "vision_prefill"], None), ["vision_prefill"]),
    ("image_size_text", ("set", ["image", "size"], "256px"), ["image.size"]),
    ("image_size_zero", ("set", ["image", "size"], 0), ["image.size"]),
    ("image_size_negative", ("set", ["image", "size"], -256), ["image.size"]),
    ("image_mean_two_values", ("set", ["image", "mean"], [0.5, 0.5]), ["image.mean"]),
    ("image_std_zero", ("set", ["image", "std"], [0.0, 1.0, 1.0]), ["image.std"]),
    ("image_resize_mode_unknown", ("set", ["image", "resize_mode"], "stretch"), ["image.resize_mode"]),
    ("prompt_empty", ("set", ["prompt"], {}), ["prompt", "before_image"]),
    ("prompt_without_placeholder", ("set", ["prompt", "after_image"], "no placeholder"), ["prompt.after_image"]),
    ("target_unknown", ("set", ["target"], "tflite"), ["target"]),
    ("kv_text_rows_text", ("set", ["kv", "text_rows"], "128"), ["kv.text_rows"]),
    ("input_dtype_unknown", ("set", ["graphs", "methods", "token_embedding", "inputs", 0, "dtype"], "int8"),
     ["graphs.methods.token_embedding.inputs[0].dtype"]),
)


class VectorsError(ValueError):
    """Vectors that cannot be written for this build; the message says why in one line."""


def encode_array(a, name: str | None = None) -> dict:
    a = np.asarray(a)
    if a.dtype.name not in DTYPES:
        raise VectorsError(f"cannot encode dtype {a.dtype}; encodable: {', '.join(DTYPES)}")
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    out = {"name": name} if name is not None else {}
    return {**out, "dtype": a.dtype.name, "shape": list(a.shape), "b64": base64.b64encode(raw).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    if d["dtype"] not in DTYPES:
        raise VectorsError(f"unknown dtype {d['dtype']!r}; known: {', '.join(DTYPES)}")
    dtype = np.dtype(d["dtype"]).newbyteorder("<")
    a = np.frombuffer(base64.b64decode(d["b64"], validate=True), dtype=dtype)
    return a.reshape(d["shape"]).astype(dtype.newbyteorder("="))


def tokenizer_section(tok: PromptTokenizer, file: str) -> dict:
    texts = ENCODE_TEXTS + (f"a {tok.image_token} b" + "".join(tok.stop_tokens) + "c",)  # the build's specials
    encode = [{"text": t, "add_special_tokens": False, "ids": tok.encode(t)} for t in texts]
    encode.append({"text": ENCODE_TEXTS[0], "add_special_tokens": True,
                   "ids": tok.encode(ENCODE_TEXTS[0], add_special_tokens=True)})
    split = [ids for _, ids in _split_characters(tok)]
    partial = [ids[:k] for ids in split for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith("\ufffd")]
    decode = [{"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip)}
              for ids in [c["ids"] for c in encode[:-1]] + partial for skip in (True, False)]
    stream_ids = [tok.encode("Hi 猫!" + "".join(tok.stop_tokens)), tok.encode(ENCODE_TEXTS[4])] + split
    stream = [_stream_case(tok, ids) for ids in stream_ids]
    return {"file": file, "vocab_size": tok.vocab_size, "encode": encode, "decode": decode,
            "stream": stream}


def _split_characters(tok: PromptTokenizer, limit: int = 2) -> list[tuple[str, list[int]]]:
    """Texts holding a character whose UTF-8 bytes are spread over several tokens (held back when streamed)."""
    found = []
    for ch in SPLIT_CANDIDATES:
        ids = tok.encode(f"a{ch}b")
        if any(tok.decode(ids[:k]).endswith("\ufffd") for k in range(1, len(ids))):
            found.append((ch, ids))
    return found[:limit]


def _stream_case(tok: PromptTokenizer, ids: list[int]) -> dict:
    stream = tok.stream()
    pushes = [stream.push(i) for i in ids]
    return {"ids": ids, "skip_special_tokens": True, "pushes": pushes, "finish": stream.finish()}


def prompt_section(tok: PromptTokenizer, prompt: dict) -> dict:
    cases = []
    for text, with_image in PROMPTS:
        before, after = tok.encode_prompt(text, with_image=with_image)
        cases.append({"prompt": text, "with_image": with_image, "before": before, "after": after})
    return {"template": prompt, "stop_ids": list(tok.stop_ids), "cases": cases}


def _rgba_images() -> list[tuple[str, np.ndarray]]:
    """Odd inputs, (H, W, 4) uint8, from a fixed seed."""
    rng = np.random.default_rng(7)

    def noise(h, w, alpha=None):
        a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        a[..., 3] = 255 if alpha is None else alpha
        return a

    ramp = np.tile(np.linspace(0, 255, 50).round().astype(np.uint8), (30, 1))  # alpha 0..255 left to right
    return [("landscape_64x40", noise(40, 64)), ("portrait_30x70", noise(70, 30)), ("tiny_1x1", noise(1, 1)),
            ("tiny_3x2", noise(2, 3)), ("alpha_ramp_50x30", noise(30, 50, ramp)),
            ("alpha_random_20x20", noise(20, 20, rng.integers(0, 256, (20, 20)))), ("large_300x200", noise(200, 300))]


def image_section(spec: dict) -> dict:
    variant = {**spec, "resize_mode": "crop" if spec.get("resize_mode") == "pad" else "pad",
               "pad_color": [255, 128, 0], "mean": [0.48145466, 0.4578275, 0.40821073],
               "std": [0.26862954, 0.26130258, 0.27577711], "channel_order": "BGR"}
    cases = []
    for name, rgba in _rgba_images():
        cases.append(_image_case(name, rgba, spec))
    for name, rgba in _rgba_images():
        if name in VARIANT_IMAGES:
            cases.append(_image_case(name + "_variant", rgba, variant))
    return {"spec": spec, "tolerance": TOLERANCE, "cases": cases}


def _image_case(name: str, rgba: np.ndarray, spec: dict) -> dict:
    h, w = rgba.shape[:2]
    pixels = preprocess(Image.frombytes("RGBA", (w, h), rgba.tobytes()), spec)
    return {"name": name, "width": w, "height": h, "spec": spec, "rgba": encode_array(rgba),
            "rgb8": encode_array(_resized_rgb8(pixels, spec)), "pixels": encode_array(pixels)}


def _resized_rgb8(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """The 8-bit (S, S, 3) RGB image preprocess normalised, recovered from its output (a port's debugging aid)."""
    x = pixels[0].transpose(1, 2, 0).astype(np.float64)  # (S, S, 3)
    if spec.get("channel_order", "RGB") == "BGR":
        x = x[:, :, ::-1]
    mean, std = np.asarray(spec.get("mean", (0, 0, 0)), np.float64), np.asarray(spec.get("std", (1, 1, 1)), np.float64)
    rgb8 = np.clip(np.rint((x * std + mean) * 255.0), 0, 255).astype(np.uint8)
    again = (np.asarray(rgb8, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if spec.get("channel_order", "RGB") == "BGR":
        again = again[:, :, ::-1]
    if not np.array_equal(again.transpose(2, 0, 1)[None], pixels):
        raise VectorsError("the 8-bit image could not be recovered exactly from the preprocessed pixels")
    return rgb8


def sampler_section() -> dict:
    cases = []
    for name, values in SAMPLER_LOGITS:
        logits = np.asarray(values, np.float32)
        for temperature, top_p, seed in SAMPLER_SETTINGS:
            cases.append(_sampler_case(name, logits, temperature, top_p, seed, draws=20))
    splitmix = []
    for seed in SPLITMIX_SEEDS:
        rng = SplitMix64(seed)
        u64 = [str(rng.next_u64()) for _ in range(5)]
        doubles = [rng.next_double() for _ in range(5)]  # the 6th..10th outputs, as doubles
        splitmix.append({"seed": seed, "u64": u64, "next_doubles": doubles})
    return {"reference": "runtime/sampler.py", "splitmix64": splitmix, "cases": cases}


def _sampler_case(name, logits: np.ndarray, temperature: float, top_p: float, seed: int, draws: int) -> dict:
    sampler, uniforms = Sampler(temperature, top_p, seed), []
    if temperature > 0:
        ids, running = sampler.nucleus(logits)
        full = Sampler(temperature, 2.0).nucleus(logits)[1]  # every running sum, to check top_p's margin
        if top_p < 1 and np.min(np.abs(full - top_p)) < MARGIN:
            raise VectorsError(f"sampler case {name}: top_p={top_p} is within {MARGIN} of a running sum")
        replay = SplitMix64(seed)
        for _ in range(draws):
            u = replay.next_double()
            uniforms.append(u)
            if np.min(np.abs(running - u * running[-1])) < MARGIN:
                raise VectorsError(f"sampler case {name}: seed {seed} draws within {MARGIN} of a running sum")
    picks = [sampler.pick(logits) for _ in range(draws)]
    return {"logits_name": name, "logits": encode_array(logits), "temperature": temperature, "top_p": top_p,
            "seed": seed, "uniforms": uniforms, "picks": picks}


def calls_section(build_dir: Path, manifest: dict, backend: str | None = None) -> dict:
    from .pipeline import Pipeline

    golden = json.loads((build_dir / manifest.get("golden", "golden.json")).read_text())
    pipe = Pipeline(build_dir, backend=backend, manifest=manifest)
    if not hasattr(pipe.backend, "calls"):
        raise VectorsError(f"{build_dir}: backend {type(pipe.backend).__name__} does not record graph calls; "
                           "vectors need the executorch or onnxruntime backend of an executorch or onnx build")
    methods = manifest["graphs"]["methods"]
    cases = []
    for case in golden["cases"]:
        max_new = case.get("max_new_tokens", golden.get("max_new_tokens"))
        pipe.backend.calls = []
        try:
            result = pipe.generate(build_dir / case["image"], case["prompt"], max_new_tokens=max_new)
            recorded = pipe.backend.calls
        finally:
            pipe.backend.calls = None
        with Image.open(build_dir / case["image"]) as im:
            rgba = np.asarray(im.convert("RGBA"))  # the golden picture for ports without a PNG decoder
        cases.append({"image": case["image"], "prompt": case["prompt"], "max_new_tokens": max_new,
                      "rgba": encode_array(rgba), "ids": case["ids"], "generated_ids": result.ids,
                      "text": result.text, "calls": [_call(c, methods) for c in recorded]})
    return {"layout": manifest.get("kv_layout"), "cases": cases}


def _call(call: dict, methods: dict) -> dict:
    spec = methods[call["method"]]

    def named(arrays, declared, kind):
        if len(arrays) > len(declared):
            raise VectorsError(f"{call['method']}: recorded {len(arrays)} {kind}, the manifest declares {len(declared)}")
        return [encode_array(a, d["name"]) for a, d in zip(arrays, declared)]

    return {"method": call["method"], "inputs": named(call["inputs"], spec["inputs"], "inputs"),
            "outputs": named(call["outputs"], spec["outputs"], "outputs")}


def bad_manifests_section(manifest: dict) -> list[dict]:
    """The build's manifest with one edit each, and what `load_manifest` says of it (written to a scratch
    directory and loaded; the message names the file as "manifest.json")."""
    cases = []
    for name, (op, path, value), mentions in BAD_MANIFESTS:
        if path[-1] == "vision_prefill" and manifest["kv"]["layout"] != "split":
            continue  # only the split layout needs it
        bad = _edited(manifest, op, path, value)
        text = json.dumps(bad, indent=1, ensure_ascii=False) + "\n"
        with tempfile.TemporaryDirectory() as scratch:
            file = Path(scratch) / "manifest.json"
            file.write_text(text, encoding="utf-8")
            try:
                load_manifest(scratch)
                error = None
            except BuildError as e:
                error = str(e)
        if error is None or not error.startswith(str(file)):  # accepted, or refused only for its files
            raise VectorsError(f"bad manifest {name}: its manifest check accepted it ({error})")
        error = "manifest.json" + error[len(str(file)):]
        if not all(m in error for m in mentions):
            raise VectorsError(f"bad manifest {name}: {error!r} does not mention {mentions}")
        edit = {"op": op, "path": path, **({"value": value} if op == "set" else {})}
        cases.append({"name": name, "edit": edit, "text": text, "error": error, "mentions": mentions})
    return cases


def _edited(manifest: dict, op: str, path: list, value) -> dict:
    out = copy.deepcopy(manifest)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if op == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def build_vectors(build_dir, backend: str | None = None, manifest: dict | None = None) -> dict:
    build_dir = Path(build_dir)
    manifest = manifest or load_manifest(build_dir)
    tok = PromptTokenizer(build_dir / manifest["tokenizer"], manifest["prompt"])
    return {"format": FORMAT, "build": manifest["name"], "manifest_schema_version": manifest["schema_version"],
            "tolerance": TOLERANCE, "tokenizer": tokenizer_section(tok, manifest["tokenizer"]),
            "prompt": prompt_section(tok, manifest["prompt"]), "image": image_section(manifest["image"]),
            "sampler": sampler_section(), "calls": calls_section(build_dir, manifest, backend),
            "bad_manifests": bad_manifests_section(manifest)}


def write_vectors(build_dir, out_path, backend: str | None = None, manifest: dict | None = None) -> Path:
    """Record the vectors of the build in `build_dir` into `out_path` (written whole or not at all).

    backend: None for the build's own; it must record graph calls (executorch, onnxruntime).
    manifest: an already loaded (e.g. not yet finalised) manifest."""
    vectors, out = build_vectors(build_dir, backend, manifest), Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory (an executorch or onnx build)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    try:
        out = write_vectors(args.build, args.out)
    except (ValueError, OSError) as e:  # BuildError, TokenizerError, ImageError and VectorsError are ValueErrors
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
