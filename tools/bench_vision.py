"""The vision encoder alone, fp32 against PT2E static int8, through ExecuTorch XNNPACK, at several image sizes.

    python -m tools.bench_vision --preset fastvlm-0.5b --image-sizes 1024,512,384 --json reports/bench-vision-int8.json
    python -m tools.bench_vision --model checkpoints/foveate-tiny

No plan touches the encoder, and at 1024 px it is most of the time to first token (tools/bench.py);
int8 is what can make it faster. For every size this builds the `vision_encoder` method of the build
(image -> projected vision tokens) twice: fp32, and int8 as `export/build.py --quant-vision int8`
makes it (per-channel symmetric weights, per-tensor activations calibrated on training images of
the shapes task). Each is lowered to its own one-method `.pte`, cached under --cache by a hash of
the model, the size, the scheme and the source that builds it (bounded as tools.bench bounds it,
--cache-max-gb). The timings are medians with min/max over --repeats runs taken A B A B ... in one
process, so the fp32/int8 ratio of a size comes from one run. Also reported: the encoder's FLOPs
(cost model), the `.pte` sizes and the cosine of the int8 output to the fp32 output on a task image.

Accuracy of the int8 encoder on the default model's test split is `tools.evaluate` on a build
made with `--quant-vision int8` (README, quantization). Exit codes: 0 measured; 2 bad input; 3 a
build failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from runtime.manifest import BuildError
from tools.build_cache import add_cache_args, prune_cache
from tools.measure import machine, measure, run_or_exit

REPO = Path(__file__).resolve().parents[1]
SCHEMES = ("fp32", "int8")


def encoder_key(model: str, image_size: int, scheme: str, calibration_images: int) -> str:
    h = hashlib.sha256(json.dumps([model, image_size, scheme, calibration_images]).encode())
    for path in sorted([*REPO.glob("models/*.py"), REPO / "export" / "graphs.py", REPO / "export" / "executorch.py",
                        REPO / "export" / "load.py"]):
        h.update(path.read_bytes())
    if Path(model, "model.safetensors").is_file():
        h.update(str(Path(model, "model.safetensors").stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def load_vlm(model: str, image_size: int | None):
    """The dense model at `image_size` (a preset: random weights, seeded)."""
    from export.load import LoadError, load

    try:
        return load(model, "dense", image_size, None).vlm
    except LoadError as e:
        raise BuildError(str(e)) from None


def build_encoder(vlm, scheme: str, calibration_images: int, path: Path, log=print) -> Path:
    """The vision_encoder method of `vlm` as a one-method .pte at `path` (written once, then reused)."""
    import time

    from export import graphs
    from export.executorch import export_vision_encoder, lower
    from models.protocol import KVLayout

    if path.is_file():
        os.utime(path.parent)  # the cache forgets the least recently used entries first
        return path
    log(f"[bench_vision] building the {scheme} encoder at {vlm.cfg.vision.image_size} px into {path} ...")
    t0 = time.perf_counter()
    kv = KVLayout.derive(vlm.cfg, vlm.plan, "split")
    example = graphs.example_inputs(graphs.methods(vlm.cfg, kv)["vision_encoder"])
    program = export_vision_encoder(vlm, example, scheme == "int8", calibration_images)
    buffer = lower({"forward": program})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(buffer)
    partial.rename(path)
    log(f"[bench_vision] {scheme} at {vlm.cfg.vision.image_size} px: {time.perf_counter() - t0:.0f} s, "
        f"{len(buffer) / 1e6:.1f} MB")
    return path


def _runner(path: Path, pixels):
    import time

    import torch
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    method = program.load_method("forward")
    x = torch.from_numpy(pixels)

    def run():
        t0 = time.perf_counter()
        out = method.execute([x])[0]
        return {"encode_s": time.perf_counter() - t0, "out": out}

    return run


def task_pixels(vlm) -> np.ndarray:
    """A test-split image of the shapes task, preprocessed for this encoder (not a calibration image)."""
    from data.shapes import render, scene_questions

    from runtime.image import preprocess

    return preprocess(render(scene_questions("test", 0)[0]), vlm.cfg.image_spec())


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def set_threads(n: int) -> None:
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    torch.set_num_threads(n)
    _unsafe_reset_threadpool(n)  # XNNPACK's delegate runs on this pool


def thread_count() -> int:
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    return _threadpool_get_thread_count()


def run(args, log=print) -> dict:
    from models.cost import estimate

    model = args.model or args.preset
    cache = Path(args.cache)
    runners, rows, used = {}, [], set()
    for size in args.image_sizes:
        vlm = load_vlm(model, size)
        pixels = task_pixels(vlm)
        row = {"image_size": vlm.cfg.vision.image_size, "vision_tokens": vlm.cfg.num_vision_tokens,
               "encoder_flops": estimate(vlm.cfg, "dense", 1, 1).vision_encoder_flops, "pte_bytes": {}, "files": {}}
        for scheme in SCHEMES:
            key = encoder_key(model, row["image_size"], scheme, args.calibration_images)
            used.add(key)
            path = cache / key / f"vision-{scheme}.pte"
            if not path.is_file():  # room for the build
                prune_cache(cache, used, int(args.cache_max_gb * 1e9), log)
            try:
                path = build_encoder(vlm, scheme, args.calibration_images, path, log)
            except Exception as e:  # noqa: BLE001 (any export/lowering failure of the backend: one line, exit 3)
                raise RuntimeError(f"building the {scheme} encoder at {size} px failed: "
                                   f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            row["pte_bytes"][scheme], row["files"][scheme] = path.stat().st_size, str(path)
            runners[f"{row['image_size']}:{scheme}"] = _runner(path, pixels)
        del vlm
        rows.append(row)
    outputs = {label: fn()["out"] for label, fn in runners.items()}
    timed = {label: (lambda fn=fn: {"encode_s": fn()["encode_s"]}) for label, fn in runners.items()}
    timings = measure(timed, args.repeats, log, metrics=("encode_s",))
    for row in rows:
        s = row["image_size"]
        row["timings"] = {scheme: timings[f"{s}:{scheme}"]["encode_s"] for scheme in SCHEMES}
        row["int8_speedup"] = row["timings"]["fp32"]["median"] / row["timings"]["int8"]["median"]
        row["int8_pte_ratio"] = row["pte_bytes"]["int8"] / row["pte_bytes"]["fp32"]
        row["int8_output_cosine"] = cosine(outputs[f"{s}:int8"], outputs[f"{s}:fp32"])
    return {"model": model, "repeats": args.repeats, "calibration_images": args.calibration_images,
            "threads": thread_count(), "machine": machine(), "results": rows}


def table(rows: list[dict]) -> str:
    head = ("| image px | vision tokens | encoder GFLOPs | fp32 ms | int8 ms | int8 speed-up | fp32 MB | int8 MB | "
            "int8 output cosine |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r["timings"]
        lines.append("| " + " | ".join([
            str(r["image_size"]), str(r["vision_tokens"]), f"{r['encoder_flops'] / 1e9:.1f}",
            f"{t['fp32']['median'] * 1e3:.1f}", f"{t['int8']['median'] * 1e3:.1f}", f"{r['int8_speedup']:.2f}",
            f"{r['pte_bytes']['fp32'] / 1e6:.1f}", f"{r['pte_bytes']['int8'] / 1e6:.1f}",
            f"{r['int8_output_cosine']:.4f}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_vision", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="preset name (random weights)")
    what.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--image-sizes", default=None, help="comma-separated image sides (default: the model's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calibration-images", type=int, default=8,
                    help="training images the int8 activation ranges are observed on (default: 8)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for ExecuTorch's threadpool and torch (default: one per core)")
    add_cache_args(ap)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    try:
        args.image_sizes = [int(s) for s in args.image_sizes.split(",") if s] if args.image_sizes else [None]
    except ValueError:
        ap.error(f"--image-sizes takes comma-separated integers, not {args.image_sizes!r}")
    if args.repeats < 1 or args.calibration_images < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--repeats, --calibration-images and --threads must be at least 1")
    if args.cache_max_gb < 0:
        ap.error("--cache-max-gb must be >= 0")
    if args.threads:
        set_threads(args.threads)
    result, code = run_or_exit(run, args)
    if result is None:
        return code
    print(f"{result['model']}: vision encoder through ExecuTorch XNNPACK, {result['threads']} threads, medians of "
          f"{result['repeats']}; {result['machine']['cpu']}, {result['machine']['cores']} cores")
    print(table(result["results"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
