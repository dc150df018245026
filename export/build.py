"""Build phone-ready graphs of a VLM with its vision plan, and prove they match PyTorch.

    python export/build.py --target onnx                       # the default model and plan
    python export/build.py --target all --plan plans/example.json --out build
    python export/build.py --target executorch --model fastvlm-0.5b --plan dense --image-size 1024
    python export/build.py --target onnx --plan auto             # calibrate the plan first (export/calibrate.py)

Stages: load -> export/lower/convert -> save -> parity. Everything is written into a temporary
directory beside the destination and renamed into place only when every stage passed, so an
interrupted or failed build never leaves a directory that looks complete.
Each stage prints a line when it starts and ends, the export stage one per method; the command ends with
a table of what it built: directory, parity verdict, size, and the command to try the build next.
A Core ML build made off macOS is built with its parity pending (its prediction needs macOS 15 or later):
parity.json records what was checked on this machine instead, and the command that runs the rest on a Mac.
Exit codes: 0 built; 1 parity floor missed; 2 bad arguments or input; 3 export failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root, not export/, goes first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # (export/onnx.py must not shadow onnx)

from export import artifacts  # noqa: E402

TARGETS = ("executorch", "onnx", "coreml")
QUANT_TARGET = {"int8": "onnx", "8da4w": "executorch", "int4": "coreml"}  # the target each quantization scheme is built for
REPO = Path(__file__).resolve().parents[1]
VECTORS_MAX_IMAGE_SIZE = 512  # vectors.json holds preprocessed images: larger builds write them on request


def target_module(name: str):
    """export/<target>.py, imported only when that target is built (each pulls its own SDK)."""
    import importlib

    return importlib.import_module({"executorch": "export.executorch", "onnx": "export.onnx",
                                    "coreml": "export.coreml"}[name])


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python export/build.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--target", required=True, choices=TARGETS + ("all",))
    ap.add_argument("--model", default=None, help="checkpoint directory or preset name (default: the shipped model)")
    ap.add_argument("--plan", default=None, help="plan JSON file, 'dense', or 'auto': calibrate one with "
                    "export/calibrate.py's default budget (default: the model's shipped plan)")
    ap.add_argument("--calibration-n", type=int, default=400,
                    help="with --plan auto: calibration questions, and as many test questions for its report")
    ap.add_argument("--dtype", default=None, choices=("fp32", "fp16"),
                    help="compute dtype (default: fp16 for coreml, fp32 otherwise; fp16 is built for coreml only)")
    ap.add_argument("--quant", default="none", choices=("none",) + tuple(QUANT_TARGET),
                    help="weight quantization: int8 (onnx, onnxruntime dynamic), 8da4w (executorch, torchao), int4 "
                         "(coreml, coremltools blockwise); not held to the fp32 parity floor, "
                         "judged by fidelity floors instead (runtime/parity.py)")
    ap.add_argument("--quant-vision", default="none", choices=("none", "int8"),
                    help="executorch: PT2E static int8 vision encoder (XNNPACK quantizer), calibrated on task images")
    ap.add_argument("--image-size", type=int, default=None, help="input image side in pixels")
    ap.add_argument("--max-seq-len", type=int, default=None, help="text KV capacity in tokens")
    ap.add_argument("--out", default="build", help="directory that receives build/<name>/ (default: build)")
    ap.add_argument("--skip-parity", action="store_true", help="do not check the graphs (marked in the manifest)")
    ap.add_argument("--vision-kv", default="io", choices=("io", "buffers"),
                    help="executorch, planned builds: how the vision K/V travel from vision_prefill to text_decoder: "
                         "io (outputs and inputs, runs under any runtime; default) or buffers (the earlier design, "
                         "buffers shared between methods: not runnable by ExecuTorch's Android binding; kept for "
                         "comparison)")
    return ap.parse_args(argv)


class Stages:
    """Prints one line per stage with its time."""

    def __init__(self, name: str):
        self.name, self.times = name, {}

    def run(self, stage: str, fn, *args, **kwargs):
        print(f"[{self.name}] {stage} ...", flush=True)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[stage] = round(time.perf_counter() - t0, 2)
        print(f"[{self.name}] {stage} done in {self.times[stage]:.1f} s", flush=True)
        return out

    def log(self, msg: str):
        print(f"[{self.name}]   {msg}", flush=True)


def build_one(target: str, args, loaded) -> Path:
    from export.load import model_name
    from models.checkpoint import replace_dir

    args = argparse.Namespace(**vars(args))
    args.dtype = args.dtype or ("fp16" if target == "coreml" else "fp32")

    vlm, source, tokenizer_path, layout = loaded.vlm, loaded.source, loaded.tokenizer, loaded.layout
    name = f"{model_name(source)}-{vlm.plan.name}-{target}" + ("-fp32" if target == "coreml" and args.dtype == "fp32" else "")
    name += f"-{args.quant}" if args.quant != "none" else ""
    name += f"-vision{args.quant_vision}" if args.quant_vision != "none" else ""
    name += "-kvbuffers" if args.vision_kv == "buffers" and layout == "split" else ""
    final = Path(args.out) / name
    tmp = Path(args.out) / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    st = Stages(name)
    try:
        report = _fill(tmp, target, args, loaded, name, st, final)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[{name}] built {final} ({', '.join(f'{k} {v:.1f}s' for k, v in st.times.items())}); "
          f"{parity_line(report, final)}", flush=True)
    return final


def parity_line(report: dict, build_dir: Path) -> str:
    """The build's parity in one line: passed with its weakest stage, pending with what was checked, or skipped."""
    from runtime.parity import verdict

    v = verdict(report)
    if v == "skipped":
        return "parity SKIPPED (--skip-parity)"
    if v == "pending on macOS":
        checked = report["checked_here"]
        psnr = ", ".join(f"{k} {c['min_psnr_db']:.1f} dB" for k, c in checked.items() if "min_psnr_db" in c)
        return (f"parity PENDING (Core ML prediction needs macOS 15 or later; checked here: {psnr}, "
                f"{len(checked['saved_specs']['methods'])} saved specs); on a Mac: "
                f"python -m runtime.parity --build {build_dir}")
    weakest = min(report["stages"].items(), key=lambda kv: kv[1]["psnr_db"])
    return (f"parity {v} (weakest stage {weakest[0]} {weakest[1]['psnr_db']:.1f} dB, "
            f"greedy tokens {'match' if report['tokens_match'] else 'differ'})")


def _fill(tmp: Path, target: str, args, loaded, name: str, st: Stages, final: Path) -> dict:
    from models.checkpoint import save_model
    from runtime.tokenizer import PromptTokenizer

    from models.protocol import KVLayout

    vlm, layout = loaded.vlm, loaded.layout
    kv = KVLayout.derive(vlm.cfg, vlm.plan, layout)  # the one place the capacities are computed
    vision_kv = args.vision_kv if layout == "split" else "io"
    shutil.copy(loaded.tokenizer, tmp / "tokenizer.json")
    st.run("save weights", save_model, vlm, tmp / "weights")
    prompt = {"before_image": vlm.cfg.prompt.before_image, "after_image": vlm.cfg.prompt.after_image,
              "stop_tokens": list(vlm.cfg.prompt.stop_tokens), "image_token": vlm.cfg.prompt.image_token}
    tok = PromptTokenizer(tmp / "tokenizer.json", prompt)
    info = {"stop_ids": list(tok.stop_ids) or [0], "bos_id": 0}
    graph_vlm = artifacts_layout_model(vlm, layout)
    kwargs = {"compute_precision": args.dtype} if target == "coreml" else {}
    if args.quant != "none":
        kwargs["quant"] = args.quant
    if args.quant_vision != "none":
        kwargs["quant_vision"] = args.quant_vision
    if vision_kv != "io":
        kwargs["vision_kv"] = vision_kv
    built = st.run(f"export {target}", target_module(target).build, graph_vlm, kv, tmp, info, st.log, **kwargs)
    manifest = artifacts.manifest(name, target, args.dtype, vlm, kv, str(loaded.source), built,
                                  list(tok.stop_ids), args.skip_parity, args.quant, args.quant_vision, vision_kv)
    if built.get("checks"):
        manifest["checks"] = built["checks"]
    images = artifacts.golden_images(tmp, vlm.cfg.vision.image_size)
    st.run("golden + cost", _golden_and_cost, tmp, manifest, images, tok, vlm)
    report = {"skipped": True} if args.skip_parity else st.run("parity", _parity, tmp, manifest, target, final)
    artifacts.write_json(tmp / "parity.json", report)
    if args.skip_parity:
        print(f"[{name}] WARNING: parity skipped (--skip-parity); the manifest says so", flush=True)
    elif report["passed"] is False:
        from runtime.parity import format_table

        print(format_table(report), flush=True)
        raise ParityError(f"{name}: parity failed: {'; '.join(report['failures'])}")
    if target != "coreml" and vlm.cfg.vision.image_size <= VECTORS_MAX_IMAGE_SIZE:
        from runtime.vectors import write_vectors

        st.run("vectors", write_vectors, tmp, tmp / "vectors.json", manifest=manifest)
        manifest["vectors"] = "vectors.json"
    artifacts.write_json(tmp / "manifest.json", manifest)  # last: marks the directory complete
    return report


def artifacts_layout_model(vlm, layout):
    from models.vlm import shared_layout_model

    return shared_layout_model(vlm) if layout == "shared" else vlm


def _golden_and_cost(tmp: Path, manifest: dict, images: list[str], tok, vlm) -> None:
    from runtime.pipeline import Pipeline

    pipe = Pipeline(tmp, backend="torch", manifest=manifest)
    cases = []
    for image, prompt in zip(images, artifacts.GOLDEN_PROMPTS):
        result = pipe.generate(tmp / image, prompt, max_new_tokens=8)
        cases.append({"image": image, "prompt": prompt, "ids": result.ids, "text": result.text})
    artifacts.write_json(tmp / "golden.json", {"backend": "torch", "max_new_tokens": 8, "cases": cases})
    before, after = tok.encode_prompt(artifacts.GOLDEN_PROMPTS[0], with_image=True)
    artifacts.write_json(tmp / "cost.json", artifacts.cost_section(vlm.cfg, vlm.plan, len(before), len(after)))


def _parity(tmp: Path, manifest: dict, target: str, final: Path) -> dict:
    from runtime.check import check_build

    if target == "coreml" and sys.platform != "darwin":
        from export.coreml_checks import local_parity

        return local_parity(manifest["checks"], manifest["dtype"], manifest.get("quant", "none"), final)
    return check_build(tmp, manifest=manifest)


def calibrate_plan(args) -> Path:
    """--plan auto: calibrate the model's plan into <out>/<model>-auto-calibration/ (plan.json, report/)."""
    from export.calibrate import Options, calibrate, load_for_calibration, write
    from export.load import SHIPPED_MODEL_DIR, model_name
    from models.config import PRESETS

    source = args.model or str(SHIPPED_MODEL_DIR)
    if source in PRESETS:
        raise ValueError(f"{source} is a preset with random weights: there is nothing to calibrate; "
                         "give a trained checkpoint directory")
    if args.calibration_n < 2:
        raise ValueError("--calibration-n must be at least 2")
    if not Path(source, "config.json").is_file():
        raise ValueError(f"{source}: not a checkpoint directory (no config.json)")
    out = Path(args.out) / f"{model_name(source)}-auto-calibration"
    print(f"[calibrate] {source} on {args.calibration_n} validation questions -> {out}", flush=True)
    vlm, tok = load_for_calibration(Path(source), args.image_size)  # CheckpointError, TokenizerError: ValueErrors
    result = calibrate(vlm, tok, Options(n=args.calibration_n, test_n=args.calibration_n))
    write(result, out / "plan.json", out / "report")
    c = result["chosen"]
    print(f"[calibrate] plan {' '.join(result['plan']['modes'])}: {100 * c['vision_removed']:.1f}% of vision "
          f"prefill FLOPs removed, in {result['calibration_seconds']:.0f} s", flush=True)
    return out / "plan.json"


class ParityError(RuntimeError):
    pass


def main(argv=None) -> int:
    args = parse_args(argv)
    from export.load import LoadError, load

    targets = TARGETS if args.target == "all" else (args.target,)
    if args.dtype == "fp16" and targets != ("coreml",):
        print("error: --dtype fp16 is built for the coreml target only", file=sys.stderr)
        return 2
    if args.quant != "none" and targets != (QUANT_TARGET[args.quant],):
        print(f"error: --quant {args.quant} is built for the {QUANT_TARGET[args.quant]} target only", file=sys.stderr)
        return 2
    if args.quant_vision != "none" and targets != ("executorch",):
        print("error: --quant-vision int8 is built for the executorch target only", file=sys.stderr)
        return 2
    if args.vision_kv != "io" and targets != ("executorch",):
        print("error: --vision-kv buffers is built for the executorch target only", file=sys.stderr)
        return 2
    if args.plan == "auto":
        try:
            args.plan = str(calibrate_plan(args))
        except (ValueError, OSError) as e:
            print(f"error: --plan auto: {e}", file=sys.stderr)
            return 2
    try:
        print("[load] model and plan ...", flush=True)
        t0 = time.perf_counter()
        loaded = load(args.model, args.plan, args.image_size, args.max_seq_len)
        print(f"[load] {loaded.source} with plan {loaded.vlm.plan.name!r} "
              f"({loaded.vlm.cfg.num_vision_tokens} vision tokens) in {time.perf_counter() - t0:.1f} s", flush=True)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    built, failed, code = [], None, 0
    for target in targets:
        try:
            built.append(build_one(target, args, loaded))
            continue
        except ParityError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            print("interrupted: no build written", file=sys.stderr)
            code = 130
        except (ValueError, OSError) as e:
            print(f"error: {target} build failed: {e}", file=sys.stderr)
            code = 3
        failed = target
        break
    print(summary(built, failed), flush=True)
    return code


def _python() -> str:
    """This interpreter as a user would type it here: .venv/bin/python inside the repository."""
    rel = os.path.relpath(sys.executable)
    return rel if not rel.startswith("..") else sys.executable


def _megabytes(paths) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def next_command(build_dir: Path, manifest: dict) -> str:
    """The command to try a build: a golden question through runtime.generate where its backend runs here;
    for a Core ML build elsewhere, its prediction check on a Mac."""
    if manifest["target"] == "coreml" and sys.platform != "darwin":
        return f"on macOS 15+: python -m runtime.parity --build {shlex.quote(str(build_dir))}"
    case = json.loads((build_dir / manifest["golden"]).read_text())["cases"][0]
    return (f"{_python()} -m runtime.generate --build {shlex.quote(str(build_dir))} "
            f"--image {shlex.quote(str(build_dir / case['image']))} --prompt {shlex.quote(case['prompt'])}")


def summary(built: list[Path], failed: str | None = None) -> str:
    """A table of the builds: directory, parity verdict, size of the graphs and of the whole directory, and
    the command to try each next; a target that failed is a row too."""
    from runtime.parity import verdict

    rows = []
    for d in built:
        manifest = json.loads((d / "manifest.json").read_text())
        report = json.loads((d / manifest["parity"]["file"]).read_text())
        graphs = _megabytes([d / f for f in manifest["graphs"]["files"]])
        rows.append((str(d), verdict(report), f"{graphs:.1f} MB", f"{_megabytes([d]):.1f} MB",
                     next_command(d, manifest)))
    if failed:
        rows.append((f"({failed}: nothing written)", "failed", "-", "-", "see the error above"))
    head = ("build", "parity", "graphs", "on disk", "try it")
    width = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], width)) + "  " + r[4] for r in [head] + rows]
    return "\n".join(["", f"{len(built)} build{'s' if len(built) != 1 else ''}:", *lines])


if __name__ == "__main__":
    sys.exit(main())
