"""Resolve build.py's --model / --plan / --image-size / --max-seq-len into a ready VLM.

--model is a checkpoint directory (config.json + weights + tokenizer.json, or a tokenizer.json converted
at load from tokenizer.model or vocab.json + merges.txt) or a preset name (random weights, seeded, with
the random test model's tokenizer — for speed work, not for answers). With no --model, the shipped
default model. With no --plan, the model directory's plan.json, else dense. --image-size also gives the
input size of a checkpoint whose files do not say it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import CheckpointError, load_config, load_model
from models.checkpoint_files import convert_tokenizer, resized_config
from models.config import PRESETS, preset
from models.plan import PlanError
from models.vlm import VLM

from .random_model import RANDOM_MODEL_DIR

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "foveate-tiny"
RANDOM_MODEL_TOKENIZER = RANDOM_MODEL_DIR / "tokenizer.json"


class LoadError(ValueError):
    pass


@dataclass
class Loaded:
    vlm: VLM
    source: str  # checkpoint directory or preset name
    tokenizer: Path
    layout: str  # KV layout of the graphs: "shared" for the dense plan, else "split"


def model_name(source: str) -> str:
    return Path(source).name if source not in PRESETS else source


def load(model: str | None, plan: str | None, image_size: int | None, max_seq_len: int | None) -> Loaded:
    source = model or str(SHIPPED_MODEL_DIR)
    try:
        if source in PRESETS:
            vlm, tok = _preset_model(source, plan or "dense", image_size, max_seq_len), RANDOM_MODEL_TOKENIZER
        else:
            vlm = _checkpoint_model(Path(source), plan, image_size, max_seq_len)
            tok = tokenizer_file(Path(source))
    except (CheckpointError, PlanError) as e:
        raise LoadError(str(e)) from None
    return Loaded(vlm.eval(), source, tok, "shared" if vlm.plan.is_dense else "split")


def load_model_config(model: str | None, image_size: int | None, max_seq_len: int | None):
    """(config, tokenizer.json path) of what load() would build, without building it (no weights)."""
    source = model or str(SHIPPED_MODEL_DIR)
    if source in PRESETS:
        return _resize(preset(source), image_size, max_seq_len), RANDOM_MODEL_TOKENIZER
    if not Path(source).exists():
        raise LoadError(f"--model {source}: no such directory and not a preset (presets: {', '.join(sorted(PRESETS))})")
    try:
        return _resize(load_config(source, image_size=image_size), image_size, max_seq_len), tokenizer_file(source)
    except CheckpointError as e:
        raise LoadError(str(e)) from None


def tokenizer_file(directory) -> Path:
    """The checkpoint's tokenizer.json, or one converted from what it has, written to a temporary
    directory that is removed when the process exits."""
    converted = convert_tokenizer(directory)
    if converted is None:
        return Path(directory) / "tokenizer.json"
    tmp = Path(tempfile.mkdtemp(prefix="foveate-tokenizer-"))
    atexit.register(shutil.rmtree, tmp, True)
    converted.save(str(tmp / "tokenizer.json"))
    return tmp / "tokenizer.json"


def _preset_model(name: str, plan, image_size, max_seq_len) -> VLM:
    cfg = preset(name)
    cfg = _resize(cfg, image_size, max_seq_len)
    torch.manual_seed(0)
    return VLM(cfg, plan)


def _checkpoint_model(path: Path, plan, image_size, max_seq_len) -> VLM:
    if not path.exists():
        raise LoadError(f"--model {path}: no such directory and not a preset (presets: {', '.join(sorted(PRESETS))})")
    if plan is None:
        plan = str(path / "plan.json") if (path / "plan.json").is_file() else "dense"
    vlm = load_model(path, plan=plan, max_seq_len=max_seq_len, image_size=image_size)
    if image_size is None or image_size == vlm.cfg.vision.image_size:
        return vlm
    resized = VLM(_resize(vlm.cfg, image_size, None), plan)
    try:
        resized.load_state_dict(vlm.state_dict())
    except RuntimeError as e:
        raise LoadError(f"--image-size {image_size} does not fit this encoder's weights: "
                        f"{str(e).splitlines()[-1].strip()}") from None
    return resized


def _resize(cfg, image_size, max_seq_len):
    if image_size is not None:
        try:
            cfg = resized_config(cfg, image_size)
        except CheckpointError as e:
            raise LoadError(str(e)) from None
    if max_seq_len is not None:
        if max_seq_len < 2:
            raise LoadError("--max-seq-len must be at least 2")
        cfg = cfg.replace(decoder={"max_seq_len": max_seq_len})
    return cfg
