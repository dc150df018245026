"""What a checkpoint directory says besides config.json and its weights: the input size of a transformers
FastVLM, and the tokenizer, converted when the release carries no `tokenizer.json`.

    side = fast_vlm_image_size(path, raw_config, stride=64, image_size=None)
    tok = convert_tokenizer("checkpoints/MobileVLM_V2-1.7B")  # a tokenizers.Tokenizer; None: has tokenizer.json
    tok.save("tokenizer.json")

Tokenizers (facts from the released checkpoints and their authors' code):
  tokenizer.model        MobileVLM V2's SentencePiece BPE, which its code reads with the slow LlamaTokenizer.
                         Converted to the LLaMA tokenizer.json form: normalizer Prepend("▁") + Replace(" ", "▁"),
                         no pre-tokenizer, BPE with byte_fallback, decoder Replace/ByteFallback/Fuse/Strip, post-
                         processor "<s> $A". This encodes each text piece as SentencePiece itself does.
  vocab.json+merges.txt  the original FastVLM release's Qwen2 byte-level BPE (slow Qwen2Tokenizer): transformers'
                         Qwen2Converter (NFC, Qwen2's split regex, ByteLevel).
Added tokens come from tokenizer_config.json's `added_tokens_decoder`, else added_tokens.json (special when
special_tokens_map.json names them); each must keep the id the release gives it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

SPIECE_SPACE = "▁"
KNOWN_TOKENIZER_CLASSES = {"LlamaTokenizer": "sentencepiece", "LlamaTokenizerFast": "sentencepiece",
                           "Qwen2Tokenizer": "qwen2", "Qwen2TokenizerFast": "qwen2"}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message says which file and what is wrong."""


def read_json(file: Path, hint: str = ""):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e}){hint}") from None


# ---------------------------------------------------------------------------- image size (fast_vlm)

def fast_vlm_image_size(path: Path, raw: dict, stride: int, image_size: int | None) -> int:
    """The input side of a transformers FastVLM: preprocessor_config.json's crop_size, or config.json's
    `image_seq_length` (a square grid of tokens at the tower's `stride`). `image_size` is used when the
    files say nothing or disagree; without it those cases are refused, never guessed."""
    said = {}
    proc_file = path / "preprocessor_config.json"
    if proc_file.is_file():
        proc = read_json(proc_file)
        crop = proc.get("crop_size") if isinstance(proc, dict) else None
        if isinstance(crop, dict):
            if crop.get("height") != crop.get("width"):
                raise CheckpointError(f"{proc_file}: crop_size {crop} is not square")
            crop = crop.get("height")
        if crop is not None:
            if not isinstance(crop, int) or crop <= 0:
                raise CheckpointError(f"{proc_file}: crop_size {crop!r} is not a size in pixels")
            said[f"{proc_file.name} crop_size"] = crop
    seq = raw.get("image_seq_length")
    if seq is not None:
        side = math.isqrt(seq) if isinstance(seq, int) and seq > 0 else -1
        if side * side == seq:
            said[f"config.json image_seq_length {seq} (at stride {stride})"] = side * stride
        elif image_size is None:
            raise CheckpointError(f"{path / 'config.json'}: image_seq_length {seq!r} is not a square number of "
                                  "tokens; give the input size with --image-size")
    sizes = set(said.values())
    if image_size is not None:
        if image_size <= 0 or image_size % stride:
            raise CheckpointError(f"image size {image_size}: not a positive multiple of the encoder stride {stride}")
        if len(sizes) != 1:
            return image_size
    if len(sizes) == 1:
        size = sizes.pop()
        if size % stride:
            raise CheckpointError(f"{path}: {' and '.join(said)} gives {size} px, not a multiple of the encoder "
                                  f"stride {stride}")
        return size
    if not said:
        raise CheckpointError(f"{path}: input size unknown: no {proc_file.name} and no image_seq_length in "
                              "config.json; give it with --image-size")
    told = ", ".join(f"{k} gives {v} px" for k, v in said.items())
    raise CheckpointError(f"{path}: input size ambiguous: {told}; give it with --image-size")


# ------------------------------------------------------------------------------------ tokenizers

def convert_tokenizer(path):
    """The checkpoint's tokenizer as a `tokenizers.Tokenizer`, converted from tokenizer.model or
    vocab.json + merges.txt; None when the directory has a tokenizer.json (use that file as it is)."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return None
    config_file = path / "tokenizer_config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    kind = _tokenizer_kind(path, config)
    tok = _from_sentencepiece(path, config) if kind == "sentencepiece" else _from_vocab_merges(path)
    _add_tokens(tok, path, config)
    return tok


def _tokenizer_kind(path: Path, config: dict) -> str:
    has_spm = (path / "tokenizer.model").is_file()
    has_bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    cls = config.get("tokenizer_class")
    if cls is not None:
        if cls not in KNOWN_TOKENIZER_CLASSES:
            raise CheckpointError(f"{path / 'tokenizer_config.json'}: tokenizer_class {cls!r} is not converted; "
                                  f"known: {', '.join(sorted(KNOWN_TOKENIZER_CLASSES))} (or ship a tokenizer.json)")
        kind = KNOWN_TOKENIZER_CLASSES[cls]
        if has_bpe if kind == "qwen2" else has_spm:
            return kind
        needs = "tokenizer.model" if kind == "sentencepiece" else "vocab.json and merges.txt"
        raise CheckpointError(f"{path}: tokenizer_class {cls} needs {needs}, not found")
    if has_spm:
        return "sentencepiece"
    if has_bpe:
        return "qwen2"
    raise CheckpointError(f"{path}: no tokenizer: expected tokenizer.json, tokenizer.model (SentencePiece) "
                          "or vocab.json + merges.txt (Qwen2)")


def _from_sentencepiece(path: Path, config: dict):
    from google.protobuf.message import DecodeError
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    file = path / "tokenizer.model"
    try:
        extractor = SentencePieceExtractor(str(file))
    except DecodeError as e:
        raise CheckpointError(f"{file}: not a SentencePiece model ({e})") from None
    trainer, norm = extractor.proto.trainer_spec, extractor.proto.normalizer_spec
    refusals = [(trainer.model_type != 2, f"model_type {trainer.model_type} (only BPE, LLaMA's kind)"),
                (bool(norm.precompiled_charsmap), f"normalization rule {norm.name!r} (only 'identity', LLaMA's)"),
                (norm.remove_extra_whitespaces, "remove_extra_whitespaces (LLaMA keeps every space)"),
                (trainer.treat_whitespace_as_suffix, "treat_whitespace_as_suffix")]
    refused = [why for bad, why in refusals if bad]
    if refused:
        raise CheckpointError(f"{file}: cannot convert a SentencePiece model with {'; '.join(refused)}")
    kw = extractor.extract(BPE)  # vocab in piece order, merges ranked by piece id
    tok = Tokenizer(BPE(kw["vocab"], kw["merges"], unk_token=trainer.unk_piece, fuse_unk=True,
                        byte_fallback=trainer.byte_fallback, dropout=None))
    prefix = [normalizers.Prepend(SPIECE_SPACE)] if norm.add_dummy_prefix else []
    tok.normalizer = normalizers.Sequence(prefix + [normalizers.Replace(" ", SPIECE_SPACE)])
    strip = [decoders.Strip(" ", 1, 0)] if norm.add_dummy_prefix else []
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + strip)
    pieces = extractor.proto.pieces  # unknown (2) and control (3) pieces are special; user-defined (4) are not
    tok.add_special_tokens([_added(p.piece, special=True) for p in pieces if p.type in (2, 3)])
    tok.add_tokens([_added(p.piece, special=False, normalized=False) for p in pieces if p.type == 4])
    tok.post_processor = _bos_eos(tok, file, trainer, config)
    return tok


def _from_vocab_merges(path: Path):
    from transformers.convert_slow_tokenizer import Qwen2Converter

    vocab = read_json(path / "vocab.json")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise CheckpointError(f"{path / 'vocab.json'}: expected an object of token -> id")
    merges = []
    try:
        lines = (path / "merges.txt").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path / 'merges.txt'}: not UTF-8 text ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise CheckpointError(f"{path / 'merges.txt'}:{n}: expected two tokens, got {line!r}")
        merges.append(tuple(pair))
    try:
        return Qwen2Converter(None).converted(vocab, merges)
    except Exception as e:  # the Rust library raises a plain Exception, e.g. for a merge of unknown tokens
        raise CheckpointError(f"{path}: vocab.json and merges.txt do not make a BPE ({e})") from None


def _added(content: str, special: bool, **flags):
    from tokenizers import AddedToken

    return AddedToken(content, special=special, normalized=flags.get("normalized", not special),
                      lstrip=flags.get("lstrip", False), rstrip=flags.get("rstrip", False),
                      single_word=flags.get("single_word", False))


def _add_tokens(tok, path: Path, config: dict) -> None:
    """The release's added tokens, in id order, each checked to land on its own id."""
    decoder = config.get("added_tokens_decoder")
    where = path / ("tokenizer_config.json" if decoder else "added_tokens.json")
    try:
        if decoder:
            entries = sorted((int(i), t["content"], bool(t.get("special")), t) for i, t in decoder.items())
        elif where.is_file():
            specials = _special_token_names(path)
            entries = sorted((int(i), c, c in specials, {}) for c, i in read_json(where).items())
        else:
            return
    except CheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: added tokens not spelled as id -> token ({type(e).__name__}: {e})") from None
    for want, content, special, flags in entries:
        token = _added(content, special, **{k: v for k, v in flags.items() if k != "special" and k != "content"})
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        got = tok.token_to_id(content)
        if got != want:
            raise CheckpointError(f"{where}: added token {content!r} has id {want}, but the converted vocabulary "
                                  f"gives it {got}")


def _special_token_names(path: Path) -> set:
    file = path / "special_tokens_map.json"
    names = set()
    for value in (read_json(file) if file.is_file() else {}).values():
        for v in value if isinstance(value, list) else [value]:
            names.add(v["content"] if isinstance(v, dict) else v)
    return names


def _bos_eos(tok, file: Path, trainer, config: dict):
    """LLaMA's post-processor: BOS before each sequence unless add_bos_token is false, EOS after it when
    add_eos_token is true (LlamaTokenizer's defaults)."""
    from tokenizers import processors

    ends = []
    for flag, default, piece, piece_id in (("add_bos_token", True, trainer.bos_piece, trainer.bos_id),
                                           ("add_eos_token", False, trainer.eos_piece, trainer.eos_id)):
        wanted = config.get(flag, default)
        if wanted and piece_id < 0:
            raise CheckpointError(f"{file}: {flag} is set but the model has no {piece} piece")
        ends.append(piece if wanted else None)
    bos, eos = ends
    single = " ".join(filter(None, [bos and f"{bos}:0", "$A:0", eos and f"{eos}:0"]))
    pair = " ".join(filter(None, [single, bos and f"{bos}:1", "$B:1", eos and f"{eos}:1"]))
    special = [(t, tok.token_to_id(t)) for t in (bos, eos) if t]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def resized_config(cfg, image_size: int):
    """cfg with its encoder at `image_size` px, refused when the stride, the projector's grid or the
    encoder's weights (a CLIP's position embeddings) do not allow that size."""
    import torch

    from models.vlm import VLM

    if image_size == cfg.vision.image_size:
        return cfg
    if image_size <= 0 or image_size % cfg.vision.stride:
        raise CheckpointError(f"--image-size {image_size} must be a positive multiple of the encoder stride "
                              f"{cfg.vision.stride}")
    resized = cfg.replace(vision={"image_size": image_size})
    if resized.vision.grid % resized.projector.reduction:
        raise CheckpointError(f"--image-size {image_size} gives a {resized.vision.grid}x{resized.vision.grid} "
                              f"grid, not divisible by the projector's {resized.projector.reduction}")
    with torch.device("meta"):  # shapes only: no memory, no weights
        have, want = (VLM(c).state_dict() for c in (cfg, resized))
    for name, t in have.items():
        if want[name].shape != t.shape:
            raise CheckpointError(f"--image-size {image_size} does not fit this encoder's weights: {name} is "
                                  f"{tuple(t.shape)} at {cfg.vision.image_size} px, {tuple(want[name].shape)} "
                                  f"would be needed")
    return resized
