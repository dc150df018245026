"""Checkpoint loading against transformers' own models (fp32, max-abs <= 1e-4), for every layout;
clear errors for every way a checkpoint can fail to match; the foveate layout round trip.

Oracles: FastVlmForConditionalGeneration (transformers FastVLM layout, and the original release's layout
written here with the inverse of transformers' rename rules), Qwen2ForCausalLM, LlamaForCausalLM,
CLIPVisionModel (MobileVLM V2 layout).
"""

import json
import os
import pickle
import re
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (CLIPVisionConfig, CLIPVisionModel, FastVlmConfig, FastVlmForConditionalGeneration,
                          LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, TimmWrapperConfig)

from models.checkpoint import (CheckpointError, decoder_key_map, load_config, load_model, mobileclip_to_timm,
                               network_stages, save_model)
from models.config import LLAVA_V1_PROMPT, OPENAI_CLIP_MEAN, QWEN2_PROMPT, TINY_FASTVIT_ARGS, DecoderConfig, preset
from models.decoder import Decoder
from models.plan import dense_plan
from models.vlm import VLM, Cursor

VOCAB, IMAGE_TOKEN = 300, 299
ATOL = 1e-4


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def randomize(module, skip=()):
    """Weights at a scale where a wrong key or a missed bias shows: matrices ~ 1/sqrt(fan_in), norms
    around 1, biases non-zero (transformers' init leaves biases 0 and norms 1)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(s in name for s in skip):
                continue
            if p.dim() >= 2:
                p.normal_(0, p[0].numel() ** -0.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.2)


# ------------------------------------------------------------------------ transformers FastVLM oracle

def hf_fastvlm(tied, arch="fastvit_mci0", model_args=TINY_FASTVIT_ARGS, vision_hidden=256, seed=0,
               image_seq_length=16):
    """image_seq_length: the tokens of one image (transformers' default, 576, is LLaVA's and matches no FastVLM)."""
    torch.manual_seed(seed)
    vc = TimmWrapperConfig(architecture=arch, model_args={"inference_mode": True, **model_args},
                           hidden_size=vision_hidden)
    tc = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=VOCAB, rope_theta=1e6, tie_word_embeddings=tied)
    hf = FastVlmForConditionalGeneration(FastVlmConfig(vision_config=vc, text_config=tc, image_token_id=IMAGE_TOKEN,
                                                       image_seq_length=image_seq_length,
                                                       tie_word_embeddings=tied)).eval()
    # transformers' init (std 0.02 whatever the fan-in) makes the FastViT output vanish: give the tower
    # PyTorch's default init, as timm.create_model does, and layer scales well above timm's 1e-5 so that
    # every block (and so every block's keys) changes the output
    tower = hf.model.vision_tower.timm_model
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.05, 0.2)
        for module in tower.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.reset_parameters()
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    randomize(hf, skip=("vision_tower",))
    if not tied:
        assert not torch.equal(hf.lm_head.weight, hf.model.language_model.embed_tokens.weight)
    return hf


def prompt_ids(n_prefix=5, n_question=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, IMAGE_TOKEN, (1, n_prefix + n_question), generator=g)  # never the image token
    return ids[:, :n_prefix], ids[:, n_prefix:]


@torch.no_grad()
def check_against_fastvlm(ours: VLM, hf, image_size: int, n_decode: int):
    """Prefill (prefix, image, question) and greedy decode steps: our chunks vs HF's full forward."""
    prefix, question = prompt_ids()
    pixels = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    nv = ours.cfg.num_vision_tokens
    ids = torch.cat([prefix, torch.full((1, nv), IMAGE_TOKEN), question], dim=1)
    ref = hf(input_ids=ids, pixel_values=pixels).logits
    ours.decoder.reset()
    cur = Cursor()
    got_prefix = ours.prefill_text(cur, prefix, all_logits=True)
    vision = ours.encode_image(pixels)
    close(vision, hf.model.get_image_features(pixel_values=pixels).pooler_output)
    ours.prefill_image(cur, vision)
    got = ours.prefill_text(cur, question, select_topk=True, all_logits=True)
    close(got_prefix, ref[:, :prefix.shape[1]])
    close(got, ref[:, -question.shape[1]:])
    for _ in range(n_decode):
        token = int(got[0, -1].argmax())
        assert token == int(ref[0, -1].argmax())
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        ref = hf(input_ids=ids, pixel_values=pixels).logits
        got = ours.decode(cur, token)
        close(got[0, -1], ref[0, -1])


def write_preprocessor(path, size):
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": size, "width": size}, "size": {"shortest_edge": size}, "do_center_crop": True,
         "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0], "image_processor_type": "CLIPImageProcessor"}))


def test_fastvlm_hf_layout_dense_matches_transformers(tmp_path):
    hf = hf_fastvlm(tied=True)
    hf.save_pretrained(tmp_path, max_shard_size="200KB")  # sharded: model.safetensors.index.json
    assert (tmp_path / "model.safetensors.index.json").is_file()
    write_preprocessor(tmp_path, 128)
    model = load_model(tmp_path, max_seq_len=64)
    cfg = model.cfg
    assert cfg.vision.image_size == 128 and cfg.num_vision_tokens == 16 and cfg.decoder.tie_embeddings
    assert cfg.image.resize_mode == "crop" and cfg.image.mean == (0, 0, 0) and cfg.image.std == (1, 1, 1)
    assert cfg.prompt == QWEN2_PROMPT and cfg.decoder.max_seq_len == 64
    assert load_config(tmp_path, max_seq_len=64) == cfg
    check_against_fastvlm(model, hf, 128, n_decode=3)


@pytest.mark.slow
def test_fastvlm_hf_layout_real_mci3_tower(tmp_path):
    """The real FastViTHD (timm fastvit_mci3, 125M params) at 128 px: 2x2 tokens, one prefill."""
    hf = hf_fastvlm(tied=False, arch="fastvit_mci3", model_args={}, vision_hidden=3072, image_seq_length=4)
    hf.save_pretrained(tmp_path)
    write_preprocessor(tmp_path, 128)
    model = load_model(tmp_path, max_seq_len=32)
    assert (model.cfg.vision.stride, model.cfg.num_vision_tokens) == (64, 4)
    assert not model.cfg.decoder.tie_embeddings
    check_against_fastvlm(model, hf, 128, n_decode=0)


# ------------------------------------------------------------------------------------ decoder alone

def hf_text_model(family):
    torch.manual_seed(5)
    if family == "qwen2":
        hf = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=96, vocab_size=VOCAB,
                                          rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True))
        cfg = DecoderConfig(vocab_size=VOCAB, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                            intermediate_size=96, rope_theta=1e6, rms_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                            max_seq_len=32)
    else:
        hf = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=96, vocab_size=VOCAB,
                                          rms_norm_eps=1e-5, tie_word_embeddings=False))
        cfg = DecoderConfig(vocab_size=VOCAB, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                            intermediate_size=96, rope_theta=1e4, rms_eps=1e-5, qkv_bias=False, max_seq_len=32)
    randomize(hf)
    return hf.eval(), cfg


def load_decoder(cfg, hf_state, prefix="model."):
    dec = Decoder(cfg, dense_plan(cfg.num_layers), num_vision=4, grid=2).eval()
    mapping = decoder_key_map(cfg, prefix)
    dec.load_state_dict({o.removeprefix("decoder."): hf_state[t] for t, o in mapping.items() if o}, strict=True)
    return dec


@torch.no_grad()
def check_text_decoder(dec, hf, ids, n_decode=3):
    ref = hf(input_ids=ids).logits
    dec.reset()
    T = ids.shape[1]
    got = dec.forward_text(dec.embed(ids), torch.arange(T), torch.tensor(0), select_topk=True, all_logits=True)
    close(got, ref)
    for step in range(n_decode):
        token = int(got[0, -1].argmax())
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        ref = hf(input_ids=ids).logits
        pos = torch.tensor([T + step])
        got = dec.forward_text(dec.embed(torch.tensor([[token]])), pos, pos[0])
        close(got[0, -1], ref[0, -1])


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_decoder_matches_transformers(family):
    hf, cfg = hf_text_model(family)
    dec = load_decoder(cfg, hf.state_dict())
    check_text_decoder(dec, hf, prompt_ids(n_prefix=7, n_question=0)[0])


# --------------------------------------------------------------------- original FastVLM release layout

# network index of each timm stage's parts, read off the released checkpoint's key names: 0 stage0, 1 PatchEmbed, 2 stage1,
# 3 PatchEmbed, 4 stage2, 5 PatchEmbed, 6 RepCPE, 7 stage3, 8 PatchEmbed, 9 RepCPE, 10 stage4
NET_BLOCKS = {0: 0, 1: 2, 2: 4, 3: 7, 4: 10}
NET_DOWNSAMPLE = {1: 1, 2: 3, 3: 5, 4: 8}
NET_POS_EMB = {3: 6, 4: 9}


def timm_to_mobileclip(key):
    """timm FastViT key -> the original release's fastvithd key (the inverse of transformers' renames)."""
    se = [("se.fc1", "se.reduce"), ("se.fc2", "se.expand")]
    if m := re.fullmatch(r"stem\.(.*)", key):
        return "patch_embed." + m[1]
    if m := re.fullmatch(r"final_conv\.(.*)", key):
        return "conv_exp." + _sub(m[1], se)
    if m := re.fullmatch(r"stages\.(\d)\.downsample\.proj\.(\d)\.(.*)", key):
        rest = _sub(m[3], [("reparam_conv", "lkb_reparam")] if m[2] == "0" else se)
        return f"network.{NET_DOWNSAMPLE[int(m[1])]}.proj.{m[2]}.{rest}"
    if m := re.fullmatch(r"stages\.(\d)\.pos_emb\.(.*)", key):
        return f"network.{NET_POS_EMB[int(m[1])]}.{m[2]}"
    if m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.*)", key):
        rest = re.sub(r"^mlp\.", "convffn.", m[3])
        rest = re.sub(r"(layer_scale(_\d)?)\.gamma$", r"\1", rest)
        return f"network.{NET_BLOCKS[int(m[1])]}.{m[2]}.{rest}"
    raise AssertionError(f"no inverse rule for {key}")


def _sub(s, pairs):
    for a, b in pairs:
        s = s.replace(a, b)
    return s


def to_original_layout(hf_state, vision_hidden):
    out = {}
    for k, v in hf_state.items():
        if k.startswith("model.vision_tower.timm_model."):
            out["model.vision_tower.vision_tower.model." + timm_to_mobileclip(k.split("timm_model.", 1)[1])] = v
        elif k.startswith("model.multi_modal_projector.linear_"):
            out[k.replace("multi_modal_projector.linear_1", "mm_projector.0")
                 .replace("multi_modal_projector.linear_2", "mm_projector.2")] = v
        elif k.startswith("model.language_model."):
            out["model." + k.removeprefix("model.language_model.")] = v
        else:
            assert k == "lm_head.weight", k
            out[k] = v
    out["model.vision_tower.vision_tower.model.head.proj"] = torch.randn(vision_hidden, 768)  # dropped
    return out


def test_mci3_names_follow_the_conversion_rules():
    """On the real fastvit_mci3 (meta device): the released checkpoint's names map onto timm's, one to one."""
    with torch.device("meta"):
        tower = timm.create_model("fastvit_mci3", pretrained=False, num_classes=0, inference_mode=True)
    stage_of = network_stages(tower)
    assert stage_of == (0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4)
    names = {timm_to_mobileclip(k): k for k in tower.state_dict()}
    for listed in ("patch_embed.1.reparam_conv.weight", "network.0.1.convffn.conv.bn.num_batches_tracked",
                   "network.1.proj.0.lkb_reparam.weight", "network.1.proj.1.reparam_conv.bias",
                   "network.4.23.token_mixer.reparam_conv.weight", "network.4.0.layer_scale",
                   "network.6.reparam_conv.weight", "network.7.3.token_mixer.qkv.weight",
                   "network.7.0.token_mixer.proj.bias", "network.8.proj.0.lkb_reparam.weight",
                   "network.9.reparam_conv.bias", "network.10.1.norm.weight", "network.10.1.layer_scale_2",
                   "network.10.1.convffn.fc2.weight", "conv_exp.reparam_conv.weight", "conv_exp.se.reduce.weight",
                   "conv_exp.se.expand.bias"):
        assert listed in names, listed
    assert {mobileclip_to_timm(k, stage_of): v for k, v in names.items()} == {v: v for v in names.values()}
    assert mobileclip_to_timm("head.proj", stage_of) == ""


def write_original(path, hf, tie_flag):
    state = to_original_layout(hf.state_dict(), 256)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    text = hf.config.text_config
    config = {"model_type": "llava_qwen2", "architectures": ["LlavaQwen2ForCausalLM"],
              "vocab_size": VOCAB, "hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers,
              "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
              "intermediate_size": text.intermediate_size, "rope_theta": 1e6, "rope_scaling": None,
              "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 32768,
              "tie_word_embeddings": tie_flag, "use_sliding_window": False,
              "mm_vision_tower": "mobileclip_l_128", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 256,
              "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad", "mm_vision_select_layer": -2,
              "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "image_token_index": IMAGE_TOKEN,
              "tokenizer_model_max_length": 8192,
              # the tiny tower is not mobileclip_l: name it (a foveate extension of this layout)
              "vision_config": {"architecture": "fastvit_mci0", "model_args": TINY_FASTVIT_ARGS}}
    (path / "config.json").write_text(json.dumps(config))


def test_original_fastvlm_layout_matches_transformers(tmp_path):
    hf = hf_fastvlm(tied=False, seed=3)
    write_original(tmp_path, hf, tie_flag=True)  # the flag is wrong, as ml-fastvlm warns: lm_head must win
    model = load_model(tmp_path, max_seq_len=64)
    cfg = model.cfg
    assert not cfg.decoder.tie_embeddings
    assert (cfg.image.resize_mode, cfg.image.pad_color, cfg.image.mean) == ("pad", (0, 0, 0), (0, 0, 0))
    assert cfg.prompt == QWEN2_PROMPT and cfg.vision.image_size == 128
    check_against_fastvlm(model, hf, 128, n_decode=2)


# ------------------------------------------------------------------------------ MobileVLM V2 layout

CLIP_TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=56,
                 patch_size=7)


@pytest.fixture(scope="module")
def mobilevlm_parts():
    torch.manual_seed(7)
    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP_TINY)).eval()
    randomize(clip)
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, intermediate_size=160, vocab_size=VOCAB,
                                         rms_norm_eps=1e-6)).eval()
    randomize(llama)
    ldp = {"model.mm_projector.mlp.mlp.0.weight": torch.randn(64, 32) / 32 ** 0.5,
           "model.mm_projector.mlp.mlp.0.bias": torch.randn(64) * 0.2,
           "model.mm_projector.mlp.mlp.2.weight": torch.randn(64, 64) / 8,
           "model.mm_projector.mlp.mlp.2.bias": torch.randn(64) * 0.2,
           "model.mm_projector.peg.peg.0.weight": torch.randn(64, 1, 3, 3) / 3,
           "model.mm_projector.peg.peg.0.bias": torch.randn(64) * 0.2}
    state = {f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()}
    state.update(llama.state_dict())
    state.update(ldp)
    lc = llama.config
    config = {"model_type": "mobilevlm", "architectures": ["MobileLlamaForCausalLM"], "vocab_size": VOCAB,
              "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
              "intermediate_size": 160, "rms_norm_eps": lc.rms_norm_eps, "rope_scaling": None, "hidden_act": "silu",
              "max_position_embeddings": 2048, "tie_word_embeddings": False,
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "vision_tower_type": "clip",
              "mm_projector_type": "ldpnetv2", "mm_hidden_size": 32, "mm_vision_select_layer": -2,
              "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
              "vision_config": CLIP_TINY}  # the real checkpoint only names the tower; the tiny one says its dims
    return clip, llama, ldp, state, config


def write_mobilevlm(path, state, config, fmt):
    (path / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    else:  # transformers 4.33 wrote zip-format .bin; older files are torch's legacy format
        torch.save(dict(state), path / "pytorch_model.bin", _use_new_zipfile_serialization=fmt == "bin")


def ldpv2_reference(ldp, feats, grid):
    p = "model.mm_projector."
    x = F.linear(feats, ldp[p + "mlp.mlp.0.weight"], ldp[p + "mlp.mlp.0.bias"])
    x = F.linear(F.gelu(x), ldp[p + "mlp.mlp.2.weight"], ldp[p + "mlp.mlp.2.bias"])  # (1, g*g, H)
    x = x.transpose(1, 2).reshape(1, -1, grid, grid)
    x = F.adaptive_avg_pool2d(x, grid // 2)  # MobileVLM's AdaptiveAvgPool2d
    x = x + F.conv2d(x, ldp[p + "peg.peg.0.weight"], ldp[p + "peg.peg.0.bias"], padding=1, groups=x.shape[1])
    return x.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "bin-legacy"])
@torch.no_grad()
def test_mobilevlm_layout_matches_transformers(tmp_path, mobilevlm_parts, fmt):
    clip, llama, ldp, state, config = mobilevlm_parts
    write_mobilevlm(tmp_path, state, config, fmt)
    model = load_model(tmp_path, max_seq_len=48)
    cfg = model.cfg
    assert cfg.family == "mobilevlm" and cfg.num_vision_tokens == 16 and cfg.prompt == LLAVA_V1_PROMPT
    assert (cfg.image.resize_mode, cfg.image.mean, cfg.image.pad_color) == ("pad", OPENAI_CLIP_MEAN, (122, 116, 104))
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(8))
    feats = model.vision(pixels)
    close(feats, clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:])
    vision = model.projector(feats)
    close(vision, ldpv2_reference(ldp, feats, 8))
    close(model.encode_image(pixels), vision)
    # whole prompt: LLaMA on [prefix, projected image, question] embeddings vs our chunks
    prefix, question = prompt_ids(4, 3, seed=9)
    emb = llama.get_input_embeddings()
    ref = llama(inputs_embeds=torch.cat([emb(prefix), vision, emb(question)], dim=1)).logits
    model.decoder.reset()
    cur = Cursor()
    close(model.prefill_text(cur, prefix, all_logits=True), ref[:, :4])
    model.prefill_image(cur, vision)
    close(model.prefill_text(cur, question, select_topk=True, all_logits=True), ref[:, -3:])
    # text alone: greedy decode steps against LlamaForCausalLM
    check_text_decoder(model.decoder, llama, prompt_ids(6, 0, seed=10)[0])


def test_mobilevlm_without_vision_config_uses_the_preset_tower(tmp_path, mobilevlm_parts):
    config = {k: v for k, v in mobilevlm_parts[4].items() if k != "vision_config"}
    config["mm_hidden_size"] = 1024
    write_mobilevlm(tmp_path, {"lm_head.weight": torch.zeros(1)}, config, "safetensors")
    assert load_config(tmp_path).vision == preset("mobilevlm-v2-1.7b").vision
    config["mm_vision_tower"] = "some/other-tower"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="clip-vit-large-patch14-336"):
        load_config(tmp_path)


def test_real_fastvlm_configs_give_the_real_dims(tmp_path):
    """The released 0.5B config (values from its config.json) and transformers' default FastVlmConfig
    (7B), read from config.json plus tensor names only."""
    save_file({"lm_head.weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    original = {"model_type": "llava_qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "rope_theta": 1e6,
                "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "tie_word_embeddings": False,
                "mm_vision_tower": "mobileclip_l_1024", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 3072,
                "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad", "tokenizer_model_max_length": 8192}
    (tmp_path / "config.json").write_text(json.dumps(original))
    real = preset("fastvlm-0.5b")
    assert load_config(tmp_path) == real.replace(decoder={"tie_embeddings": False})
    # convert_fastvlm_weights_to_hf.py sets image_seq_length 256 (1024 px at stride 64)
    (tmp_path / "config.json").write_text(json.dumps(FastVlmConfig(image_seq_length=256).to_dict()))
    cfg = load_config(tmp_path)
    assert cfg.vision == real.vision and cfg.num_vision_tokens == 256 and cfg.image.resize_mode == "crop"
    d = cfg.decoder
    assert (d.hidden_size, d.num_layers, d.num_heads, d.num_kv_heads, d.vocab_size) == (3584, 28, 28, 4, 152128)


# ---------------------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory):
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_model(VLM(preset("fastvlm-tiny")), path)
    return path


def edited(tiny_saved, tmp_path, edit):
    path = tmp_path / "ckpt"
    shutil.copytree(tiny_saved, path)
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def test_missing_tensor_is_named(tiny_saved, tmp_path):
    path = edited(tiny_saved, tmp_path, lambda t: t.pop("decoder.layers.2.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing: \['decoder\.layers\.2\.mlp\.up_proj\.weight'\]"):
        load_model(path)


def test_unexpected_tensor_is_named(tiny_saved, tmp_path):
    path = edited(tiny_saved, tmp_path, lambda t: t.update({"decoder.lm_head.weight": torch.zeros(512, 64)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected: \['decoder\.lm_head\.weight'\]") as e:
        load_model(path)
    assert "missing" not in str(e.value)


def test_misshaped_tensor_is_named(tiny_saved, tmp_path):
    path = edited(tiny_saved, tmp_path, lambda t: t.update({"projector.linear_1.bias": torch.zeros(65)}))
    with pytest.raises(CheckpointError, match=r"1 mis-shaped: \['projector\.linear_1\.bias \(65,\) != \(64,\)"):
        load_model(path)


def test_many_problems_are_counted(tiny_saved, tmp_path):
    def drop_layer(t):
        for k in [k for k in t if k.startswith("decoder.layers.1.")]:
            t[k.replace("layers.1.", "layers.9.")] = t.pop(k)
    path = edited(tiny_saved, tmp_path, drop_layer)
    with pytest.raises(CheckpointError, match=r"12 missing: .* \.\.\.; 12 unexpected: "):
        load_model(path)


def test_bad_config_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json: not found.*fast_vlm, foveate, llava_qwen2, mobilevlm"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    with pytest.raises(CheckpointError, match=r"unknown model_type 'llava_llama'.*fast_vlm, foveate, llava_qwen2"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "foveate", "foveate_version": 1, "config": {}}))
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(tmp_path)


def test_unsupported_variants_are_refused(tmp_path, mobilevlm_parts):
    save_file({"lm_head.weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    cases = [({"mm_projector_type": "ldpnet"}, "only 'ldpnetv2'"),
             ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope scaling .* is not supported"),
             ({"attention_bias": True}, "attention_bias"),
             ({"mm_hidden_size": 48}, "mm_hidden_size 48 != vision hidden_size 32")]
    for change, message in cases:
        (tmp_path / "config.json").write_text(json.dumps({**mobilevlm_parts[4], **change}))
        with pytest.raises(CheckpointError, match=message):
            load_config(tmp_path)
    hf_config = hf_fastvlm(tied=True).config.to_dict()
    hf_config["vision_config"]["model_args"].pop("inference_mode")
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    with pytest.raises(CheckpointError, match="inference_mode"):
        load_config(tmp_path)


class Payload:
    """Pickles as a call to os.mkdir: loading it without weights_only would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_bin_with_pickled_code_is_refused(tmp_path, mobilevlm_parts):
    marker = tmp_path / "pwned"
    (tmp_path / "config.json").write_text(json.dumps(mobilevlm_parts[4]))
    torch.save({"model.norm.weight": torch.ones(64), "evil": Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused.*weights_only=True"):
        load_model(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:  # a bare pickle, not torch's format
        pickle.dump({"evil": Payload(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused"):
        load_model(tmp_path)
    torch.save([torch.ones(2)], tmp_path / "pytorch_model.bin")  # loadable, but not a state dict
    with pytest.raises(CheckpointError, match="expected a dict of name -> tensor"):
        load_model(tmp_path)
    assert not marker.exists()


# --------------------------------------------------------------------------- foveate layout round trip

@pytest.mark.parametrize("projector", [None, {"kind": "stf", "k": 2, "mbtf_blocks": (1,)}])
@torch.no_grad()
def test_foveate_round_trip(tmp_path, projector):
    cfg = preset("fastvlm-tiny")
    if projector:
        cfg = cfg.replace(projector=projector)
    torch.manual_seed(12)
    model = VLM(cfg).eval()
    path = save_model(model, tmp_path / "out")
    save_model(model, path)  # over an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((path / "config.json").read_text())["model_type"] == "foveate"
    loaded = load_model(path)
    assert loaded.cfg == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    pixels = torch.rand(1, 3, 128, 128)
    prefix, question = prompt_ids()
    assert torch.equal(model.encode_image(pixels), loaded.encode_image(pixels))
    assert model.generate(prefix, pixels, question, 6) == loaded.generate(prefix, pixels, question, 6)
    assert load_model(path, max_seq_len=40).decoder.layers[0].text_k.shape[2] == 40
