"""Fidelity on the generated shapes task (data/shapes.py): of a build, or of a model under vision plans.

    python -m tools.evaluate --build build/foveate-tiny-default-onnx --split hard --n 200
    python -m tools.evaluate --model checkpoints/foveate-tiny --plan dense --plan my-plan.json --split all
    python -m tools.evaluate --table plans/fidelity.json --n 500 --markdown fidelity.md --json fidelity.json

Per run: exact-match accuracy of the greedy answer (easy, hard, and per question type) and, against
the dense model, the top-1 agreement and mean KL(dense || run) of the first answer token's
distribution. The dense reference of a build is its own weights under the dense plan; of a model,
the model itself; of a table, its "reference" entry. `--data` picks the task split (default "test",
which is for reporting only: calibration uses "val"). A model is loaded as export/build.py loads it:
a tokenizer converted when it has no tokenizer.json, and `--image-size` with the same meaning.

A table file lists runs: {"reference": {"model": DIR}, "rows": [{"name": ..., "model": DIR (default:
the reference), "plan": "dense" | FILE | {plan JSON}}, ...]}, paths relative to the table file. It
prints one Markdown table with each run's decoder prefill FLOPs from the cost model and the share of
the vision-attributable prefill FLOPs it removes, (dense - plan) / (dense - text only).

Every argument is checked before any question is asked: plan files parse and fit their models, builds
and their graphs load, output paths are writable. Progress goes to stderr: one rewritten line on a
terminal, else a line every tenth of a run (or every 30 s) with the count, the time and the rate.
A build's FLOPs columns are its cost.json (models/cost.py at the build's own prompt length).

Exit codes: 0 evaluated; 2 bad input (arguments, build, model, plan, table, output path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.plan import PlanError
from runtime.fidelity import kl_divergence, model_and_tokenizer
from runtime.manifest import BuildError

MAX_NEW_TOKENS = 4  # every answer is one word: a token or two, then the stop token
KINDS = ("easy", "hard")
PROGRESS_EVERY_S = 30.0  # off a terminal: a progress line at least this often, besides every tenth


@dataclass
class Run:
    name: str
    answers: list[str]
    first_logits: np.ndarray  # (n, V)
    num_vision_tokens: int
    cost: dict | None = None  # decoder prefill FLOPs: dense / plan / text only (from models/cost.py)


def scores(run: Run, items, reference: Run | None) -> dict:
    """Accuracy per kind and question type, and agreement with the reference's first token."""
    hits = np.array([a.strip() == s.answer for a, s in zip(run.answers, items)])
    out = {"name": run.name, "n": len(items), "vision_tokens": run.num_vision_tokens,
           "accuracy": {"all": float(hits.mean())}}
    for key in sorted({s.kind for s in items}) + sorted({s.qtype for s in items}):
        sel = np.array([key in (s.kind, s.qtype) for s in items])
        out["accuracy"][key] = float(hits[sel].mean())
    if reference is not None:
        agree = run.first_logits.argmax(-1) == reference.first_logits.argmax(-1)
        out["top1_agreement"] = float(agree.mean())
        out["kl_mean"] = float(kl_divergence(reference.first_logits, run.first_logits).mean())
    if run.cost is not None:
        out["cost"] = run.cost
    return out


class Progress:
    """Items done, on a stream: one rewritten line on a terminal; elsewhere (a log) a line every tenth
    of the run or every PROGRESS_EVERY_S seconds, whichever comes first, and the last item."""

    def __init__(self, name: str, n: int, stream=None):
        self.name, self.n, self.stream = name, n, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = self.last = time.perf_counter()
        self.step = max(1, n // 10)

    def update(self, i: int) -> None:
        now = time.perf_counter()
        if not (self.tty or i == self.n or i % self.step == 0 or now - self.last >= PROGRESS_EVERY_S):
            return
        self.last, elapsed = now, now - self.start
        line = f"{self.name}: {i}/{self.n}, {elapsed:.1f} s, {i / max(elapsed, 1e-9):.2f} items/s"
        if self.tty:
            print(f"\r{line}\033[K", end="\n" if i == self.n else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)


def build_cost(build_dir) -> dict | None:
    """Decoder prefill FLOPs (dense, plan, text only) from a build's cost.json; None if it has none."""
    path = Path(build_dir) / "cost.json"
    if not path.is_file():
        return None
    try:
        c = json.loads(path.read_text())
        return {"dense": c["dense"]["prefill_flops"], "plan": c["plan"]["prefill_flops"],
                "text_only": c["text_only"]["prefill_flops"], "prompt_tokens": c["prompt_tokens"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BuildError(f"{path}: not a cost file ({type(e).__name__}: {e})") from None


def run_build(build_dir, items, backend=None) -> Run:
    """Answer every item through a build's runtime pipeline (any backend)."""
    from runtime.pipeline import Pipeline

    return run_pipeline(Pipeline(build_dir, backend=backend), items, build_cost(build_dir))


def run_pipeline(pipe, items, cost: dict | None = None) -> Run:
    """Answer every item through a loaded runtime Pipeline."""
    name = pipe.build_dir.name
    answers, logits, progress = [], [], Progress(name, len(items))
    for i, s in enumerate(items, 1):
        r = pipe.generate(s.image, s.question, MAX_NEW_TOKENS)
        answers.append(r.text)
        logits.append(r.first_logits)
        progress.update(i)
    return Run(name, answers, np.stack(logits), pipe.kv.vision_tokens, cost)


def run_model(model_dir, plan, items, name: str | None = None, tokenizer=None,
              image_size: int | None = None) -> Run:
    """Answer every item with the PyTorch model under `plan` (no export) at `image_size` (as export/build.py's
    --image-size); tokenizer: a tokenizer.json, default the checkpoint's own (converted if it has none)."""
    vlm, tok = model_and_tokenizer(model_dir, plan, tokenizer, image_size)
    return run_vlm(vlm, tok, items, name or f"{Path(model_dir).name} {vlm.plan.name}")


def run_vlm(vlm, tok, items, name: str) -> Run:
    """Answer every item with a loaded VLM (its plan) and tokenizer."""
    import torch

    from models.cost import estimate
    from runtime.image import preprocess

    spec = vlm.cfg.image_spec()
    answers, logits, prompt_lens, progress = [], [], [], Progress(name, len(items))
    for i, s in enumerate(items, 1):
        before, after = tok.encode_prompt(s.question)
        out = []
        ids = vlm.generate(torch.tensor([before]), torch.from_numpy(preprocess(s.image, spec)), torch.tensor([after]),
                           MAX_NEW_TOKENS, tok.stop_ids, logits_out=out)
        answers.append(tok.decode([t for t in ids if t not in tok.stop_ids]))
        logits.append(out[0].float().numpy())
        prompt_lens.append(len(after))
        progress.update(i)
    prompt = int(np.median(prompt_lens))
    cost = {label: estimate(vlm.cfg, plan_, len(before), prompt, image=image).prefill_flops
            for label, plan_, image in (("dense", "dense", True), ("plan", vlm.plan, True),
                                        ("text_only", "dense", False))}
    cost["prompt_tokens"] = prompt
    return Run(name, answers, np.stack(logits), vlm.cfg.num_vision_tokens, cost)


def load_items(data: str, split: str, n: int):
    from data.shapes import samples

    return samples(data, split, n)


def markdown(results: list[dict]) -> str:
    head = ("| run | vision tokens | decoder prefill MFLOPs | vs dense | vision FLOPs removed | easy | hard "
            "| top-1 agreement | KL (nats) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        acc = r["accuracy"]
        c = r.get("cost")
        flops = ratio = removed = "-"
        if c:
            flops, ratio = f"{c['plan'] / 1e6:,.1f}", f"{c['plan'] / c['dense']:.3f}"
            removed = f"{100 * (c['dense'] - c['plan']) / (c['dense'] - c['text_only']):.1f}%"
        cells = [r["name"], str(r["vision_tokens"]), flops, ratio, removed, _pct(acc.get("easy")), _pct(acc.get("hard")),
                 f"{r.get('top1_agreement', float('nan')):.3f}", f"{r.get('kl_mean', float('nan')):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _plan_shape(manifest: dict) -> dict:
    d = manifest["model"]["config"]["decoder"]
    return {"num_layers": d["num_layers"], "num_heads": d["num_heads"],
            "num_vision_tokens": manifest["kv"]["vision_tokens"]}


# ------------------------------------------------- checking every argument before any work, then the runs

def _checkpoint(model_dir: Path, tokenizer: Path | None = None, image_size: int | None = None):
    """A checkpoint's config at `image_size` (config.json and tensor names only), its tokenizer checked to load
    (the checkpoint's own, converted if need be, unless `tokenizer` names one)."""
    from runtime.fidelity import checkpoint_config, checkpoint_tokenizer, prompt_tokenizer

    cfg = checkpoint_config(model_dir, image_size)
    if tokenizer:
        prompt_tokenizer(cfg, tokenizer)
    else:
        checkpoint_tokenizer(cfg, model_dir)
    return cfg


def _prepare_model(model_dir: Path, specs: list[str], image_size: int | None):
    from models.vlm import resolve_plan

    cfg = _checkpoint(model_dir, image_size=image_size)
    plans = [resolve_plan(cfg, spec) for spec in specs]

    def evaluate(items):
        reference = run_model(model_dir, "dense", items, image_size=image_size)
        return [scores(reference if spec == "dense" else run_model(model_dir, plan, items, image_size=image_size),
                       items, reference) for spec, plan in zip(specs, plans)]
    return evaluate


def _prepare_build(build: Path, backend: str | None):
    from models.plan import load_plan
    from runtime.pipeline import Pipeline

    pipe = Pipeline(build, backend=backend)  # manifest, tokenizer and graphs loaded
    manifest, cost = pipe.manifest, build_cost(build)
    dense = load_plan(manifest["plan"], **_plan_shape(manifest)).is_dense
    weights, tokenizer = build / manifest.get("weights", "weights"), build / manifest["tokenizer"]
    if not dense:  # the dense reference: the build's own weights
        _checkpoint(weights, tokenizer)

    def evaluate(items):
        reference = None if dense else run_model(weights, "dense", items, "reference (dense)", tokenizer)
        run = run_pipeline(pipe, items, cost)
        return [scores(run, items, reference or run)]
    return evaluate


def _prepare_table(table_path: Path):
    from models.vlm import resolve_plan

    try:
        table = json.loads(table_path.read_text())
        ref_model = table_path.parent / table["reference"]["model"]
        rows = [(row["name"], table_path.parent / row["model"] if "model" in row else ref_model,
                 row.get("plan", "dense")) for row in table["rows"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BuildError(f"{table_path}: not a fidelity table ({type(e).__name__}: {e})") from None
    configs, runs = {ref_model: _checkpoint(ref_model)}, []
    for name, model, plan in rows:
        if isinstance(plan, str) and plan != "dense":
            plan = table_path.parent / plan
        if model not in configs:
            configs[model] = _checkpoint(model)
        try:
            runs.append((name, model, resolve_plan(configs[model], plan)))
        except PlanError as e:
            raise PlanError(f"{table_path}, row {name!r}: {e}") from None

    def evaluate(items):
        reference = run_model(ref_model, "dense", items, name="reference (dense)")
        return [scores(run_model(model, plan, items, name), items, reference) for name, model, plan in runs]
    return evaluate


def _unwritable(path: Path) -> str | None:
    """Why an output file cannot be written, or None."""
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if not path.parent.is_dir():
        return f"{path}: the directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} is not writable"
    return None


def _argument_problem(args) -> str | None:
    if args.n < 1:
        return "--n must be at least 1"
    if args.plan and not args.model:
        return "--plan goes with --model (a build carries its plan, a table names its own)"
    if args.backend and not args.build:
        return "--backend goes with --build"
    if args.image_size is not None and not args.model:
        return "--image-size goes with --model (a build carries its size, a table's models their own)"
    if args.image_size is not None and args.image_size <= 0:
        return "--image-size must be a positive number of pixels"
    unwritable = [_unwritable(Path(out)) for out in (args.json, args.markdown) if out]
    return next((u for u in unwritable if u), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--build", help="build directory (holds manifest.json)")
    what.add_argument("--model", help="checkpoint directory, evaluated in PyTorch under each --plan")
    what.add_argument("--table", help="JSON file listing (model, plan) runs")
    ap.add_argument("--plan", action="append", help="with --model: dense or a plan file (repeatable)")
    ap.add_argument("--backend", default=None, help="with --build: torch, executorch, onnxruntime or coreml")
    ap.add_argument("--image-size", type=int, default=None, help="input image side in pixels")
    ap.add_argument("--split", default="all", choices=("easy", "hard", "all"))
    ap.add_argument("--data", default="test", choices=("train", "val", "test"))
    ap.add_argument("--n", type=int, default=200, help="samples (default: %(default)s)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    problem = _argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from models.checkpoint import CheckpointError
    from runtime.tokenizer import TokenizerError

    try:
        if args.table:
            evaluate = _prepare_table(Path(args.table))
        elif args.build:
            evaluate = _prepare_build(Path(args.build), args.backend)
        else:
            evaluate = _prepare_model(Path(args.model), args.plan or ["dense"], args.image_size)
        results = evaluate(load_items(args.data, args.split, args.n))
    except (BuildError, CheckpointError, PlanError, TokenizerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = markdown(results)
    print(f"{args.data} split, {args.split} questions, n={args.n}\n{table}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "n": args.n,
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
