"""Train the shipped default model on the generated shapes task (data/shapes.py), on CPU.

    python -m models.train --out checkpoints/foveate-tiny                      # dense projector
    python -m models.train --out checkpoints/foveate-tiny-stf --projector stf  # 4x fewer vision tokens

The architecture is FastVLM's at toy scale: a timm FastViT/MCi encoder (reparameterised form) at
256 px and stride 32 (an 8 x 8 grid, 64 vision tokens), an mlp2x_gelu or STF (k=2, 16 tokens)
projector, and a Qwen2-style decoder of 6 layers with a byte-level BPE tokenizer trained on the
task's text. Everything trains from scratch, end to end, with the dense plan; vision plans are
applied afterwards, without retraining, as the seeds do.

A step draws IMAGES_PER_STEP new training scenes (never repeated) and asks QUESTIONS_PER_IMAGE[mix]
of their questions: `--questions every` (the default, and the shipped checkpoints') takes 12 of all
a scene allows, round-robin over types; `--questions sampled` takes 5 of the one-per-type questions
of `scene_questions`, the mix of earlier checkpoints. The encoder runs once per image and the
decoder once per question. The loss is cross-entropy on the answer and the stop token, plus (weight
PROBE_WEIGHT) an auxiliary per-cell classification of the vision embeddings (`CellProbe`, discarded
after training). Training is seeded and deterministic on a given machine and thread count
(`--threads`, default 1: the ops are small, a second thread gains little, and the two shipped
models train side by side on two cores). The log (loss, teacher-forced exact match on a fixed
validation sample, time) goes to stdout and to `train_log.txt` in the output directory; the final
line reports validation and test accuracy per split. Exact match under teacher forcing (every
answer token and the stop token are the argmax) is exactly what greedy decoding would produce.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils.model import reparameterize_model

from data.shapes import (COLOURS, GRID, QUESTION_TYPES, SHAPES, Scene, every_question, render, samples,
                         scene_questions, vocabulary_text)
from data.tokenizer import train_bpe
from models.checkpoint import replace_dir, write_model_files
from models.config import DecoderConfig, ImageConfig, ModelConfig, ProjectorConfig, PromptConfig, VisionConfig
from models.decoder import apply_rope
from models.vision import create_timm_fastvit
from models.vlm import VLM

TASK_PROMPT = PromptConfig(before_image="<|im_start|>user\n",
                           after_image="\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
                           stop_tokens=("<|im_end|>", "<|endoftext|>"))
ENCODER_ARGS = {"layers": [1, 1, 2, 1], "embed_dims": [16, 32, 64, 128], "mlp_ratios": [2, 2, 2, 2]}
VOCAB_SIZE = 512
IMAGES_PER_STEP = 24
QUESTIONS_PER_IMAGE = {"sampled": 5, "every": 12}
VAL_SAMPLES = 256
PROBE_WEIGHT = 0.5


def task_config(vocab_size: int, projector: str = "mlp2x_gelu") -> ModelConfig:
    return ModelConfig(
        family="fastvlm",
        vision=VisionConfig(kind="fastvit", image_size=256, hidden_size=2 * ENCODER_ARGS["embed_dims"][-1],
                            stride=32, timm_name="fastvit_mci0", timm_args=ENCODER_ARGS),
        projector=ProjectorConfig(kind=projector, k=2),
        decoder=DecoderConfig(vocab_size=vocab_size, hidden_size=128, num_layers=6, num_heads=4, num_kv_heads=2,
                              intermediate_size=384, rope_theta=10000.0, qkv_bias=True, tie_embeddings=True,
                              max_seq_len=128),
        image=ImageConfig(resize_mode="pad"),
        prompt=TASK_PROMPT,
    )


def task_tokenizer():
    p = TASK_PROMPT
    template = [p.before_image + p.image_token + p.after_image.replace("{prompt}", q) + a + p.stop_tokens[0]
                for q, a in (("What colour is the circle?", "red"), ("How many squares are there?", "2"))]
    return train_bpe(template + vocabulary_text(), VOCAB_SIZE)


def pixels_of(images) -> torch.Tensor:
    """Square RGB images already at the model's size -> (B, 3, S, S) in [0, 1], as runtime/image.py does."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0)  # (B, S, S, 3)
    # contiguous NCHW: a channels-last input crashes the train-time encoder's backward (torch 2.14.1, CPU)
    return x.permute(0, 3, 1, 2).contiguous()


class Batcher:
    """Token ids for (question, answer) pairs: the prompt after the image, then answer + stop, right-padded."""

    def __init__(self, tokenizer, cfg: ModelConfig):
        self.tok, p = tokenizer, cfg.prompt
        self.after = p.after_image
        self.prefix = torch.tensor(tokenizer.encode(p.before_image).ids)
        self.stop = tokenizer.token_to_id(p.stop_tokens[0])
        self.pad = tokenizer.token_to_id(p.stop_tokens[-1])

    def __call__(self, qas):
        """-> ids (B, T), targets (B, T) with -100 outside the answer, the answer's target positions."""
        rows, starts = [], []
        for question, answer in qas:
            prompt = self.tok.encode(self.after.replace("{prompt}", question)).ids
            rows.append(prompt + self.tok.encode(answer).ids + [self.stop])
            starts.append(len(prompt))
        T = max(map(len, rows))
        ids = torch.full((len(rows), T), self.pad)
        targets = torch.full((len(rows), T), -100)
        for b, (row, s) in enumerate(zip(rows, starts)):
            ids[b, :len(row)] = torch.tensor(row)
            targets[b, s - 1:len(row) - 1] = torch.tensor(row[s:])  # position t predicts token t+1
        return ids, targets


def _qkv(attn, h, cos, sin):
    B, S, _ = h.shape
    q = apply_rope(attn.q_proj(h).view(B, S, attn.n_heads, -1).transpose(1, 2), cos, sin)  # (B, H, S, D)
    k = apply_rope(attn.k_proj(h).view(B, S, attn.n_kv, -1).transpose(1, 2), cos, sin)  # (B, H_kv, S, D)
    return q, k, attn.v_proj(h).view(B, S, attn.n_kv, -1).transpose(1, 2)


def _merge_heads(attn, out):
    B, _, S, _ = out.shape
    return attn.o_proj(out.transpose(1, 2).reshape(B, S, -1))  # (B, H, S, D) -> (B, S, hid)


def sequence_logits(vlm: VLM, prefix_ids, vision, ids, repeats: int = 1) -> torch.Tensor:
    """Dense causal forward of [prefix | image] once per image, then of `repeats` texts per image.

    prefix_ids (P,), vision (B, N_v, hidden), ids (B * repeats, T) -> logits (B * repeats, T, V) of the
    text positions. Under the dense plan the prefix and image states do not depend on the text after
    them, so each image's context is computed once and its K/V shared by its texts: the same result as
    one causal pass over every whole sequence (tested against the chunked path of models/decoder.py).
    """
    dec = vlm.decoder
    B, C = vision.shape[0], len(prefix_ids) + vision.shape[1]
    ctx = torch.cat([dec.embed(prefix_ids)[None].expand(B, -1, -1), vision], dim=1)  # (B, C, hid)
    x = dec.embed(ids)  # (B * repeats, T, hid)
    T = x.shape[1]
    cos, sin = dec.rope_cos[:C + T], dec.rope_sin[:C + T]
    text_mask = torch.cat([torch.ones(T, C, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()], 1)
    for layer in dec.layers:
        attn = layer.self_attn
        q, k, v = _qkv(attn, layer.input_layernorm(ctx), cos[:C], sin[:C])
        ctx_out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        qt, kt, vt = _qkv(attn, layer.input_layernorm(x), cos[C:], sin[C:])
        k = torch.cat([k.repeat_interleave(repeats, 0), kt], dim=2)  # (B * repeats, H_kv, C + T, D)
        v = torch.cat([v.repeat_interleave(repeats, 0), vt], dim=2)
        x_out = F.scaled_dot_product_attention(qt, k, v, attn_mask=text_mask, enable_gqa=True)
        ctx = layer.block(ctx, _merge_heads(attn, ctx_out))
        x = layer.block(x, _merge_heads(attn, x_out))
    return dec.logits(x)


def init_weights(vlm: VLM, std: float = 0.02) -> None:
    """GPT-2 style: N(0, std) for the decoder and projector weights, residual outputs scaled by
    1/sqrt(2 * layers), zero biases. (torch's defaults give a tied head logits of std ~sqrt(hidden).)"""
    n_layers = vlm.cfg.decoder.num_layers
    for name, m in [*vlm.decoder.named_modules(), *vlm.projector.named_modules()]:
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv2d)) and "peg" not in name:
            scale = (2 * n_layers) ** -0.5 if name.endswith(("o_proj", "down_proj")) else 1.0
            torch.nn.init.normal_(m.weight, 0.0, std * scale)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)


def cell_labels(scene: Scene) -> torch.Tensor:
    """(GRID * GRID, 4) per-cell classes: shape (0 = none), colour (0 = none), digit (0 = none, d + 1),
    size (0 large, 1 small; -100 without a shape)."""
    labels = torch.zeros(GRID * GRID, 4, dtype=torch.long)
    labels[:, 3] = -100
    colours = list(COLOURS)
    for it in scene.items:
        labels[it.row * GRID + it.col] = torch.tensor([SHAPES.index(it.shape) + 1, colours.index(it.colour) + 1, 0,
                                                       int(it.small)])
    for (row, col), digit in scene.digits.items():
        labels[row * GRID + col, 2] = digit + 1
    return labels


class CellProbe(torch.nn.Module):
    """Auxiliary classifiers on the decoder's vision inputs, pooled to the scene's cells (training only).

    They ask the vision embeddings to say what each cell holds, so the encoder learns to see before the
    decoder has learned to ask; without them the model spends most of a short CPU budget answering from
    the question alone. The probe is not part of the shipped model.
    """

    SIZES = (len(SHAPES) + 1, len(COLOURS) + 1, 11, 2)

    def __init__(self, hidden: int, grid: int):
        super().__init__()
        self.grid = grid
        self.heads = torch.nn.Linear(hidden, sum(self.SIZES))

    def loss(self, vision: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """vision (B, g*g, hidden), labels (B, GRID*GRID, 4) -> mean cross-entropy of the four heads."""
        B, _, hid = vision.shape
        grid = vision.transpose(1, 2).reshape(B, hid, self.grid, self.grid)
        cells = F.adaptive_avg_pool2d(grid, GRID).flatten(2).transpose(1, 2)  # (B, GRID*GRID, hidden)
        logits = self.heads(cells).split(self.SIZES, dim=-1)
        return sum(F.cross_entropy(lg.flatten(0, 1), labels[..., i].flatten(), ignore_index=-100)
                   for i, lg in enumerate(logits)) / len(logits)


def train_batch(step: int, batcher: Batcher, images: int = IMAGES_PER_STEP,
                questions: int = QUESTIONS_PER_IMAGE["every"], mix: str = "every"):
    """Train scenes step*images .. (step+1)*images - 1 and `questions` of each: pixels, ids, targets, cells.

    mix "sampled": of the one question per type that `scene_questions` draws, `questions` at random;
    mix "every": of all the scene's questions (`every_question`), `questions` round-robin over types."""
    pictures, qas, cells = [], [], []
    rng = np.random.default_rng(step)
    for i in range(step * images, (step + 1) * images):
        if mix == "every":
            scene, qs = every_question("train", i)
            chosen = [qs[j][:2] for j in balanced_order(rng, [q[3] for q in qs])[:questions]]
        else:
            scene, qs = scene_questions("train", i)
            chosen = [qs[j][:2] for j in rng.permutation(len(qs))[:questions]]
        pictures.append(render(scene))
        cells.append(cell_labels(scene))
        qas += chosen + [chosen[-1]] * (questions - len(chosen))  # the same batch shape every step
    ids, targets = batcher(qas)
    return pixels_of(pictures), ids, targets, torch.stack(cells)


def balanced_order(rng: np.random.Generator, qtypes: list[str]) -> list[int]:
    """Indices of the questions, shuffled, round-robin over question types: the first k cover
    min(k, types) types, so a type with many questions (six presence questions) cannot crowd out the rest."""
    by_type: dict[str, list[int]] = {}
    for j in rng.permutation(len(qtypes)):
        by_type.setdefault(qtypes[j], []).append(int(j))
    queues = [by_type[t] for t in rng.permutation(sorted(by_type))]
    return [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]


def loss_of(vlm: VLM, prefix, pixels, ids, targets, repeats: int, probe: CellProbe | None = None, cells=None):
    """Answer cross-entropy (plus the cell probe's, when given) and the text logits."""
    vision = vlm.encode_image(pixels)
    logits = sequence_logits(vlm, prefix, vision, ids, repeats)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    if probe is not None:
        loss = loss + PROBE_WEIGHT * probe.loss(vision, cells)
    return loss, logits


@torch.no_grad()
def exact_match(vlm: VLM, batcher: Batcher, items, batch: int = 64) -> dict:
    """Teacher-forced exact match per kind and question type ({"easy": 0.97, ..., "all": ...})."""
    was_training = vlm.training
    vlm.eval()
    hits = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        ids, targets = batcher([(s.question, s.answer) for s in chunk])
        _, logits = loss_of(vlm, batcher.prefix, pixels_of([s.image for s in chunk]), ids, targets, 1)
        ok = (logits.argmax(-1) == targets) | (targets == -100)
        hits += ok.all(dim=1).tolist()
    vlm.train(was_training)
    out = {"all": float(np.mean(hits))}
    for key in ("easy", "hard", *QUESTION_TYPES["easy"], *QUESTION_TYPES["hard"]):
        sel = [h for h, s in zip(hits, items) if key in (s.kind, s.qtype)]
        if sel:
            out[key] = float(np.mean(sel))
    return out


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def trainable_encoder(vlm: VLM) -> None:
    """Swap the encoder for timm's train-time form (MobileOne / RepMixer branches with BatchNorm).

    The reparameterised form the model ships in is one plain conv per block; from torch's default
    init its signal shrinks block after block until the output is the same for every image (measured:
    feature std across images 1e-9). Training runs the multi-branch form and folds it afterwards.
    """
    vlm.vision.timm_model = create_timm_fastvit(vlm.cfg.vision, inference_mode=False)


def fold_encoder(vlm: VLM) -> None:
    """Reparameterise the train-time encoder in place: the shipped (inference) form, same function."""
    vlm.vision.timm_model = reparameterize_model(vlm.vision.timm_model.eval())


def train(cfg: ModelConfig, tokenizer, steps: int, lr: float, seed: int, log, eval_every: int = 100,
          images: int = IMAGES_PER_STEP, questions: int = QUESTIONS_PER_IMAGE["every"],
          val_samples: int = VAL_SAMPLES, mix: str = "every", vlm: VLM | None = None, on_step=None) -> VLM:
    """Train `vlm` (default: a fresh, initialised model of `cfg`) and return it in eval mode.

    on_step(step, loss) is called after every optimiser step."""
    torch.manual_seed(seed)
    if vlm is None:
        vlm = VLM(cfg)
        init_weights(vlm)
        trainable_encoder(vlm)
    vlm.train()
    probe = CellProbe(cfg.decoder.hidden_size, cfg.vision_grid)
    batcher = Batcher(tokenizer, cfg)
    val = samples("val", "all", val_samples)
    params = [*vlm.named_parameters(), *probe.named_parameters()]
    decay = [p for n, p in params if p.dim() >= 2]
    rest = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    start, smooth = time.time(), None
    with ThreadPoolExecutor(1) as pool:  # renders the next batch while this one trains
        upcoming = pool.submit(train_batch, 0, batcher, images, questions, mix)
        for step in range(steps):
            batch = upcoming.result()
            if step + 1 < steps:
                upcoming = pool.submit(train_batch, step + 1, batcher, images, questions, mix)
            rate = lr_at(step, steps, lr, min(200, steps // 10 + 1))
            loss = _step(vlm, probe, opt, batcher.prefix, batch, rate, questions)
            smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
            if on_step is not None:
                on_step(step, loss)
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                acc = exact_match(vlm, batcher, val)
                elapsed = time.time() - start
                log(f"step {step + 1}/{steps}  loss {smooth:.4f}  val easy {acc['easy']:.3f} hard {acc['hard']:.3f}"
                    f"  {elapsed:.0f}s elapsed, ~{elapsed / (step + 1) * (steps - step - 1):.0f}s left")
    if not vlm.vision.timm_model.stem[0].inference_mode:
        fold_encoder(vlm)
    return vlm.eval()


def _step(vlm, probe, opt, prefix, batch, lr: float, questions: int) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    pixels, ids, targets, cells = batch
    loss, _ = loss_of(vlm, prefix, pixels, ids, targets, questions, probe, cells)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], 1.0)
    opt.step()
    return loss.item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write (replaced atomically)")
    parser.add_argument("--projector", default="mlp2x_gelu", choices=("mlp2x_gelu", "stf"))
    parser.add_argument("--questions", default="every", choices=tuple(QUESTIONS_PER_IMAGE),
                        help="which questions of a scene a step asks (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="training steps (default: 2000, as both shipped checkpoints were trained)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--test-samples", type=int, default=1000, help="test samples per split for the final report")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(line: str):
        print(line, flush=True)
        lines.append(line)

    try:
        command = "python -m models.train " + " ".join(argv if argv is not None else sys.argv[1:])
        log(f"$ {command}")
        tokenizer = task_tokenizer()
        cfg = task_config(tokenizer.get_vocab_size(with_added_tokens=True), args.projector)
        log(f"{cfg.num_vision_tokens} vision tokens, {args.steps} steps of {IMAGES_PER_STEP} images x "
            f"{QUESTIONS_PER_IMAGE[args.questions]} questions, torch {torch.__version__}, {args.threads} threads")
        vlm = train(cfg, tokenizer, args.steps, args.lr, args.seed, log, args.eval_every,
                    questions=QUESTIONS_PER_IMAGE[args.questions], mix=args.questions)
        batcher = Batcher(tokenizer, cfg)
        report = {}
        for split, n in (("val", VAL_SAMPLES), ("test", args.test_samples)):
            for kind in ("easy", "hard"):
                report[f"{split}_{kind}"] = exact_match(vlm, batcher, samples(split, kind, n))
        log("final exact match: " + "  ".join(f"{k} {v['all']:.3f}" for k, v in report.items()))
        write_model_files(vlm, staging)
        tokenizer.save(str(staging / "tokenizer.json"), pretty=True)
        (staging / "train_log.txt").write_text("\n".join(lines) + "\n")
        (staging / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
