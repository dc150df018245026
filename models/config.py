"""Model configuration: small nested dataclasses (vision, projector, decoder, image, prompt) and presets.

A `ModelConfig` is plain data. It travels with every artifact (`to_dict` / `from_dict`), so a
checkpoint directory or a build directory can be rebuilt from it alone. Presets are looked up by
exact name; an unknown name fails at once and lists the valid ones.

Real dimensions follow the public configs: FastVLM-0.5B (timm `fastvit_mci3` + mlp2x_gelu +
Qwen2-0.5B) and MobileVLM V2 1.7B (CLIP ViT-L/14-336 + LDPv2 + MobileLLaMA-1.4B).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    """Vision encoder. `kind` is "fastvit" (a timm FastViT/MCi model) or "clip" (transformers CLIP)."""

    kind: str
    image_size: int
    hidden_size: int  # channels of one output token
    stride: int  # pixels per output token along one side
    timm_name: str = ""  # fastvit: timm model name, e.g. "fastvit_mci3"
    timm_args: dict = field(default_factory=dict)  # fastvit: overrides passed to timm.create_model
    num_layers: int = 0  # clip
    num_heads: int = 0  # clip
    intermediate_size: int = 0  # clip
    select_layer: int = -2  # clip: hidden_states index used as the feature (CLS dropped)

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class ProjectorConfig:
    """Vision-to-LLM projector: "mlp2x_gelu", "ldpv2", "stf" (optionally MBTF), "pixel_shuffle"."""

    kind: str
    k: int = 2  # stf / pixel_shuffle: fuse k x k neighbours; ldpv2: pooling factor
    mbtf_blocks: tuple[int, ...] = ()  # stf: extra encoder stages whose features are fused (MBTF)

    @property
    def reduction(self) -> int:
        """Tokens in per token out along one grid side."""
        return 1 if self.kind == "mlp2x_gelu" else self.k


@dataclass(frozen=True)
class DecoderConfig:
    """LLaMA-family decoder (Qwen2: qkv bias, large rope theta; LLaMA: no bias)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = False
    max_seq_len: int = 2048  # static capacity of the text KV cache

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class ImageConfig:
    """Image preprocessing, as the checkpoint's processor does it."""

    resize_mode: str = "crop"  # "crop": resize shortest edge + centre crop; "pad": pad to square, then resize
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_color: tuple[int, int, int] = (0, 0, 0)
    channel_order: str = "RGB"


@dataclass(frozen=True)
class PromptConfig:
    """Prompt template: the text before the image, and the text around the question."""

    before_image: str = ""
    after_image: str = "\n{prompt}"
    stop_tokens: tuple[str, ...] = ()
    image_token: str = "<image>"


@dataclass(frozen=True)
class ModelConfig:
    family: str  # "fastvlm" | "mobilevlm"
    vision: VisionConfig
    projector: ProjectorConfig
    decoder: DecoderConfig
    image: ImageConfig = ImageConfig()
    prompt: PromptConfig = PromptConfig()

    @property
    def vision_grid(self) -> int:
        """Side of the token grid the decoder sees (after the projector)."""
        return self.vision.grid // self.projector.reduction

    @property
    def num_vision_tokens(self) -> int:
        return self.vision_grid * self.vision_grid

    def image_spec(self) -> dict:
        """The preprocessing spec (the manifest's image section; runtime/image.py and the apps follow it)."""
        im = self.image
        return {"size": self.vision.image_size, "resize_mode": im.resize_mode, "pad_color": list(im.pad_color),
                "mean": list(im.mean), "std": list(im.std), "channel_order": im.channel_order,
                "resample": "bicubic", "scale": 1 / 255, "layout": "NCHW", "dtype": "float32"}

    def replace(self, **parts) -> "ModelConfig":
        """Swap nested fields: replace(vision={"image_size": 384}, decoder={"max_seq_len": 512})."""
        new = {}
        for name, value in parts.items():
            old = getattr(self, name)
            new[name] = dataclasses.replace(old, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        parts = {"vision": VisionConfig, "projector": ProjectorConfig, "decoder": DecoderConfig,
                 "image": ImageConfig, "prompt": PromptConfig}
        kwargs = {"family": d["family"]}
        for name, cls in parts.items():
            if name in d:
                kwargs[name] = _dataclass_from_dict(cls, d[name])
        return ModelConfig(**kwargs)


def _dataclass_from_dict(cls, d: dict):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


QWEN2_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
QWEN2_PROMPT = PromptConfig(before_image=QWEN2_SYSTEM,
                            after_image="\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
                            stop_tokens=("<|im_end|>", "<|endoftext|>"))
LLAVA_V1_PROMPT = PromptConfig(
    before_image="A chat between a curious user and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions. USER: ",
    after_image="\n{prompt} ASSISTANT:", stop_tokens=("</s>",))

QWEN2_0_5B = DecoderConfig(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                           intermediate_size=4864, rope_theta=1e6, rms_eps=1e-6, qkv_bias=True,
                           tie_embeddings=True, max_seq_len=2048)
MOBILELLAMA_1_4B = DecoderConfig(vocab_size=32000, hidden_size=2048, num_layers=24, num_heads=16,
                                 num_kv_heads=16, intermediate_size=5632, rope_theta=10000.0, rms_eps=1e-6,
                                 qkv_bias=False, tie_embeddings=False, max_seq_len=2048)

# A smaller timm FastViT/MCi (same block types as fastvit_mci0, 4 stages, stride 32, few channels).
TINY_FASTVIT_ARGS = {"layers": [1, 1, 1, 1], "embed_dims": [16, 32, 64, 128], "mlp_ratios": [2, 2, 2, 2]}

PRESETS: dict[str, ModelConfig] = {
    "fastvlm-0.5b": ModelConfig(
        family="fastvlm",
        vision=VisionConfig(kind="fastvit", image_size=1024, hidden_size=3072, stride=64, timm_name="fastvit_mci3"),
        projector=ProjectorConfig(kind="mlp2x_gelu"),
        decoder=QWEN2_0_5B,
        image=ImageConfig(resize_mode="pad"),
        prompt=QWEN2_PROMPT,
    ),
    "mobilevlm-v2-1.7b": ModelConfig(
        family="mobilevlm",
        vision=VisionConfig(kind="clip", image_size=336, hidden_size=1024, stride=14, num_layers=24,
                            num_heads=16, intermediate_size=4096, select_layer=-2),
        projector=ProjectorConfig(kind="ldpv2", k=2),
        decoder=MOBILELLAMA_1_4B,
        image=ImageConfig(resize_mode="pad", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, pad_color=(122, 116, 104)),
        prompt=LLAVA_V1_PROMPT,
    ),
    "fastvlm-tiny": ModelConfig(
        family="fastvlm",
        vision=VisionConfig(kind="fastvit", image_size=128, hidden_size=256, stride=32, timm_name="fastvit_mci0",
                            timm_args=TINY_FASTVIT_ARGS),
        projector=ProjectorConfig(kind="mlp2x_gelu"),
        decoder=DecoderConfig(vocab_size=512, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                              intermediate_size=128, rope_theta=1e6, qkv_bias=True, tie_embeddings=True,
                              max_seq_len=128),
        image=ImageConfig(resize_mode="pad"),
        prompt=QWEN2_PROMPT,
    ),
    "mobilevlm-tiny": ModelConfig(
        family="mobilevlm",
        vision=VisionConfig(kind="clip", image_size=56, hidden_size=32, stride=7, num_layers=3, num_heads=4,
                            intermediate_size=64, select_layer=-2),
        projector=ProjectorConfig(kind="ldpv2", k=2),
        decoder=DecoderConfig(vocab_size=512, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=4,
                              intermediate_size=160, rope_theta=10000.0, qkv_bias=False, tie_embeddings=False,
                              max_seq_len=128),
        image=ImageConfig(resize_mode="pad", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, pad_color=(122, 116, 104)),
        prompt=LLAVA_V1_PROMPT,
    ),
}

# FastVLM-0.5B with a Spatial-Token-Fusion projector (k=2): 64 vision tokens at 1024 px, for speed work.
PRESETS["fastvlm-0.5b-stf"] = PRESETS["fastvlm-0.5b"].replace(projector=ProjectorConfig(kind="stf", k=2))
# MobileVLM V2 1.7B's layer shapes at a third of its depth (8 of 24 decoder layers), for speed work: the
# full-depth fp32 .pte needs more memory to lower than 24 GB, and per-layer prefill shares do not depend
# on depth.
PRESETS["mobilevlm-v2-1.7b-8l"] = PRESETS["mobilevlm-v2-1.7b"].replace(decoder={"num_layers": 8})


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
