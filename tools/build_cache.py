"""The bench tools' build cache: builds from export/build.py, one directory per key, where the key hashes
what defines a build (model, plan, sizes, target, quantization) and the source of every repository module the
build imports, so an edit to the exporter rebuilds and an edit elsewhere does not."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_MAX_GB = 20.0  # a full-size fp32 FastVLM-0.5B build holds 5.2 GB: its .pte and the weights it was checked against
PACKAGES = ("models", "export", "runtime", "data", "tools")  # the repository's own top-level packages


def add_cache_args(ap) -> None:
    """--cache and --cache-max-gb, as every bench tool takes them."""
    ap.add_argument("--cache", default=str(REPO / "build" / "bench"), help="build cache directory")
    ap.add_argument("--cache-max-gb", type=float, default=CACHE_MAX_GB,
                    help=f"before building, remove the least recently used cached builds this run does not use "
                         f"until the cache holds at most this much (default: {CACHE_MAX_GB:g})")


def imported_sources(*roots: Path) -> list[Path]:
    """The repository's Python files that `roots` import, directly or through each other, read from their
    source: every import statement counts, those inside functions too."""
    seen, todo = set(), [r.resolve() for r in roots]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        package = path.parent.relative_to(REPO).parts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = list(package[:len(package) - node.level + 1]) if node.level else []
                base += node.module.split(".") if node.module else []
                names = [base] + [base + [a.name] for a in node.names]
            else:
                continue
            for parts in (p for p in names if p and p[0] in PACKAGES):  # a module runs its packages' __init__ first
                todo += [REPO.joinpath(*parts).with_suffix(".py")]
                todo += [REPO.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    return sorted(seen)


def build_key(model: str, plan: dict, image_size: int, max_seq_len: int, target: str) -> str:
    """Content hash of everything a build depends on: its settings and the source of every module that
    export/build.py and the target's exporter import (`target` may carry quantization suffixes, e.g.
    "executorch-8da4w-visionint8"). Editing a module no build imports (models/train.py) keeps the cache."""
    h = hashlib.sha256(json.dumps([model, plan, image_size, max_seq_len, target], sort_keys=True).encode())
    for path in imported_sources(REPO / "export" / "build.py", REPO / "export" / f"{target.split('-')[0]}.py"):
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    if Path(model, "model.safetensors").is_file():
        h.update(str(Path(model, "model.safetensors").stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def entry_key(model: str, plan: dict, image_size: int, max_seq_len: int, target: str, quant: str = "none",
              quant_vision: str = "none", vision_kv: str = "io") -> str:
    """The cache entry's name of a build: its key, the quantization part of its target."""
    suffix = ("" if quant == "none" else f"-{quant}") + ("" if quant_vision == "none" else f"-vision{quant_vision}")
    suffix += "" if vision_kv == "io" else f"-kv{vision_kv}"
    return build_key(model, plan, image_size, max_seq_len, target + suffix)


def ensure_build(model: str, plan_spec: str, plans: dict, image_size: int, max_seq_len: int, target: str,
                 out: Path, log=print, quant: str = "none", quant_vision: str = "none", vision_kv: str = "io") -> Path:
    """The cached build directory, built first when absent. A quantized build of a preset (random
    weights) skips parity: the fidelity floor means nothing without trained weights (README).

    Each build runs in a process of its own: lowering a full-size model leaves the Python heap at
    its peak (~20 GB), which the measuring process must not carry into loading the programs. `out` is
    the build's cache entry (`entry_key`)."""
    plan = plans[plan_spec]
    built = [p for p in out.glob("*") if (p / "manifest.json").is_file()] if out.is_dir() else []
    if built:
        os.utime(out)  # the cache forgets the least recently used builds first
        return built[0]
    log(f"[bench] building {target} with plan {plan['name']!r} into {out} ...")
    argv = ["--target", target, "--model", model, "--plan", plan_spec, "--image-size", str(image_size),
            "--max-seq-len", str(max_seq_len), "--out", str(out)]
    if quant != "none":
        argv += ["--quant", quant] + (["--skip-parity"] if not Path(model).is_dir() else [])
    if quant_vision != "none":
        argv += ["--quant-vision", quant_vision]
    if vision_kv != "io":  # the earlier design fails the one-memory-per-method check by design: not checked
        argv += ["--vision-kv", vision_kv] + ([] if "--skip-parity" in argv else ["--skip-parity"])
    code = subprocess.run([sys.executable, str(REPO / "export" / "build.py"), *argv]).returncode
    if code != 0:
        raise RuntimeError(f"python export/build.py {' '.join(argv)} failed (exit {code})")
    return next(p for p in out.glob("*") if (p / "manifest.json").is_file())


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def prune_cache(cache: Path, keep: set[str], max_bytes: int, log=print) -> None:
    """Remove the least recently used entries of `cache` (one directory per build key) other than `keep`
    until the cache holds at most `max_bytes`. Every source edit a build imports changes its key, so
    without this a full-size cache only grows (3 to 5 GB a build); the entries in `keep` stay even when
    they alone exceed the bound."""
    if not cache.is_dir():
        return
    entries = [(e.stat().st_mtime, e, tree_bytes(e)) for e in cache.iterdir() if e.is_dir()]
    total = sum(size for _, _, size in entries)
    for _, entry, size in sorted(entries, key=lambda t: t[0]):
        if total <= max_bytes:
            break
        if entry.name in keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        log(f"[cache] removed {entry.name} ({size / 1e9:.1f} GB, least recently used)")
    if total > max_bytes:
        log(f"[cache] this run's builds alone hold {total / 1e9:.1f} GB (bound {max_bytes / 1e9:.0f} GB)")
