"""Parity: does an exported graph compute what the PyTorch model computes? (export error, docs/design.md §7)

One table of floors, used by the build, the tests and `python -m runtime.parity --build DIR`:
per stage (vision embeddings, prefill logits, decode logits) max-abs, cosine and
PSNR = 20 log10(max|ref| / RMSE), plus exact greedy-token match on the golden prompts.
Parity is never fidelity: the reference is the PyTorch model with the *same* plan.

    python -m runtime.parity --build build/foveate-tiny-random-mixed-onnx

A Core ML build predicts on macOS 15 or later only. Elsewhere its parity is pending, which is not a pass:
the command prints what its parity.json records as checked on the build machine (the program handed to
coremltools against PyTorch eager, the saved specs, with their figures) and the command that runs the
prediction check on a Mac.
Exit codes: 0 passed; 1 failed; 2 bad input; 3 pending (a Core ML build off macOS; nothing failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FLOORS_DB = {"fp32": 60.0, "fp16": 35.0}  # PSNR floor per stage, by compute dtype
TOKEN_EXACT = {"fp32": True, "fp16": False}
# Quantized graphs are judged by fidelity, not by the export-error floors: every stage's cosine to the
# fp32 PyTorch model. Weight-only or dynamic int8 noise leaves cosines above 0.999 on the models
# measured; a broken graph (wrong scale, swapped or zeroed weights) falls far below 0.99.
QUANT_COSINE_FLOOR = 0.99
PSNR_IDENTICAL_DB = 200.0
EXIT_PENDING = 3


def compare(ref, out) -> dict:
    """max-abs, cosine and PSNR of `out` against `ref` (any shapes that broadcast equal)."""
    ref = np.asarray(ref, dtype=np.float64).ravel()
    out = np.asarray(out, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs output {out.shape}")
    err = out - ref
    rmse = float(np.sqrt(np.mean(err ** 2)))
    peak = float(np.max(np.abs(ref)))
    # identical outputs get PSNR_IDENTICAL_DB, not inf: JSON (and the apps' parsers) have no Infinity
    psnr = PSNR_IDENTICAL_DB if rmse == 0 else min(float(20 * np.log10(peak / rmse)), PSNR_IDENTICAL_DB) if peak > 0 else -999.0
    denom = np.linalg.norm(ref) * np.linalg.norm(out)
    cosine = float(ref @ out / denom) if denom > 0 else float(np.array_equal(ref, out))
    return {"max_abs": float(np.max(np.abs(err))), "cosine": cosine, "psnr_db": psnr}


def judge(stages: dict[str, dict], tokens_match: bool | None, dtype: str, quant: str = "none") -> dict:
    """Apply the floors: {"passed": bool, "failures": [...], "floor_db": ..., "stages": ...}."""
    if quant != "none":
        failures = [f"{name}: cosine {m['cosine']:.4f} < {QUANT_COSINE_FLOOR} fidelity floor ({quant})"
                    for name, m in stages.items() if not m["cosine"] >= QUANT_COSINE_FLOOR]
        return {"passed": not failures, "failures": failures, "floor_db": None, "cosine_floor": QUANT_COSINE_FLOOR,
                "dtype": dtype, "quant": quant, "tokens_match": tokens_match, "stages": stages}
    floor = FLOORS_DB[dtype]
    failures = [f"{name}: PSNR {m['psnr_db']:.1f} dB < {floor:.0f} dB floor"
                for name, m in stages.items() if not m["psnr_db"] >= floor]
    if TOKEN_EXACT[dtype] and tokens_match is False:
        failures.append("greedy tokens differ from the PyTorch model on the golden prompts")
    return {"passed": not failures, "failures": failures, "floor_db": floor, "dtype": dtype,
            "tokens_match": tokens_match, "stages": stages}


def verdict(report: dict) -> str:
    """One word or two for a parity report: passed, failed, pending on macOS, or skipped."""
    if report.get("skipped"):
        return "skipped"
    if report.get("status") == "pending":
        return "pending on macOS"
    return "passed" if report["passed"] else "failed"


def format_checked_here(report: dict, build_dir=None) -> str:
    """A Core ML parity report made where Core ML cannot predict: each check made there, with its figures,
    then the pending prediction check and the command that runs it (for `build_dir` when given)."""
    lines = []
    for name, c in report["checked_here"].items():
        if "stages" in c:
            figures = (f"min PSNR {c['min_psnr_db']:.1f} dB (floor {c['floor_db']:.0f}), "
                       f"greedy tokens {'match' if c['tokens_match'] else 'differ'}")
        else:
            figures = ", ".join(f"{m} {s['ops']} ops" for m, s in c["methods"].items())
        lines.append(f"  {name:<25}{'ok' if c['ok'] else 'FAILED':<8}{figures}")
        lines.append(f"  {'':<33}{c['what']}")
    if report["status"] != "pending":
        return "\n".join(["checked on the build machine:", *lines, "FAIL: " + "; ".join(report["failures"])])
    p = report["pending"]
    command = f"python -m runtime.parity --build {build_dir}" if build_dir else p["command"]
    return "\n".join([f"checked on the build machine ({report['dtype']} build):", *lines,
                      f"PENDING: {p['check']} needs {p['needs']}: run `{command}` there"])


def format_table(report: dict, build_dir=None) -> str:
    if "checked_here" in report:
        return format_checked_here(report, build_dir)
    lines = [f"{'stage':<22}{'max-abs':>12}{'cosine':>12}{'PSNR dB':>10}"]
    for name, m in report["stages"].items():
        lines.append(f"{name:<22}{m['max_abs']:>12.3g}{m['cosine']:>12.8f}{m['psnr_db']:>10.1f}")
    verdict = "PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"])
    floor = (f"floor {report['floor_db']:.0f} dB" if report.get("floor_db") is not None
             else f"{report['quant']}: cosine floor {report['cosine_floor']}")
    lines.append(f"greedy tokens match: {report['tokens_match']}   {floor} -> {verdict}")
    return "\n".join(lines)


def recorded_off_macos(build_dir: Path, manifest: dict) -> str:
    """What a Core ML build's parity.json says off macOS, where its prediction check cannot run."""
    from .manifest import BuildError

    path = build_dir / manifest["parity"]["file"]
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"{path}: cannot read this build's parity report: {e}") from None
    mac = f"run `python -m runtime.parity --build {build_dir}` on macOS 15 or later"
    if report.get("skipped"):
        return (f"parity was skipped at export (--skip-parity): nothing was checked on the build machine\n"
                f"PENDING: Core ML prediction against PyTorch eager: {mac}")
    if "checked_here" not in report:  # built on a Mac: its prediction check, as recorded there
        return f"recorded at export on macOS:\n{format_table(report)}\nto check again: {mac}"
    if not isinstance(report.get("pending", {}), dict):
        raise BuildError(f"{path} is in an earlier form: rebuild, or {mac}")
    return format_checked_here(report, build_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.parity", description="Re-check a build's parity.",
                                 epilog="exit codes: 0 passed, 1 failed, 2 bad input, 3 pending (a Core ML "
                                        "build off macOS: the checks made at export are printed)")
    ap.add_argument("--build", required=True, help="build directory (holds manifest.json)")
    ap.add_argument("--backend", default=None, help="backend to check (default: the build's own)")
    args = ap.parse_args(argv)
    from .manifest import BuildError, load_manifest

    build_dir = Path(args.build)
    try:
        manifest = load_manifest(build_dir)
        if manifest["target"] == "coreml" and sys.platform != "darwin" and args.backend in (None, "coreml"):
            print(recorded_off_macos(build_dir, manifest))
            print(json.dumps({"passed": None, "status": "pending"}))
            return EXIT_PENDING
        from .check import check_build  # needs torch: imported only for this command

        report = check_build(build_dir, backend=args.backend, manifest=manifest)
    except (BuildError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(json.dumps({"passed": report["passed"]}))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
