"""Fidelity on the generated shapes task (data/shapes.py): of a build, or of a model under vision plans.

    python -m tools.evaluate --build build/foveate-tiny-default-onnx --split hard --n 200
    python -m tools.evaluate --model checkpoints/foveate-tiny --plan dense --plan my-plan.json --split all
    python -m tools.evaluate --table plans/fidelity.json --n 500 --markdown fidelity.md --json fidelity.json

Per run: exact-match accuracy of the greedy answer (easy, hard, and per question type) and, against
the dense model, the top-1 agreement and mean KL(dense || run) of the first answer token's
distribution. The dense reference of a build is its own weights under the dense plan; of a model,
the model itself; of a table, its "reference" entry. `--data` picks the task split (default "test",
which is for reporting only: calibration uses "val").

A table file lists runs: {"reference": {"model": DIR}, "rows": [{"name": ..., "model": DIR (default:
the reference), "plan": "dense" | FILE | {plan JSON}}, ...]}, paths relative to the table file. It
prints one Markdown table with each run's decoder prefill FLOPs from the cost model and the share of
the vision-attributable prefill FLOPs it removes, (dense - plan) / (dense - text only).

Exit codes: 0 evaluated; 2 bad input (build, model, plan, table).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.fidelity import kl_divergence, model_and_tokenizer
from runtime.manifest import BuildError

MAX_NEW_TOKENS = 4  # every answer is one word: a token or two, then the stop token
KINDS = ("easy", "hard")


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


def _progress(name: str, i: int, n: int):
    if sys.stderr.isatty() or i == n:
        print(f"\r{name}: {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)


def run_build(build_dir, items, backend=None) -> Run:
    """Answer every item through a build's runtime pipeline (any backend)."""
    from runtime.pipeline import Pipeline

    pipe = Pipeline(build_dir, backend=backend)
    answers, logits = [], []
    for i, s in enumerate(items, 1):
        r = pipe.generate(s.image, s.question, MAX_NEW_TOKENS)
        answers.append(r.text)
        logits.append(r.first_logits)
        _progress(Path(build_dir).name, i, len(items))
    return Run(Path(build_dir).name, answers, np.stack(logits), pipe.kv.vision_tokens)


def run_model(model_dir, plan, items, name: str | None = None, tokenizer=None) -> Run:
    """Answer every item with the PyTorch model under `plan` (no export); tokenizer: default the model's."""
    vlm, tok = model_and_tokenizer(model_dir, plan, tokenizer)
    return run_vlm(vlm, tok, items, name or f"{Path(model_dir).name} {vlm.plan.name}")


def run_vlm(vlm, tok, items, name: str) -> Run:
    """Answer every item with a loaded VLM (its plan) and tokenizer."""
    import torch

    from models.cost import estimate
    from runtime.image import preprocess

    spec = vlm.cfg.image_spec()
    answers, logits, prompt_lens = [], [], []
    for i, s in enumerate(items, 1):
        before, after = tok.encode_prompt(s.question)
        out = []
        ids = vlm.generate(torch.tensor([before]), torch.from_numpy(preprocess(s.image, spec)), torch.tensor([after]),
                           MAX_NEW_TOKENS, tok.stop_ids, logits_out=out)
        answers.append(tok.decode([t for t in ids if t not in tok.stop_ids]))
        logits.append(out[0].float().numpy())
        prompt_lens.append(len(after))
        _progress(name, i, len(items))
    prompt = int(np.median(prompt_lens))
    cost = {label: estimate(vlm.cfg, plan_, len(before), prompt, image=image).prefill_flops
            for label, plan_, image in (("dense", "dense", True), ("plan", vlm.plan, True),
                                        ("text_only", "dense", False))}
    return Run(name, answers, np.stack(logits), vlm.cfg.num_vision_tokens, cost)


def load_items(data: str, split: str, n: int):
    from data.shapes import samples

    return samples(data, split, n)


def run_table(table_path: Path, items) -> list[dict]:
    try:
        table = json.loads(table_path.read_text())
        ref_model = table_path.parent / table["reference"]["model"]
        rows = table["rows"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BuildError(f"{table_path}: not a fidelity table ({type(e).__name__}: {e})") from None
    reference = run_model(ref_model, "dense", items, name="reference (dense)")
    results = []
    for row in rows:
        plan = row.get("plan", "dense")
        if isinstance(plan, str) and plan != "dense":
            plan = str(table_path.parent / plan)
        model = table_path.parent / row["model"] if "model" in row else ref_model
        results.append(scores(run_model(model, plan, items, row["name"]), items, reference))
    return results


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--build", help="build directory (holds manifest.json)")
    what.add_argument("--model", help="checkpoint directory, evaluated in PyTorch under each --plan")
    what.add_argument("--table", help="JSON file listing (model, plan) runs")
    ap.add_argument("--plan", action="append", help="with --model: dense or a plan file (repeatable)")
    ap.add_argument("--backend", default=None, help="with --build: torch, executorch, onnxruntime or coreml")
    ap.add_argument("--split", default="all", choices=("easy", "hard", "all"))
    ap.add_argument("--data", default="test", choices=("train", "val", "test"))
    ap.add_argument("--n", type=int, default=200, help="samples (default: %(default)s)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    from models.checkpoint import CheckpointError
    from models.plan import PlanError, load_plan

    try:
        items = load_items(args.data, args.split, args.n)
        if args.table:
            results = run_table(Path(args.table), items)
        elif args.build:
            from runtime.manifest import load_manifest

            build = Path(args.build)
            manifest = load_manifest(build)
            dense = load_plan(manifest["plan"], **_plan_shape(manifest)).is_dense
            reference = None if dense else run_model(build / manifest["weights"], "dense", items, "reference (dense)",
                                                     build / manifest["tokenizer"])
            run = run_build(build, items, args.backend)
            results = [scores(run, items, reference or run)]
        else:
            reference = run_model(args.model, "dense", items)
            plans = args.plan or ["dense"]
            results = [scores(reference if p == "dense" else run_model(args.model, p, items), items, reference)
                       for p in plans]
    except (BuildError, CheckpointError, PlanError, OSError) as e:
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
