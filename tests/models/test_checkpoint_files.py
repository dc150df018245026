"""models/checkpoint_files.py: a transformers FastVLM's input size from what its files say (or a refusal),
and tokenizers converted from a SentencePiece tokenizer.model and from a Qwen2 vocab.json + merges.txt.

Oracles: transformers' FastVlmForConditionalGeneration at the derived size; SentencePiece itself (which the
slow LlamaTokenizer MobileVLM loads wraps); the slow Qwen2Tokenizer's algorithm (NFC, split regex, byte-level
BPE by merge rank), written out below. Every converted file is read the way the runtime reads it
(runtime/tokenizer.py), and the prompt templates are rendered as the authors' conversation code renders them.
"""

import io
import json
import random
import shutil
import unicodedata

import pytest
import regex
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from models.checkpoint import CheckpointError, load_config, load_model
from models.checkpoint_files import convert_tokenizer
from models.config import LLAVA_V1_PROMPT, QWEN2_PROMPT
from runtime.tokenizer import PromptTokenizer
from tests.models.test_checkpoint import check_against_fastvlm, hf_fastvlm, write_preprocessor

# ------------------------------------------------------------------------------ FastVLM input size


@pytest.fixture(scope="module")
def hf_256(tmp_path_factory):
    """A transformers-layout FastVLM saved as transformers saves it, for 256 px at stride 32: 8 x 8 tokens."""
    hf = hf_fastvlm(tied=True, image_seq_length=64, seed=4)
    path = tmp_path_factory.mktemp("fastvlm") / "ckpt"
    hf.save_pretrained(path)
    assert not (path / "preprocessor_config.json").exists()
    return hf, path


def copy_with(path, tmp_path, **config):
    """A copy of checkpoint `path` whose config.json has the given fields (None: removed)."""
    out = tmp_path / "ckpt"
    shutil.copytree(path, out)
    raw = json.loads((out / "config.json").read_text())
    raw.update(config)
    (out / "config.json").write_text(json.dumps({k: v for k, v in raw.items() if v is not None}))
    return out


def test_size_comes_from_image_seq_length_without_a_preprocessor_config(hf_256):
    hf, path = hf_256
    model = load_model(path, max_seq_len=96)
    assert (model.cfg.vision.image_size, model.cfg.num_vision_tokens) == (256, 64)
    check_against_fastvlm(model, hf, 256, n_decode=1)


def test_no_size_anywhere_is_refused_in_one_line(hf_256, tmp_path):
    path = copy_with(hf_256[1], tmp_path, image_seq_length=None)
    with pytest.raises(CheckpointError) as e:
        load_config(path)
    message = str(e.value)
    assert "\n" not in message and "preprocessor_config.json" in message and "--image-size" in message
    assert load_config(path, image_size=192).vision.image_size == 192
    with pytest.raises(CheckpointError, match="multiple of the encoder stride 32"):
        load_config(path, image_size=200)


def test_files_that_disagree_or_a_non_square_grid_are_refused(hf_256, tmp_path):
    path = copy_with(hf_256[1], tmp_path)
    write_preprocessor(path, 128)  # 128 px is 16 tokens; config.json says 64
    with pytest.raises(CheckpointError, match=r"preprocessor_config.json crop_size gives 128 px, config.json "
                                              r"image_seq_length 64 \(at stride 32\) gives 256 px.*--image-size"):
        load_config(path)
    assert load_config(path, image_size=128).vision.image_size == 128
    write_preprocessor(path, 256)
    assert load_config(path).num_vision_tokens == 64
    assert load_config(path, image_size=128).vision.image_size == 256  # the files agree: theirs stands
    (path / "preprocessor_config.json").unlink()
    (path / "config.json").write_text(json.dumps({**json.loads((path / "config.json").read_text()),
                                                  "image_seq_length": 60}))
    with pytest.raises(CheckpointError, match="image_seq_length 60 is not a square number"):
        load_config(path)


# ----------------------------------------------------------------------------- SentencePiece (LLaMA)

WORDS = ("the a model image answer question square circle colour red green blue small large left right "
         "how many what which is are there two three four café déjà vu 2024 12.5 user assistant chat").split()
# MobileVLM's conversation "v1" (conv_vicuna_v1), as its get_prompt renders one user turn with an image
V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
             "helpful, detailed, and polite answers to the user's questions.")
TEXTS = ["What colour is the square?", "hello world", " leading space", "two  spaces   three", "trailing ",
         "line\nbreak\ttab", "12345 + 6.78", "café naïve 東京", "emoji 🙂👍 done", "ŝ ĝ ĥ", "", " ", "\n",
         "cat</s> dog <s>x<unk>"]


def training_text(n=400, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) + rng.choice([" ", " ", ", ", ". "]) for _ in range(rng.randint(3, 12)))
            for _ in range(n)]


def train_sentencepiece(out_dir, **options):
    """A LLaMA-like SentencePiece BPE (identity normalization, spaces kept, digits split, byte fallback)."""
    buf = io.BytesIO()
    settings = dict(model_type="bpe", vocab_size=320, byte_fallback=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
                    character_coverage=1.0, minloglevel=2)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(training_text()), model_writer=buf,
                                   **{**settings, **options})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(buf.getvalue())
    return spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))


def llama_slow_ids(sp, text, bos=True):
    """The slow LlamaTokenizer: special-token strings are split out, each other piece is SentencePiece's."""
    specials = {"<unk>": sp.unk_id(), "<s>": sp.bos_id(), "</s>": sp.eos_id()}
    ids = [sp.bos_id()] if bos else []
    for piece in regex.split("(<unk>|<s>|</s>)", text):
        ids += [specials[piece]] if piece in specials else sp.encode(piece) if piece else []
    return ids


def runtime_tokenizer(tok, tmp_path, prompt):
    tok.save(str(tmp_path / "tokenizer.json"))
    return PromptTokenizer(tmp_path / "tokenizer.json", prompt)


def prompt_dict(p):
    return {"before_image": p.before_image, "after_image": p.after_image, "stop_tokens": list(p.stop_tokens)}


def random_texts(pool, n=400, seed=1):
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mobilevlm")
    sp = train_sentencepiece(path)
    assert sp.encode("東京🙂", out_type=str)[1:] == ["<0xE6>", "<0x9D>", "<0xB1>", "<0xE4>", "<0xBA>", "<0xAC>",
                                                    "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # not in the text
    return path, sp


def test_sentencepiece_conversion_encodes_as_sentencepiece(spm_dir, tmp_path):
    path, sp = spm_dir
    tok = runtime_tokenizer(convert_tokenizer(path), tmp_path, prompt_dict(LLAVA_V1_PROMPT))
    pool = list(" ".join(WORDS)) + list("  \n\tXYZ東京🙂ñ€") + ["</s>"]
    for text in TEXTS + random_texts(pool):
        assert tok.encode(text) == llama_slow_ids(sp, text, bos=False), text
        assert tok.encode(text, add_special_tokens=True) == llama_slow_ids(sp, text), text
        if "<" not in text:
            assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)), text
    assert tok.stop_ids == (sp.eos_id(),)


@pytest.mark.parametrize("question", ["What colour is the square?", "  two spaces, café 東京 🙂"])
def test_sentencepiece_prompt_renders_as_mobilevlm(spm_dir, tmp_path, question):
    """LLaVA's tokenizer_image_token on conv_vicuna_v1: split at <image>, each chunk through the slow
    tokenizer, the BOS kept once (the first chunk's)."""
    path, sp = spm_dir
    tok = runtime_tokenizer(convert_tokenizer(path), tmp_path, prompt_dict(LLAVA_V1_PROMPT))
    rendered = f"{V1_SYSTEM} USER: <image>\n{question} ASSISTANT:"
    first, second = rendered.split("<image>")
    assert tok.encode_prompt(question) == (llama_slow_ids(sp, first), llama_slow_ids(sp, second, bos=False))


def test_tokenizer_config_flags_and_added_tokens(spm_dir, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(spm_dir[0], path)
    sp = spm_dir[1]
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": True,
        "added_tokens_decoder": {"320": {"content": "<image>", "special": True, "normalized": False}}}))
    tok = convert_tokenizer(path)
    assert tok.encode("hi <image>").ids == sp.encode("hi ") + [320, sp.eos_id()]
    (path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        "400": {"content": "<image>", "special": True}}}))
    with pytest.raises(CheckpointError, match="'<image>' has id 400, but the converted vocabulary gives it 320"):
        convert_tokenizer(path)


@pytest.mark.parametrize("options, refusal", [
    ({"normalization_rule_name": "nmt_nfkc"}, "normalization rule 'nmt_nfkc'"),
    ({"model_type": "unigram"}, "model_type 1 .only BPE"),
    ({"remove_extra_whitespaces": True}, "remove_extra_whitespaces")])
def test_sentencepiece_models_it_cannot_reproduce_are_refused(tmp_path, options, refusal):
    train_sentencepiece(tmp_path, **options)
    with pytest.raises(CheckpointError, match=refusal):
        convert_tokenizer(tmp_path)


# ------------------------------------------------------------------------------------- Qwen2 BPE

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ml-fastvlm's conversation "qwen_2" (the default in predict.py) for one user turn with an image
QWEN2_RENDERED = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
                  "{q}<|im_end|>\n<|im_start|>assistant\n")


def byte_chars():
    """GPT-2's reversible byte -> printable character table."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


class SlowQwen2:
    """The slow Qwen2Tokenizer: split out added tokens, NFC, the split regex, byte-level BPE by merge rank."""

    def __init__(self, path):
        self.vocab = json.loads((path / "vocab.json").read_text())
        lines = (path / "merges.txt").read_text().splitlines()
        self.ranks = {tuple(line.split(" ")): i for i, line in enumerate(lines[1:])}
        self.bytes = byte_chars()
        self.special = {t: len(self.vocab) + i for i, t in enumerate(QWEN2_SPECIALS)}

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            rank, i = min((self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            a, b, out, j = parts[i], parts[i + 1], [], 0
            while j < len(parts):
                if parts[j:j + 2] == [a, b]:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        return parts

    def encode(self, text):
        ids = []
        for piece in regex.split("(" + "|".join(map(regex.escape, self.special)) + ")", text):
            if piece in self.special:
                ids.append(self.special[piece])
                continue
            for word in regex.findall(QWEN2_SPLIT, unicodedata.normalize("NFC", piece)):
                ids += [self.vocab[p] for p in self.bpe("".join(self.bytes[b] for b in word.encode()))]
        return ids


def write_qwen2_files(path, added="decoder"):
    """A small byte-level BPE trained on the test text, saved as vocab.json + merges.txt, with Qwen2's
    three added tokens after it, spelled as tokenizer_config.json or as added_tokens.json."""
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), "isolated"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.train_from_iterator(training_text(), trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    path.mkdir(parents=True, exist_ok=True)
    t.model.save(str(path))
    n = len(json.loads((path / "vocab.json").read_text()))
    ids = {t: n + i for i, t in enumerate(QWEN2_SPECIALS)}
    if added == "decoder":
        decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True} for t, i in ids.items()}
        (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer",
                                                                "added_tokens_decoder": decoder}))
    else:
        (path / "added_tokens.json").write_text(json.dumps(ids))
        (path / "special_tokens_map.json").write_text(json.dumps({
            "eos_token": {"content": "<|endoftext|>"}, "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}))
    return path


@pytest.mark.parametrize("added", ["decoder", "added_tokens.json"])
def test_qwen2_conversion_encodes_as_the_slow_tokenizer(tmp_path, added):
    path = write_qwen2_files(tmp_path / "ckpt", added)
    slow = SlowQwen2(path)
    tok = runtime_tokenizer(convert_tokenizer(path), tmp_path, prompt_dict(QWEN2_PROMPT))
    pool = list(" ".join(WORDS)) + list("  \n\r\tXYZ東京🙂ñ€'") + ["e\u0301", "<|im_end|>", "'s", "'LL"]
    for text in TEXTS + random_texts(pool):
        assert tok.encode(text) == slow.encode(text) == tok.encode(text, add_special_tokens=True), text
        if "<|" not in text:
            assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text), text
    assert tok.stop_ids == (slow.special["<|im_end|>"], slow.special["<|endoftext|>"])
    assert tok.decode(slow.encode("<|im_start|>hi<|im_end|>")) == "hi"  # added tokens are special


@pytest.mark.parametrize("question", ["What colour is the square?", "café 東京 🙂 it's"])
def test_qwen2_prompt_renders_as_fastvlm(tmp_path, question):
    """ml-fastvlm's tokenizer_image_token on conv qwen_2: split at <image>, each chunk through the slow
    tokenizer; Qwen2 adds no BOS."""
    path = write_qwen2_files(tmp_path / "ckpt")
    slow = SlowQwen2(path)
    tok = runtime_tokenizer(convert_tokenizer(path), tmp_path, prompt_dict(QWEN2_PROMPT))
    first, second = QWEN2_RENDERED.format(q=question).split("<image>")
    assert tok.encode_prompt(question) == (slow.encode(first), slow.encode(second))


def test_what_cannot_be_converted_is_refused(tmp_path):
    assert convert_tokenizer(write_qwen2_files(tmp_path / "q")) is not None
    (tmp_path / "q" / "tokenizer.json").write_text("{}")
    assert convert_tokenizer(tmp_path / "q") is None  # a tokenizer.json is used as it is
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no tokenizer: expected tokenizer.json, tokenizer.model"):
        convert_tokenizer(tmp_path / "empty")
    path = write_qwen2_files(tmp_path / "gpt2")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    with pytest.raises(CheckpointError, match="tokenizer_class 'GPT2Tokenizer' is not converted"):
        convert_tokenizer(path)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(CheckpointError, match="LlamaTokenizer needs tokenizer.model"):
        convert_tokenizer(path)
    (path / "tokenizer_config.json").unlink()
    (path / "merges.txt").write_text("#version: 0.2\nzz qq\n")
    with pytest.raises(CheckpointError, match="do not make a BPE"):
        convert_tokenizer(path)
    (path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        convert_tokenizer(path)


def test_badly_spelled_added_tokens_are_refused(tmp_path):
    path = write_qwen2_files(tmp_path / "q")
    (path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"x": {"content": "<a>"}}}))
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json: added tokens not spelled as id -> token"):
        convert_tokenizer(path)
    (path / "tokenizer_config.json").unlink()
    (path / "added_tokens.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"added_tokens.json: added tokens not spelled"):
        convert_tokenizer(path)
