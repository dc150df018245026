"""Load and save VLM checkpoints from a local directory (never a hub): four layouts, one key map each.

    model = load_model("checkpoints/llava-fastvithd_0.5b_stage3", plan="dense")
    save_model(model, "build/my-model")  # the foveate layout

The layout is read from config.json's `model_type` (facts from the released checkpoints and their authors' code):
  foveate      our own: {"model_type": "foveate", "foveate_version": 1, "config": ModelConfig.to_dict()}
               + model.safetensors with foveate's own keys (any projector, STF included).
  fast_vlm     transformers FastVlmForConditionalGeneration: timm tower, multi_modal_projector, Qwen2.
  llava_qwen2  the original FastVLM release (apple/ml-fastvlm): MobileCLIP fastvithd tower renamed onto
               timm's FastViT names with transformers' conversion rules, mm_projector.{0,2}, Qwen2.
  mobilevlm    MobileVLM V2: CLIP ViT-L/14-336 tower, LDPv2 projector, LLaMA decoder.
Each layout gives a `{their_key: our_key}` map (our_key None: a tensor we knowingly discard). Every
tensor must be consumed and every shape must match, or `CheckpointError` lists what did not match.
Weights come from (sharded) safetensors, or pytorch_model*.bin read only with weights_only=True.
`lm_head.weight` is used whenever present, whatever tie_word_embeddings says. Weights are cast into
the fp32 model. A transformers FastVLM's input size and the tokenizer come from checkpoint_files.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint_files import CheckpointError, fast_vlm_image_size, read_json
from .config import (LLAVA_V1_PROMPT, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PRESETS, QWEN2_PROMPT, DecoderConfig,
                     ImageConfig, ModelConfig, ProjectorConfig, VisionConfig)
from .vlm import VLM

FOVEATE_VERSION = 1
DEFAULT_MAX_SEQ_LEN = 2048  # text KV capacity when the caller gives none (capped by max_position_embeddings)
MOBILEVLM_TOWER = "clip-vit-large-patch14-336"  # the only tower MobileVLM V2 names; dims from the preset


# ---------------------------------------------------------------------------------------------- API

def load_config(path, max_seq_len: int | None = None, image_size: int | None = None) -> ModelConfig:
    """The ModelConfig of the checkpoint in directory `path` (reads config.json and tensor names only).
    `image_size`: the input side where the checkpoint's files do not settle it (a transformers FastVLM
    without preprocessor_config.json or image_seq_length); a checkpoint that says its size keeps it."""
    path = Path(path)
    raw = _read_config(path)
    files = _weight_files(path)
    return LAYOUTS[raw["model_type"]][0](raw, path, set(_tensor_names(files)), max_seq_len, image_size)


def load_model(path, plan="dense", max_seq_len: int | None = None, image_size: int | None = None) -> VLM:
    """A VLM in eval mode with the checkpoint's weights; `max_seq_len` overrides the text KV capacity;
    `image_size` as in load_config."""
    path = Path(path)
    raw = _read_config(path)
    make_config, make_map = LAYOUTS[raw["model_type"]]
    files = _weight_files(path)
    tensors = _read_tensors(files)
    cfg = make_config(raw, path, set(tensors), max_seq_len, image_size)
    model = VLM(cfg, plan)
    mapping = make_map(cfg, model, tensors)
    _load_mapped(model, tensors, mapping, path)
    return model.eval()


def save_model(model: VLM, path) -> Path:
    """Write the foveate layout (config.json + model.safetensors) atomically: a temp dir, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_model_files(model, tmp)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_model_files(model: VLM, directory: Path) -> None:
    """config.json + model.safetensors into a new directory (not atomic: see save_model)."""
    directory.mkdir()
    config = {"model_type": "foveate", "foveate_version": FOVEATE_VERSION, "config": model.cfg.to_dict()}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def replace_dir(staging: Path, final: Path) -> None:
    """Rename a finished staging directory to `final`, replacing what was there; if the rename fails the
    previous directory is put back. Both must be on one filesystem."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    try:
        staging.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------- files on disk

def _read_config(path: Path) -> dict:
    file = path / "config.json"
    supported = ", ".join(sorted(LAYOUTS))
    if not file.is_file():
        raise CheckpointError(f"{file}: not found; a checkpoint directory needs a config.json "
                              f"(supported model_type: {supported})")
    raw = read_json(file, f"; supported model_type: {supported}")
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind not in LAYOUTS:
        raise CheckpointError(f"{file}: unknown model_type {kind!r}; supported model_type: {supported}")
    return raw


def _weight_files(path: Path) -> list[Path]:
    """Safetensors (single, index-sharded or loose) first, else pytorch_model*.bin."""
    for index_name, single, pattern in (("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
                                        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin")):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(read_json(index)["weight_map"].values()))
            except (KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index}: not a weight index with a 'weight_map' ({e!r})") from None
            absent = [s for s in shards if not (path / s).is_file()]
            if absent:
                raise CheckpointError(f"{index}: shard files missing: {absent}")
            return [path / s for s in shards]
        if (path / single).is_file():
            return [path / single]
        found = sorted(path.glob(pattern))
        if found:
            return found
    raise CheckpointError(f"{path}: no weights found; expected model.safetensors, model.safetensors.index.json "
                          "or pytorch_model*.bin")


def _load_bin(file: Path) -> dict:
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except Exception as e:  # weights_only refuses pickled code and classes: never retry without it
        raise CheckpointError(f"{file}: refused: not a plain tensor state dict loadable with "
                              f"torch.load(weights_only=True) ({type(e).__name__}: {str(e)[:300]})") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{file}: refused: expected a dict of name -> tensor, got {type(sd).__name__}")
    return sd


def _tensor_names(files: list[Path]) -> list[str]:
    names = []
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as st:
                names += list(st.keys())
        else:
            names += list(_load_bin(f))
    return names


def _read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(f)) if f.suffix == ".safetensors" else _load_bin(f)
        twice = sorted(set(part) & set(tensors))
        if twice:
            raise CheckpointError(f"{f}: tensors also found in another shard: {twice[:5]}")
        tensors.update(part)
    return tensors


def _load_mapped(model: nn.Module, tensors: dict, mapping: dict[str, str | None], path: Path) -> None:
    """Check the map against the tensors and the model; load strictly or raise one CheckpointError."""
    ours = model.state_dict()
    targets = [o for o in mapping.values() if o is not None]
    assert len(targets) == len(set(targets)), "key map sends two tensors to one parameter"
    unexpected = sorted(k for k in tensors if k not in mapping or (mapping[k] is not None and mapping[k] not in ours))
    missing = sorted(t for t, o in mapping.items() if o in ours and t not in tensors)
    missing += sorted(f"(no checkpoint name for {o})" for o in sorted(set(ours) - set(targets)))
    misshaped = sorted(f"{t} {tuple(tensors[t].shape)} != {tuple(ours[o].shape)} ({o})"
                       for t, o in mapping.items() if t in tensors and o in ours and tensors[t].shape != ours[o].shape)
    if missing or unexpected or misshaped:
        parts = [f"{n} {what}: {items[:6]}{' ...' if len(items) > 6 else ''}"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                 for n in [len(items)] if n]
        raise CheckpointError(f"{path}: weights do not match the config: " + "; ".join(parts))
    model.load_state_dict({o: tensors[t] for t, o in mapping.items() if o is not None}, strict=True)


# ------------------------------------------------------------------------------- configs per layout

def _need(d: dict, keys, where: str) -> None:
    absent = [k for k in keys if k not in d]
    if absent:
        raise CheckpointError(f"{where}: missing fields {absent}")


def _check(ok: bool, where: str, msg: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: {msg}")


def _decoder_config(c: dict, family: str, names: set, tied: bool, max_seq_len, where: str) -> DecoderConfig:
    """DecoderConfig from a Qwen2Config / LlamaConfig dict (transformers 4 or 5 spelling)."""
    _need(c, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"), where)
    heads = c["num_attention_heads"]
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    _check(rope.get("rope_type", rope.get("type", "default")) == "default", where,
           f"rope scaling {rope} is not supported (plain RoPE only)")
    _check(c.get("hidden_act", "silu") == "silu", where, f"hidden_act {c.get('hidden_act')!r} (SwiGLU/silu only)")
    _check(c.get("head_dim") in (None, c["hidden_size"] // heads), where,
           f"head_dim {c.get('head_dim')} != hidden/heads")
    _check(not c.get("use_sliding_window", False), where, "sliding-window attention is not supported")
    if family == "llama":
        _check(not c.get("attention_bias", False) and not c.get("mlp_bias", False), where,
               "attention_bias / mlp_bias are not supported for LLaMA")
    has_head = "lm_head.weight" in names
    return DecoderConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
        num_heads=heads, num_kv_heads=c.get("num_key_value_heads") or heads,
        intermediate_size=c["intermediate_size"], rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 1e4))),
        rms_eps=float(c.get("rms_norm_eps", 1e-6)), qkv_bias=family == "qwen2",
        tie_embeddings=tied and not has_head,  # lm_head.weight wins over the flag (ml-fastvlm model_export)
        max_seq_len=max_seq_len or min(DEFAULT_MAX_SEQ_LEN, c.get("max_position_embeddings", DEFAULT_MAX_SEQ_LEN)))


def _fastvit_config(arch: str, args: dict, image_size: int, hidden_size: int, where: str) -> VisionConfig:
    """A timm FastViT built in inference (reparameterised) form; its stride read from a meta-device build."""
    args = dict(args)
    _check(args.pop("inference_mode", True) is True, where, "the tower must be reparameterised (inference_mode)")
    with torch.device("meta"):
        m = timm.create_model(arch, pretrained=False, num_classes=0, inference_mode=True, **args)
    _check(m.num_features == hidden_size, where, f"{arch} gives {m.num_features} channels, config says {hidden_size}")
    return VisionConfig(kind="fastvit", image_size=image_size, hidden_size=hidden_size,
                        stride=m.feature_info[-1]["reduction"], timm_name=arch, timm_args=args)


def _foveate_config(raw, path, names, max_seq_len, image_size) -> ModelConfig:
    where = path / "config.json"
    _check(raw.get("foveate_version") == FOVEATE_VERSION, where,
           f"foveate_version {raw.get('foveate_version')!r}; this code reads version {FOVEATE_VERSION}")
    try:
        cfg = ModelConfig.from_dict(raw["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad 'config': {e!r}") from None
    return cfg.replace(decoder={"max_seq_len": max_seq_len}) if max_seq_len else cfg


def _fast_vlm_config(raw, path, names, max_seq_len, image_size) -> ModelConfig:
    where = path / "config.json"
    _need(raw, ("text_config", "vision_config"), str(where))
    text, vision = raw["text_config"], raw["vision_config"]
    _need(vision, ("architecture", "hidden_size"), f"{where} vision_config")
    _check((vision.get("model_args") or {}).get("inference_mode") is True, where,
           "vision_config.model_args must set inference_mode: true (reparameterised FastViT weights)")
    _check(raw.get("vision_feature_select_strategy", "full") == "full" and raw.get("vision_feature_layer", -1) == -1,
           where, "only vision_feature_select_strategy 'full' and vision_feature_layer -1 exist in FastVLM")
    _check(raw.get("projector_hidden_act", "gelu") == "gelu" and raw.get("multimodal_projector_bias", True),
           where, "projector must be Linear(bias)-GELU-Linear(bias)")
    proc = read_json(path / "preprocessor_config.json") if (path / "preprocessor_config.json").is_file() else {}
    tower = _fastvit_config(vision["architecture"], vision.get("model_args") or {}, 0, vision["hidden_size"],
                            f"{where} vision_config")
    size = fast_vlm_image_size(path, raw, tower.stride, image_size)
    tied = bool(raw.get("tie_word_embeddings") or text.get("tie_word_embeddings"))
    image = ImageConfig(resize_mode="crop", mean=tuple(proc.get("image_mean", (0.0, 0.0, 0.0))),
                        std=tuple(proc.get("image_std", (1.0, 1.0, 1.0))))
    return ModelConfig(
        family="fastvlm",
        vision=dataclasses.replace(tower, image_size=size),
        projector=ProjectorConfig(kind="mlp2x_gelu"),
        decoder=_decoder_config(text, "qwen2", names, tied, max_seq_len, f"{where} text_config"),
        image=image, prompt=QWEN2_PROMPT)


def _llava_qwen2_config(raw, path, names, max_seq_len, image_size) -> ModelConfig:
    """The original release. `vision_config` {"architecture", "model_args"} (a foveate extension) may name
    another timm FastViT; otherwise "mobileclip_l_<size>" is fastvit_mci3."""
    where = path / "config.json"
    _need(raw, ("mm_vision_tower", "mm_hidden_size"), str(where))
    tower = str(raw["mm_vision_tower"])
    size = re.search(r"(\d+)$", tower)
    _check("mobileclip" in tower and size is not None, where,
           f"mm_vision_tower {tower!r}: expected a MobileCLIP tower named like 'mobileclip_l_1024'")
    _check(raw.get("mm_projector_type", "mlp2x_gelu") == "mlp2x_gelu", where,
           f"mm_projector_type {raw.get('mm_projector_type')!r}: only mlp2x_gelu")
    _check(raw.get("mm_patch_merge_type", "flat") == "flat", where, "only mm_patch_merge_type 'flat'")
    if "vision_config" in raw:
        arch, args = raw["vision_config"]["architecture"], raw["vision_config"].get("model_args") or {}
    else:
        _check("mobileclip_l" in tower, where, f"mm_vision_tower {tower!r}: only mobileclip_l (fastvithd) is known")
        arch, args = "fastvit_mci3", {}
    pad = raw.get("image_aspect_ratio", "pad") == "pad"
    return ModelConfig(
        family="fastvlm",
        vision=_fastvit_config(arch, args, int(size.group(1)), raw["mm_hidden_size"], str(where)),
        projector=ProjectorConfig(kind="mlp2x_gelu"),
        decoder=_decoder_config(raw, "qwen2", names, bool(raw.get("tie_word_embeddings")), max_seq_len, str(where)),
        image=ImageConfig(resize_mode="pad" if pad else "crop"), prompt=QWEN2_PROMPT)


def _mobilevlm_config(raw, path, names, max_seq_len, image_size) -> ModelConfig:
    """MobileVLM V2. The tower is only named; its dims are the preset's unless config.json carries a
    CLIPVisionConfig-style `vision_config` dict."""
    where = path / "config.json"
    _check(raw.get("vision_tower_type", "clip") == "clip", where, "only vision_tower_type 'clip'")
    _check(raw.get("mm_projector_type") == "ldpnetv2", where,
           f"mm_projector_type {raw.get('mm_projector_type')!r}: only 'ldpnetv2' (MobileVLM V2) is supported")
    _check(raw.get("mm_vision_select_feature", "patch") == "patch", where, "only mm_vision_select_feature 'patch'")
    if "vision_config" in raw:
        v = raw["vision_config"]
        _need(v, ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                  "patch_size"), f"{where} vision_config")
        _check(v.get("hidden_act", "quick_gelu") == "quick_gelu" and v.get("layer_norm_eps", 1e-5) == 1e-5,
               where, "vision_config: only CLIP's quick_gelu and layer_norm_eps 1e-5")
        vision = VisionConfig(kind="clip", image_size=v["image_size"], hidden_size=v["hidden_size"],
                              stride=v["patch_size"], num_layers=v["num_hidden_layers"],
                              num_heads=v["num_attention_heads"], intermediate_size=v["intermediate_size"])
    else:
        tower = str(raw.get("mm_vision_tower", ""))
        _check(tower.rstrip("/").endswith(MOBILEVLM_TOWER), where,
               f"mm_vision_tower {tower!r}: without a vision_config only {MOBILEVLM_TOWER} is known")
        vision = PRESETS["mobilevlm-v2-1.7b"].vision
    vision = dataclasses.replace(vision, select_layer=raw.get("mm_vision_select_layer", -2))
    _check(raw.get("mm_hidden_size", vision.hidden_size) == vision.hidden_size, where,
           f"mm_hidden_size {raw.get('mm_hidden_size')} != vision hidden_size {vision.hidden_size}")
    pad = raw.get("image_aspect_ratio", "pad") == "pad"
    return ModelConfig(
        family="mobilevlm", vision=vision, projector=ProjectorConfig(kind="ldpv2", k=2),
        decoder=_decoder_config(raw, "llama", names, bool(raw.get("tie_word_embeddings")), max_seq_len, str(where)),
        image=ImageConfig(resize_mode="pad" if pad else "crop", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                          pad_color=(122, 116, 104)),
        prompt=LLAVA_V1_PROMPT)


# ---------------------------------------------------------------------------------- key maps per layout

def decoder_key_map(cfg: DecoderConfig, prefix: str) -> dict[str, str | None]:
    """{their: ours} for a LLaMA/Qwen2 decoder whose layers live under `prefix` ("model.", ...)."""
    m = {f"{prefix}embed_tokens.weight": "decoder.embed_tokens.weight", f"{prefix}norm.weight": "decoder.norm.weight"}
    params = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
              "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
              "input_layernorm.weight", "post_attention_layernorm.weight"]
    if cfg.qkv_bias:
        params += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
    for i in range(cfg.num_layers):
        m.update({f"{prefix}layers.{i}.{p}": f"decoder.layers.{i}.{p}" for p in params})
        m[f"{prefix}layers.{i}.self_attn.rotary_emb.inv_freq"] = None  # derived buffer saved by old transformers
    if not cfg.tie_embeddings:
        m["lm_head.weight"] = "decoder.lm_head.weight"
    return m


def _prefixed(model: nn.Module, ours: str, theirs: str) -> dict[str, str]:
    """{theirs + k: ours + k} for every state-dict key of our model under `ours`."""
    return {theirs + k[len(ours):]: k for k in model.state_dict() if k.startswith(ours)}


def _foveate_map(cfg, model, tensors):
    return {k: k for k in model.state_dict()}


def _fast_vlm_map(cfg, model, tensors):
    m = decoder_key_map(cfg.decoder, "model.language_model.")
    m.update(_prefixed(model, "vision.timm_model.", "model.vision_tower.timm_model."))
    m.update({f"model.multi_modal_projector.linear_{i}.{p}": f"projector.linear_{i}.{p}"
              for i in (1, 2) for p in ("weight", "bias")})
    return m


def _llava_qwen2_map(cfg, model, tensors):
    m = decoder_key_map(cfg.decoder, "model.")
    m.update({f"model.mm_projector.{j}.{p}": f"projector.linear_{i}.{p}"
              for i, j in ((1, 0), (2, 2)) for p in ("weight", "bias")})
    tower = "model.vision_tower.vision_tower.model."
    stage_of = network_stages(model.vision.timm_model)
    for key in tensors:  # keys with no rule (None) stay out of the map: reported as unexpected
        ours = mobileclip_to_timm(key[len(tower):], stage_of) if key.startswith(tower) else None
        if ours is not None:
            m[key] = f"vision.timm_model.{ours}" if ours else None
    return m


def _mobilevlm_map(cfg, model, tensors):
    m = decoder_key_map(cfg.decoder, "model.")
    tower = "model.vision_tower.vision_tower.vision_model."
    m.update(_prefixed(model, "vision.clip.", tower))
    for key in tensors:  # the layers after the selected one and post_layernorm are never run
        if key.startswith(tower) and key not in m and model.vision.unused_checkpoint_key("clip." + key[len(tower):]):
            m[key] = None
    m.setdefault(tower + "embeddings.position_ids", None)  # a buffer older transformers saved
    m.update({f"model.mm_projector.mlp.mlp.{i}.{p}": f"projector.mlp.{i}.{p}"
              for i in (0, 2) for p in ("weight", "bias")})
    m.update({f"model.mm_projector.peg.peg.0.{p}": f"projector.peg.{p}" for p in ("weight", "bias")})
    return m


# ---------------------------------------------------- original FastVLM tower -> timm names (CHECKPOINTS §2)

def network_stages(timm_model: nn.Module) -> tuple[int, ...]:
    """timm stage of each entry of MobileCLIP's flat `network` list: per stage its PatchEmbed (timm
    `downsample`), its RepCPE (`pos_emb`), then its blocks. fastvit_mci3: (0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4)."""
    out = []
    for s, stage in enumerate(timm_model.stages):
        parts = 1 + (not isinstance(stage.downsample, nn.Identity)) + (not isinstance(stage.pos_emb, nn.Identity))
        out += [s] * parts
    return tuple(out)


MCI_RENAMES = (("patch_embed", "stem"), ("layer_scale_1", "layer_scale_1.gamma"),
               ("layer_scale_2", "layer_scale_2.gamma"), ("conv_exp", "final_conv"), ("se.reduce", "se.fc1"),
               ("se.expand", "se.fc2"), ("convffn", "mlp"), ("lkb_reparam", "reparam_conv"))


def mobileclip_to_timm(key: str, stage_of: tuple[int, ...]) -> str | None:
    """A fastvithd tower key (below `model.vision_tower.vision_tower.model.`) -> timm FastViT key.

    transformers' convert_fastvlm_weights_to_hf.py rules 1, 2, 4-7 in order. "" for `head.proj` (dropped),
    None for a `network.N` index this model does not have."""
    if key.startswith("head.proj"):  # rule 1: the CLIP projection head, unused by the VLM
        return ""
    if key.endswith("layer_scale"):  # rule 2
        key += ".gamma"
    if "token_mixer" not in key:  # rule 4: PatchEmbed projections
        key = key.replace(".proj.", ".downsample.proj.")
    m = re.match(r"network\.(\d+)(\.\d+)?(\..*)$", key)  # rule 5
    if m:
        if int(m.group(1)) >= len(stage_of):
            return None
        blocks = f".blocks{m.group(2)}" if m.group(2) else ""
        key = f"stages.{stage_of[int(m.group(1))]}{blocks}{m.group(3)}"
    key = re.sub(r"^(stages\.\d+)\.reparam_conv", r"\1.pos_emb.reparam_conv", key)  # rule 6
    for old, new in MCI_RENAMES:  # rule 7 (the tower's part)
        key = key.replace(old, new)
    return key


LAYOUTS = {  # model_type -> (config from config.json, {their: our} key map)
    "foveate": (_foveate_config, _foveate_map),
    "fast_vlm": (_fast_vlm_config, _fast_vlm_map),
    "llava_qwen2": (_llava_qwen2_config, _llava_qwen2_map),
    "mobilevlm": (_mobilevlm_config, _mobilevlm_map),
}
