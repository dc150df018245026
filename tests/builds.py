"""Builds shared by the export and runtime tests: the tiny default model under four plans, per target.

Plans: dense; a mixed plan using full, cross, text, exit and a window; an STF projector with an exit;
cross in every layer (no layer updates the vision states).
Each (target, plan) is built once per test session through `export/build.py`'s main().
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from export.build import main as build_main
from export.random_model import RANDOM_MODEL_DIR
from models.checkpoint import load_model, save_model
from models.vlm import VLM

MIXED = {"name": "mixed", "layers": {"0": "full", "1": "cross", "2": "text", "3": "exit"}, "window": 1}
STF_EXIT = {"name": "stf-exit", "layers": {"0-1": "full", "2": "exit"}}
CROSS_ALL = {"name": "cross-all", "layers": {"0-3": "cross"}}


@pytest.fixture(scope="session")
def stf_checkpoint(tmp_path_factory) -> Path:
    """The default model's decoder and tokenizer with an STF (k=2) projector: 4x fewer vision tokens."""
    base = load_model(RANDOM_MODEL_DIR)
    cfg = base.cfg.replace(projector={"kind": "stf", "k": 2})
    torch.manual_seed(1)
    vlm = VLM(cfg)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("projector.")}
    vlm.load_state_dict(state, strict=False)
    out = tmp_path_factory.mktemp("stf") / "foveate-tiny-stf"
    save_model(vlm, out)
    shutil.copy(RANDOM_MODEL_DIR / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.fixture(scope="session")
def plan_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("plans")
    files = {}
    for name, spec in (("mixed", MIXED), ("stf-exit", STF_EXIT), ("cross-all", CROSS_ALL)):
        files[name] = d / f"{name}.json"
        files[name].write_text(json.dumps(spec))
    return files


class Builds:
    """Lazily builds (target, plan) once and remembers where."""

    def __init__(self, root: Path, plan_files: dict, stf_checkpoint: Path):
        self.root, self.plan_files, self.stf, self.done = root, plan_files, stf_checkpoint, {}

    def get(self, target: str, plan: str) -> Path:
        key = (target, plan)
        if key not in self.done:
            model = self.stf if plan == "stf-exit" else RANDOM_MODEL_DIR
            plan_arg = "dense" if plan == "dense" else str(self.plan_files[plan])
            out = self.root / f"{target}-{plan}"
            code = build_main(["--target", target, "--model", str(model), "--plan", plan_arg, "--out", str(out)])
            assert code == 0, f"build {key} exited {code}"
            (built,) = [p for p in out.iterdir() if not p.name.startswith(".")]
            self.done[key] = built
        return self.done[key]


@pytest.fixture(scope="session")
def default_builds(tmp_path_factory):
    """The README's main build, per target, made once: the trained default model with its shipped plan
    (no --model, no --plan). Its vectors.json is what the apps' ports are tested against."""
    done = {}

    def get(target: str = "onnx", quant: str = "none") -> Path:
        """`quant` "8da4w" (executorch) or "int8" (onnx): the same model and plan, quantized."""
        key = (target, quant)
        if key not in done:
            out = tmp_path_factory.mktemp(f"default-{target}-{quant}")
            extra = [] if quant == "none" else ["--quant", quant]
            assert build_main(["--target", target, "--out", str(out), *extra]) == 0
            (done[key],) = [p for p in out.iterdir() if not p.name.startswith(".")]
        return done[key]

    return get


@pytest.fixture(scope="session")
def builds(tmp_path_factory, plan_files, stf_checkpoint) -> Builds:
    return Builds(tmp_path_factory.mktemp("builds"), plan_files, stf_checkpoint)
