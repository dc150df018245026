"""Choose a model's vision plan from measurements on calibration data (docs/design.md §11).

    python export/calibrate.py --model checkpoints/foveate-tiny --split val --out plan.json
    python export/calibrate.py --model DIR --out plan.json --max-accuracy-drop 1 --max-hard-drop 3 \
        --min-top1-agreement 0.9 --report reports/calibration

Calibration questions come from the generated shapes task (data/shapes.py), half easy and half hard,
from the validation split by default (the test split is refused: it is for reporting only). Steps:
1. measure, on the dense model: attention allocation (λ, ε), VisiPruner influence with its filtering
   and exit layers, and CKA between the vision states of every pair of layers (models/analysis.py);
2. knock vision out of each layer alone (mode `text`) and exit vision from each layer on;
3. search: greedy, from the dense plan. Each round scores every one-step move (a `full` layer to
   `cross` or `text`, a `cross` layer to `text`, vision exit from a later layer; under `--objective
   ideal` also a smaller window and top-k from the filtering layer) and takes, among the moves that
   stay within the budget, the one that saves the most FLOPs per unit of added KL (dense || plan);
   it stops when no move fits. The plan written is the cheapest within budget of every plan scored
   on the way. Greedy because every score is a pass over the calibration set: a round costs about
   3 x layers passes, exhaustive search 3^layers;
4. score the dense model and the chosen plan on the test split (after the choice), write the plan
   JSON and a report (Markdown, PNG figures, JSON).

Plans are scored teacher-forced: exact match is every answer token and the stop as the argmax, which
is what greedy decoding answers. FLOPs are decoder prefill FLOPs from models/cost.py: "graph" (what
the exported static graphs execute; windows and top-k are masks there and save nothing) or "ideal".
Exit codes: 0 written; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root, not export/, goes first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # (export/onnx.py must not shadow onnx)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from models.analysis import summarise, trace  # noqa: E402
from models.cost import estimate  # noqa: E402
from models.plan import Plan, PlanError, TopK  # noqa: E402
from models.vlm import VLM, Cursor, resolve_plan  # noqa: E402
from runtime.fidelity import kl_divergence  # noqa: E402

KINDS = ("easy", "hard")
WINDOWS = (2, 1)
TAU = 0.01  # nats: a move's KL cost is (added KL + TAU), so free moves are ranked by their saving


@dataclass(frozen=True)
class Budget:
    max_easy_drop: float = 1.0  # accuracy points vs dense on the calibration set
    max_hard_drop: float = 3.0
    min_top1: float | None = None  # first answer token: agreement with dense
    max_kl: float | None = None  # first answer token: mean KL(dense || plan), nats

    def allows(self, s: dict, dense: dict) -> bool:
        ok = (100 * (dense["easy"] - s["easy"]) <= self.max_easy_drop + 1e-9
              and 100 * (dense["hard"] - s["hard"]) <= self.max_hard_drop + 1e-9)
        ok = ok and (self.min_top1 is None or s["top1"] >= self.min_top1)
        return ok and (self.max_kl is None or s["kl"] <= self.max_kl)


@dataclass
class Item:
    """One calibration question, tokenised, with its image already encoded by the dense model."""

    prefix: torch.Tensor  # (P,) ids before the image
    vision: torch.Tensor  # (1, N_v, hidden)
    after: torch.Tensor  # (T,) ids after the image: the question in its template
    answer: torch.Tensor  # (A,) the answer, without the stop token
    kind: str


def prepare(vlm: VLM, tokenizer, samples, progress: bool = True) -> list[Item]:
    from runtime.image import preprocess

    spec = vlm.cfg.image_spec()
    items = []
    with torch.no_grad():
        for s in tqdm(samples, desc="encode images", disable=not progress, file=sys.stderr):
            before, after = tokenizer.encode_prompt(s.question)
            pixels = torch.from_numpy(preprocess(s.image, spec))
            items.append(Item(torch.tensor(before), vlm.encode_image(pixels), torch.tensor(after),
                              torch.tensor(tokenizer.encode(s.answer)), s.kind))
    return items


@torch.no_grad()
def answer_logits(vlm: VLM, item: Item) -> torch.Tensor:
    """(A + 1, V): the logits that choose each answer token and then the stop, teacher-forced."""
    vlm.decoder.reset()
    cur = Cursor()
    if len(item.prefix):
        vlm.prefill_text(cur, item.prefix[None])
    vlm.prefill_image(cur, item.vision)
    if vlm.plan.keep_topk is None:  # one chunk: the prompt's end only matters to a top-k choice
        ids = torch.cat([item.after, item.answer])[None]
        return vlm.prefill_text(cur, ids, all_logits=True)[0, len(item.after) - 1:]
    first = vlm.prefill_text(cur, item.after[None], select_topk=True)[0]  # (1, V)
    if not len(item.answer):
        return first
    return torch.cat([first, vlm.prefill_text(cur, item.answer[None], all_logits=True)[0]])


class Scorer:
    """Scores plans of one model on fixed items; remembers every plan it scored."""

    def __init__(self, vlm: VLM, items: list[Item], stop_ids, objective: str = "graph"):
        self.vlm, self.items, self.stop_ids, self.objective = vlm, items, tuple(stop_ids), objective
        self.prefix_tokens = int(np.median([len(i.prefix) for i in items]))
        self.prompt_tokens = int(np.median([len(i.after) for i in items]))
        self.scored: dict[str, dict] = {}
        self.reference = None
        self.dense = self.score(resolve_plan(vlm.cfg, "dense"))

    def score(self, plan: Plan) -> dict:
        key = plan_key(plan)
        if key not in self.scored:
            self.scored[key] = self._score(plan)
        return self.scored[key]

    def flops(self, plan: Plan, image: bool = True) -> int:
        c = estimate(self.vlm.cfg, plan, self.prefix_tokens, self.prompt_tokens, image=image)
        return c.prefill_flops if self.objective == "graph" else c.prefill_flops_ideal

    def _score(self, plan: Plan) -> dict:
        planned = VLM(self.vlm.cfg, plan).eval()
        planned.load_state_dict(self.vlm.state_dict())
        hits, first = [], []
        for item in self.items:
            logits = answer_logits(planned, item)
            best = logits.argmax(-1)
            hits.append(bool((best[:-1] == item.answer).all()) and int(best[-1]) in self.stop_ids)
            first.append(logits[0].numpy())
        first = np.stack(first)
        if self.reference is None:
            self.reference = first
        hits = np.array(hits)
        kinds = np.array([i.kind for i in self.items])
        out = {"plan": plan.to_dict(), "flops": self.flops(plan), "easy": float(hits[kinds == "easy"].mean()),
               "hard": float(hits[kinds == "hard"].mean()),
               "top1": float((first.argmax(-1) == self.reference.argmax(-1)).mean()),
               "kl": float(kl_divergence(self.reference, first).mean())}
        dense, text = self.flops(resolve_plan(self.vlm.cfg, "dense")), self.flops(plan, image=False)
        out["vision_removed"] = (dense - out["flops"]) / (dense - text) if dense > text else 0.0
        return out


def plan_key(plan: Plan) -> str:
    d = plan.to_dict()
    d.pop("name")
    return json.dumps(d, sort_keys=True)


def with_modes(plan: Plan, modes, name: str = "candidate") -> Plan:
    """The plan with new modes; trailing text layers become exit (the same graph, said plainly)."""
    modes = list(modes)
    while modes and modes[-1] == "text":
        modes[-1] = "exit"
    for i in range(len(modes)):
        if modes[i] == "exit":
            modes[i:] = ["exit"] * (len(modes) - i)
            break
    return replace(plan, name=name, modes=tuple(modes))


def moves(plan: Plan, num_vision: int, objective: str, filtering_layer: int | None, kept: int) -> list[Plan]:
    """Every one-step reduction of `plan` (see the module docstring)."""
    modes, out = list(plan.modes), []
    for i, m in enumerate(modes):
        for new in {"full": ("cross", "text"), "cross": ("text",)}.get(m, ()):
            out.append(with_modes(plan, modes[:i] + [new] + modes[i + 1:]))
    for i in range(1, len(modes)):
        if modes[i] != "exit":
            out.append(with_modes(plan, modes[:i] + ["exit"] * (len(modes) - i)))
    if objective == "ideal":
        if "full" in modes:
            out += [replace(plan, window=w) for w in WINDOWS if plan.window is None or w < plan.window]
        if plan.keep_topk is None and filtering_layer is not None:
            for k in sorted({num_vision // 2, num_vision // 4, max(1, kept)}):
                out.append(replace(plan, keep_topk=TopK(filtering_layer, k)))
    return out


def valid(cfg, plan: Plan) -> Plan | None:
    try:
        return resolve_plan(cfg, plan)
    except PlanError:  # e.g. a top-k layer that a move made text-only
        return None


def search(scorer: Scorer, budget: Budget, filtering_layer: int | None, kept: int, progress: bool = True) -> dict:
    """Greedy descent from the dense plan; returns the chosen plan's score and the path taken."""
    cfg = scorer.vlm.cfg
    state, path = resolve_plan(cfg, "dense"), []
    for step in range(1, 4 * cfg.decoder.num_layers + 8):
        here = scorer.score(state)
        cands = [p for p in (valid(cfg, m) for m in moves(state, cfg.num_vision_tokens, scorer.objective,
                                                          filtering_layer, kept)) if p is not None]
        cands = [p for p in cands if scorer.flops(p) < here["flops"]]
        scored = [(p, scorer.score(p)) for p in tqdm(cands, desc=f"search round {step}", disable=not progress,
                                                     file=sys.stderr)]
        fits = [(p, s) for p, s in scored if budget.allows(s, scorer.dense)]
        if not fits:
            break
        state, s = max(fits, key=lambda ps: (here["flops"] - ps[1]["flops"]) / (max(0.0, ps[1]["kl"] - here["kl"]) + TAU))
        path.append(s)
    fits = [s for s in scorer.scored.values() if budget.allows(s, scorer.dense)]
    return {"chosen": min(fits, key=lambda s: (s["flops"], s["kl"])), "path": path}


@dataclass
class Options:
    split: str = "val"
    n: int = 400  # calibration questions, half easy, half hard
    test_n: int = 400  # test questions scored after the choice (0: none)
    objective: str = "graph"
    budget: Budget = field(default_factory=Budget)
    name: str = "auto"
    progress: bool = True
    threads: int = 1  # torch threads while calibrating: its ops are tiny, and a second thread only adds overhead


def questions(split: str, n: int):
    from data.shapes import samples

    return [s for kind in KINDS for s in samples(split, kind, n // 2 + (n % 2 if kind == "easy" else 0))]


def calibrate(vlm: VLM, tokenizer, opts: Options) -> dict:
    """Everything calibration measures and chooses, JSON-ready; result["plan"] is the plan dict."""
    if opts.split == "test":
        raise ValueError("calibration never uses the test split (it is held out for reporting)")
    if not vlm.plan.is_dense:
        raise ValueError(f"calibrate the dense model, not plan {vlm.plan.name!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        return _calibrate(vlm, tokenizer, opts)
    finally:
        torch.set_num_threads(threads)


def _calibrate(vlm: VLM, tokenizer, opts: Options) -> dict:
    t0 = time.perf_counter()
    items = prepare(vlm, tokenizer, questions(opts.split, opts.n), opts.progress)
    traces = [trace(vlm, i.prefix, i.vision, i.after, i.answer)
              for i in tqdm(items, desc="layer analyses", disable=not opts.progress, file=sys.stderr)]
    measured = summarise(traces)
    scorer = Scorer(vlm, items, tokenizer.stop_ids, opts.objective)
    dense, layers = resolve_plan(vlm.cfg, "dense"), vlm.cfg.decoder.num_layers
    knock = [with_modes(dense, ["full"] * i + ["text"] + ["full"] * (layers - i - 1)) for i in range(layers)]
    exits = [with_modes(dense, ["full"] * i + ["exit"] * (layers - i)) for i in range(layers)]
    ko = [scorer.score(p) for p in tqdm(knock + exits, desc="knock-out", disable=not opts.progress, file=sys.stderr)]
    measured["knockout"] = {"layer_text": ko[:layers], "exit_from": ko[layers:]}
    filtering = _mode_layer(measured["filtering_layer"])
    found = search(scorer, opts.budget, filtering, int(measured["kept_tokens_median"]), opts.progress)
    chosen = resolve_plan(vlm.cfg, replace(resolve_plan(vlm.cfg, found["chosen"]["plan"]), name=opts.name))
    seconds = time.perf_counter() - t0
    result = {
        "plan": {**chosen.to_dict(), "description": _describe(opts, len(items))},
        "options": {"split": opts.split, "n": len(items), "objective": opts.objective, "budget": asdict(opts.budget)},
        "dense": scorer.dense, "chosen": found["chosen"], "path": found["path"],
        "scored": list(scorer.scored.values()), "measurements": measured,
        "flops_text_only": scorer.flops(dense, image=False), "calibration_seconds": round(seconds, 1),
    }
    if opts.test_n:
        result["test"] = held_out(vlm, tokenizer, chosen, opts)
    return result


def held_out(vlm: VLM, tokenizer, chosen: Plan, opts: Options) -> dict:
    """Dense and chosen plan on the test split, scored after the choice."""
    items = prepare(vlm, tokenizer, questions("test", opts.test_n), opts.progress)
    scorer = Scorer(vlm, items, tokenizer.stop_ids, opts.objective)
    return {"n": len(items), "dense": scorer.dense, "chosen": scorer.score(chosen)}


def _mode_layer(hist: dict) -> int | None:
    counts = {int(k): v for k, v in hist["counts"].items() if v}
    return max(counts, key=counts.get) if counts else None


def _describe(opts: Options, n: int) -> str:
    b = opts.budget
    limits = [f"easy drop <= {b.max_easy_drop} pt", f"hard drop <= {b.max_hard_drop} pt"]
    limits += [f"top-1 >= {b.min_top1}"] * (b.min_top1 is not None) + [f"KL <= {b.max_kl}"] * (b.max_kl is not None)
    return (f"chosen by export/calibrate.py on the {opts.split} split (n={n}), fewest {opts.objective} prefill "
            f"FLOPs with {', '.join(limits)}")


def write(result: dict, plan_path: Path, report_dir: Path | None) -> None:
    """The plan JSON, and the report (Markdown + figures + JSON) when report_dir is given."""
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(f".{plan_path.name}.partial")
    tmp.write_text(json.dumps(result["plan"], indent=2) + "\n")
    tmp.replace(plan_path)
    if report_dir is not None:
        from export.calibration_report import write_report

        write_report(result, report_dir)


def load_for_calibration(model_dir: Path, image_size: int | None = None):
    """The dense model (at `image_size`, as export/build.py's --image-size) and its prompt tokenizer (converted
    when the checkpoint has no tokenizer.json) from a checkpoint directory."""
    from runtime.fidelity import model_and_tokenizer

    return model_and_tokenizer(model_dir, "dense", image_size=image_size)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python export/calibrate.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json, weights, a tokenizer)")
    ap.add_argument("--image-size", type=int, default=None, help="input image side in pixels")
    ap.add_argument("--out", required=True, help="plan JSON to write")
    ap.add_argument("--report", default=None, help="report directory (default: <out without .json>-report)")
    ap.add_argument("--split", default="val", choices=("train", "val"), help="calibration split (default: val)")
    ap.add_argument("--n", type=int, default=400, help="calibration questions, half easy, half hard (default: 400)")
    ap.add_argument("--test-n", type=int, default=400, help="test questions scored after the choice; 0: none")
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0,
                    help="accuracy points the plan may lose vs dense (easy; hard too unless --max-hard-drop)")
    ap.add_argument("--max-hard-drop", type=float, default=3.0, help="accuracy points it may lose on hard questions")
    ap.add_argument("--min-top1-agreement", type=float, default=None, help="first answer token vs dense, 0-1")
    ap.add_argument("--max-kl", type=float, default=None, help="mean KL(dense || plan) of the first answer token")
    ap.add_argument("--objective", default="graph", choices=("graph", "ideal"),
                    help="FLOPs to minimise: what the static graphs run (default) or the seeds' ideal count")
    ap.add_argument("--name", default="auto", help="the plan's name (default: auto)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; the ops are tiny)")
    return ap.parse_args(argv)


def options_from(args) -> Options:
    return Options(split=args.split, n=args.n, test_n=args.test_n, objective=args.objective, name=args.name,
                   threads=args.threads,
                   budget=Budget(args.max_accuracy_drop, args.max_hard_drop, args.min_top1_agreement, args.max_kl))


def check_args(args) -> str | None:
    if args.n < 2:
        return "--n must be at least 2 (one easy and one hard question)"
    if args.test_n < 0:
        return "--test-n must be 0 or more"
    if args.threads < 1:
        return "--threads must be at least 1"
    if args.image_size is not None and args.image_size <= 0:
        return "--image-size must be a positive number of pixels"
    if args.max_accuracy_drop < 0 or args.max_hard_drop < 0:
        return "accuracy drops are points >= 0"
    if args.min_top1_agreement is not None and not 0 <= args.min_top1_agreement <= 1:
        return "--min-top1-agreement is a fraction between 0 and 1"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    report = Path(args.report) if args.report else out.with_name(out.stem + "-report")
    try:
        vlm, tok = load_for_calibration(Path(args.model), args.image_size)
        result = calibrate(vlm, tok, options_from(args))
        write(result, out, report)
    except (ValueError, OSError) as e:  # CheckpointError, TokenizerError and PlanError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(result))
    print(f"wrote {out} and {report}/")
    return 0


def summary(result: dict) -> str:
    d, c = result["dense"], result["chosen"]
    lines = [f"plan {result['plan']['name']!r}: {' '.join(result['plan']['modes'])}",
             f"calibration ({result['options']['split']}, n={result['options']['n']}): prefill "
             f"{c['flops'] / 1e6:.1f} vs dense {d['flops'] / 1e6:.1f} MFLOPs, {100 * c['vision_removed']:.1f}% of "
             f"vision FLOPs removed; easy {100 * c['easy']:.1f} (dense {100 * d['easy']:.1f}), hard "
             f"{100 * c['hard']:.1f} (dense {100 * d['hard']:.1f}), top-1 {c['top1']:.3f}, KL {c['kl']:.4f}"]
    if "test" in result:
        t = result["test"]
        lines.append(f"test (n={t['n']}): easy {100 * t['chosen']['easy']:.1f} (dense {100 * t['dense']['easy']:.1f}), "
                     f"hard {100 * t['chosen']['hard']:.1f} (dense {100 * t['dense']['hard']:.1f}), "
                     f"top-1 {t['chosen']['top1']:.3f}, KL {t['chosen']['kl']:.4f}")
    lines.append(f"calibration took {result['calibration_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
