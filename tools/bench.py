"""Speed of builds, dense vs planned, per backend, measured interleaved in one process (docs/design.md §10).

    python -m tools.bench --preset fastvlm-0.5b --image-size 1024 --prompt-tokens 32 --new-tokens 32 \
        --plans dense,plans/example-fastvlm-0.5b.json --backends executorch,onnxruntime --json results.json
    python -m tools.bench --preset fastvlm-tiny --plans dense,PLAN.json --backends onnxruntime,torch

Builds come from export/build.py and are cached under --cache by a hash of what defines them (model,
plan, sizes, target, quantization, and the source of every repository module the build imports); before
building, the least recently used entries this run does not need go until the cache holds at most
--cache-max-gb. With --quant 8da4w, --quant-vision int8 gives the quantized builds an int8 vision
encoder too.

The conversation is synthetic and the same for every run: the template's text before the image, a
seeded random image, --prompt-tokens random ids, then exactly --new-tokens greedy decode steps (stop
tokens do not stop it). Each backend also runs the dense build without an image: the text-only floor
of prefill.

--also MODEL=PLANS measures plans of a second model with the same decoder and prompt in the same loop,
against the first model's dense build: its STF variant, say, where the vision tokens differ but the
text-only floor is the same (rows are labelled PLAN@MODEL).

Per (backend, plan), medians with min/max over --repeats runs taken A B A B ...: image encode,
decoder prefill (every chunk but the image encoder), time to first token, decode tokens/s; and the
graph files' size, the RSS the process grew by when the build was loaded, KV bytes and FLOPs from the
cost model. Against dense: prefill and TTFT speed-ups, and the share of the vision-attributable
prefill time removed, (dense - plan) / (dense - text only). Roofline: this machine's fp32 GEMM rate
through each backend (a 2048 x 2048 linear) and its memory bandwidth (a large copy); prefill reaches
FLOPs / time of the former, decode (parameter + KV bytes read per token) / time of the latter.
Quantized rows are set against the fp32 dense build for speed-ups only: the text-only floor and the
roofline are the fp32 weights', so those columns read "-".
Exit codes: 0 measured; 2 bad input; 3 a build failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
from pathlib import Path

import numpy as np

from runtime.manifest import BuildError, load_manifest
from tools.bench_report import ratios, roofline, table, vision_kv_comparison
from tools.build_cache import add_cache_args, ensure_build, entry_key, prune_cache
from tools.measure import METRICS, gemm_rate, machine, measure, memory_bandwidth, rss_bytes, run_or_exit

BACKEND_TARGET = {"executorch": "executorch", "onnxruntime": "onnx", "torch": "onnx"}  # torch runs a build's weights


def _check_plans(model: str, plans: list[str], image_size: int):
    """({spec: resolved plan dict}, tokens of the template before the image, config): every plan must
    fit the model before the first (slow) build starts, and the KV capacity must hold the template."""
    from export.load import LoadError, load_model_config
    from models.vlm import resolve_plan
    from runtime.tokenizer import PromptTokenizer, TokenizerError

    try:
        cfg, tokenizer = load_model_config(model, image_size, None)  # the config only: no full-size weights held
        before, _ = PromptTokenizer(tokenizer, dataclasses.asdict(cfg.prompt)).encode_prompt("", with_image=True)
        return {spec: resolve_plan(cfg, spec).to_dict() for spec in plans}, len(before), cfg
    except (LoadError, TokenizerError, ValueError) as e:
        raise BuildError(str(e)) from None


def conversation(pipe, prompt_tokens: int, seed: int = 0):
    """(ids before the image, pixels, ids after it): the template's prefix, a random image, random ids."""
    from PIL import Image

    from runtime.image import preprocess

    rng = np.random.default_rng(seed)
    size = pipe.manifest["image"]["size"]
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    before, _ = pipe.tokenizer.encode_prompt("", with_image=True)
    allowed = np.setdiff1d(np.arange(pipe.tokenizer.vocab_size), pipe.tokenizer.stop_ids)
    return before, preprocess(image, pipe.manifest["image"]), rng.choice(allowed, prompt_tokens).tolist()


def cost_of(build: Path, manifest: dict, prefix_tokens: int, prompt_tokens: int, new_tokens: int) -> dict:
    """FLOPs and bytes of this conversation under the build's plan, from the cost model."""
    from models.checkpoint import load_config
    from models.cost import estimate
    from models.vlm import resolve_plan

    kv = manifest["kv"]
    cfg = load_config(build / manifest["weights"], max_seq_len=kv["text_rows"] - kv["image_slots"])
    plan = resolve_plan(cfg, manifest["plan"])
    c = estimate(cfg, plan, prefix_tokens, prompt_tokens, new_tokens)
    text = estimate(cfg, "dense", prefix_tokens, prompt_tokens, new_tokens, image=False)
    return {"prefill_flops": c.prefill_flops, "vision_encoder_flops": c.vision_encoder_flops,
            "decode_flops": c.decode_flops, "text_only_prefill_flops": text.prefill_flops,
            "kv_bytes_static": c.kv_bytes_static, "kv_bytes_filled": c.kv_bytes_filled,
            "kv_bytes_ideal": c.kv_bytes_ideal, "decoder_param_bytes": c.decoder_param_bytes,
            "decode_bytes_per_token": c.decoder_param_bytes + c.kv_bytes_filled}


def ours(pipe, before, pixels, after, new_tokens: int):
    """foveate's runtime on one build: the conversation with exactly new_tokens decode steps."""
    return lambda: {m: v for m, v in pipe.run_ids(before, pixels, after, new_tokens, stop_ids=())[1].items()
                    if m in METRICS}


def stock_runner(build: Path, manifest: dict, before, pixels, after, new_tokens: int):
    """ExecuTorch's own MultimodalRunner on a dense (shared-layout) .pte:
    time to first token and decode rate from its Stats (it stops at an EOS id; rates are per token)."""
    import torch
    from executorch.extension.llm.runner import (GenerationConfig, MultimodalRunner, make_image_input,
                                                 make_token_input)

    runner = MultimodalRunner(str(build / manifest["graphs"]["files"][0]), str(build / manifest["tokenizer"]))
    inputs = [make_token_input(list(before)), make_image_input(torch.from_numpy(pixels)),
              make_token_input(list(after))]
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0.0, echo=False)

    def run():
        got = []
        runner.reset()
        runner.generate(inputs, config, token_callback=lambda _: None, stats_callback=got.append)
        s = got[-1]
        decode_ms = s.inference_end_ms - s.first_token_ms
        return {"ttft_s": (s.first_token_ms - s.inference_start_ms) / 1e3,
                "decode_tok_s": (s.num_generated_tokens - 1) / decode_ms * 1e3 if decode_ms > 0 else 0.0}

    return run


def _models_and_plans(args) -> tuple[list[tuple[str, str, str]], dict, int]:
    """[(model, plan spec, label suffix)] in measuring order (the main model first), {model: {spec: plan}}
    and the template length. An --also model must share the main model's decoder and prompt, or its
    rows could not be set against the main model's dense build and text-only floor."""
    model = args.model or args.preset
    plans, template, cfg = _check_plans(model, args.plans, args.image_size)
    order, resolved = [(model, spec, "") for spec in args.plans], {model: plans}
    for other, specs in args.also:
        _, _, other_cfg = _check_plans(other, [], None)  # at its own image size: the main one may not fit it
        if other_cfg.decoder != cfg.decoder or other_cfg.prompt != cfg.prompt:
            raise BuildError(f"--also {other}: its decoder or prompt differs from {model}'s, so its rows cannot "
                             f"be compared with {model}'s dense build")
        resolved[other] = _check_plans(other, specs, args.image_size)[0]
        order += [(other, spec, f"@{Path(other).name}") for spec in specs]
    return order, resolved, template


def run(args, log=print) -> dict:
    from runtime.pipeline import Pipeline

    model = args.model or args.preset
    cache = Path(args.cache)
    order, plans, template = _models_and_plans(args)
    room = template + 32  # the template before the image; after it, and the build's parity prompt (checked below)
    max_seq_len = args.max_seq_len or -(-(room + args.prompt_tokens + args.new_tokens) // 32) * 32
    runs, rows, loaded, pipes, builds = {}, [], {}, {}, []
    # first, while nothing big is loaded: at full size the programs alone take most of the memory
    log("[bench] roofline: GEMM peak per backend and memory bandwidth ...")
    peaks = {b: gemm_rate(b) for b in args.backends}
    bandwidth = memory_bandwidth()
    from export.build import QUANT_TARGET

    wanted = []
    for backend in args.backends:
        quants = ["none"] + ([args.quant] if args.quant and QUANT_TARGET[args.quant] == BACKEND_TARGET[backend]
                             and backend != "torch" else [])
        for quant, (source, spec, suffix) in ((q, o) for q in quants for o in order):
            quant_vision = args.quant_vision if quant != "none" else "none"
            designs = ["io"] + (["buffers"] if args.compare_vision_kv and backend == "executorch" and spec != "dense"
                                else [])
            for vision_kv in designs:
                key = entry_key(source, plans[source][spec], args.image_size, max_seq_len, BACKEND_TARGET[backend],
                                quant, quant_vision, vision_kv)
                wanted.append((backend, quant, source, spec, suffix, quant_vision, vision_kv, key))
    prune_cache(cache, {w[-1] for w in wanted}, int(args.cache_max_gb * 1e9), log)
    for backend, quant, source, plan_spec, suffix, quant_vision, vision_kv, key in wanted:
        builds.append((backend, quant, source, suffix, ensure_build(
            source, plan_spec, plans[source], args.image_size, max_seq_len, BACKEND_TARGET[backend], cache / key,
            log, quant, quant_vision, vision_kv)))
    for backend, quant, source, suffix, build in builds:  # loaded only once all are built: a build peaks at ~15 GB
        manifest = load_manifest(build)
        rss0 = rss_bytes()
        pipe = Pipeline(build, backend=backend, manifest=manifest)
        rss1 = rss_bytes()
        label = f"{backend}:{manifest['plan']['name']}" + ("" if quant == "none" else f"+{quant}") + (
            f"+vision-{manifest['quant_vision']}" if manifest.get("quant_vision", "none") != "none" else "") + (
            "+kvbuffers" if manifest["kv"].get("vision_kv_design") == "buffers" else "") + suffix
        pipes[label] = pipe
        loaded[label] = (build, manifest, None if rss0 is None else rss1 - rss0, source)
    first = next(iter(pipes.values()))
    before, pixels, after = conversation(first, args.prompt_tokens)
    capacity = first.kv.text_rows - first.kv.image_slots  # text tokens the cache holds beside the image
    if len(before) + len(after) + args.new_tokens > capacity:
        raise BuildError(f"{len(before)} + {len(after)} + {args.new_tokens} tokens exceed the KV capacity "
                         f"{capacity}; raise --max-seq-len")
    for label, pipe in pipes.items():
        runs[label] = ours(pipe, before, pixels, after, args.new_tokens)
        backend, plan = label.split(":", 1)
        if plan == "dense":
            runs[f"{backend}:text-only"] = ours(pipe, before, None, after, args.new_tokens)
            if backend == "executorch" and args.stock_runner:
                build, manifest, _, _ = loaded[label]
                runs["executorch:stock-runner"] = stock_runner(build, manifest, before, pixels, after, args.new_tokens)
    timings = measure(runs, args.repeats, log)
    for label, (build, manifest, grown, source) in loaded.items():
        backend = label.split(":")[0]
        floor = timings.get(f"{backend}:text-only", {}).get("prefill_s", {}).get("median")
        rows.append({"backend": backend, "plan": label.split(":", 1)[1], "model": source,
                     "quant": manifest.get("quant", "none"),
                     "quant_vision": manifest.get("quant_vision", "none"),
                     "vision_kv": manifest["kv"].get("vision_kv_design", "io"),
                     "build": str(build),
                     "vision_tokens": manifest["kv"]["vision_tokens"], "timings": timings[label],
                     "text_only_prefill_s": floor, "load_rss_bytes": grown,
                     "graph_bytes": sum((build / f).stat().st_size for f in manifest["graphs"]["files"]
                                        if (build / f).is_file()),
                     "cost": cost_of(build, manifest, len(before), len(after), args.new_tokens)})
    ratios(rows)
    anchor = None
    if "executorch:stock-runner" in timings:
        stock = timings["executorch:stock-runner"]
        mine = timings["executorch:dense"]
        anchor = {"timings": stock, "ours_ttft_over_stock": mine["ttft_s"]["median"] / stock["ttft_s"]["median"],
                  # None when the runner's millisecond clock saw no decode time (a tiny model, a few tokens)
                  "ours_decode_over_stock": mine["decode_tok_s"]["median"] / stock["decode_tok_s"]["median"]
                  if stock["decode_tok_s"]["median"] > 0 else None}
    roofline(rows, peaks, bandwidth)
    return {"vision_kv_comparison": vision_kv_comparison(rows),"model": model, "also": [other for other, _ in args.also], "image_size": args.image_size, "prefix_tokens": len(before),
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
            "max_seq_len": max_seq_len, "machine": machine(), "gemm_flops_per_s": peaks,
            "memory_bytes_per_s": bandwidth, "stock_runner": anchor, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "results": rows}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="preset name (random weights)")
    what.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--image-size", type=int, default=None, help="input image side (default: the model's)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=None, help="text KV capacity (default: what the run needs)")
    ap.add_argument("--plans", default="dense", help="comma-separated: dense and/or plan JSON files")
    ap.add_argument("--also", action="append", default=[], metavar="MODEL=PLANS",
                    help="plans (comma-separated) of another model with the same decoder, e.g. its STF variant, "
                         "measured against this model's dense build; repeatable")
    ap.add_argument("--backends", default="executorch,onnxruntime", help="comma-separated: executorch, onnxruntime, torch")
    ap.add_argument("--quant", default=None, choices=("int8", "8da4w", "int4"),
                    help="also measure quantized builds of every plan on the backend of that scheme's target")
    ap.add_argument("--quant-vision", default="none", choices=("none", "int8"),
                    help="with --quant 8da4w: the quantized builds' vision encoder in int8 too (PT2E, XNNPACK)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-stock-runner", dest="stock_runner", action="store_false",
                    help="do not time ExecuTorch's MultimodalRunner on the dense .pte")
    add_cache_args(ap)
    ap.add_argument("--compare-vision-kv", action="store_true",
                    help="executorch: also build every planned build in the earlier design (vision K/V in buffers "
                         "shared between methods, export/build.py --vision-kv buffers) and measure it in the same "
                         "loop; the result's vision_kv_comparison gives new / old TTFT and decode rate")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    args.plans = [p for p in args.plans.split(",") if p]
    args.backends = [b for b in args.backends.split(",") if b]
    also = []
    for item in args.also:
        other, sep, specs = item.partition("=")
        if not sep or not other or not [p for p in specs.split(",") if p]:
            ap.error(f"--also {item!r}: expected MODEL=PLAN[,PLAN...]")
        also.append((other, [p for p in specs.split(",") if p]))
    args.also = also
    return ap, args


def main(argv=None) -> int:
    ap, args = parse_args(argv)
    bad = [b for b in args.backends if b not in BACKEND_TARGET]
    if bad or not args.backends:
        ap.error(f"unknown backends {bad}; valid: {', '.join(BACKEND_TARGET)}")
    if "dense" not in args.plans:
        args.plans.insert(0, "dense")  # every ratio is against dense
    if args.quant_vision != "none" and args.quant != "8da4w":
        ap.error("--quant-vision int8 goes with --quant 8da4w (the executorch builds)")
    if args.repeats < 1 or args.prompt_tokens < 1 or args.new_tokens < 2:
        ap.error("--repeats >= 1, --prompt-tokens >= 1 and --new-tokens >= 2")
    if args.cache_max_gb < 0:
        ap.error("--cache-max-gb must be >= 0")
    if args.image_size is None:
        from export.load import LoadError, load_model_config

        try:
            args.image_size = load_model_config(args.model or args.preset, None, None)[0].vision.image_size
        except LoadError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    result, code = run_or_exit(run, args)
    if result is None:
        return code
    print(f"{result['model']} at {result['image_size']} px, {result['prefix_tokens']} + {result['prompt_tokens']} "
          f"prompt tokens, {result['new_tokens']} new tokens, medians of {result['repeats']}; {result['machine']['cpu']}")
    print(table(result["results"]))
    print("GEMM peak: " + ", ".join(f"{b} {v / 1e9:.0f} GFLOP/s" for b, v in result["gemm_flops_per_s"].items())
          + f"; memory bandwidth {result['memory_bytes_per_s'] / 1e9:.1f} GB/s")
    a = result["stock_runner"]
    if a:
        decode = a["ours_decode_over_stock"]
        print(f"ExecuTorch MultimodalRunner on the dense .pte: TTFT {a['timings']['ttft_s']['median'] * 1e3:.1f} ms, "
              f"decode {a['timings']['decode_tok_s']['median']:.1f} tok/s; foveate's runtime / stock: TTFT "
              f"{a['ours_ttft_over_stock']:.2f}x, decode rate "
              + ("not measured (under the runner's 1 ms clock)" if decode is None else f"{decode:.2f}x"))
    for c in result["vision_kv_comparison"]:
        print(f"{c['backend']}:{c['plan']}: vision K/V as outputs/inputs over shared buffers: TTFT "
              f"{c['ttft_new_over_old']:.3f}x, decode rate {c['decode_new_over_old']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
