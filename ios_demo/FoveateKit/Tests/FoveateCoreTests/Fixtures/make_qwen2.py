"""Writes qwen2.json beside this file: a tokenizer.json in Qwen2's form (NFC normalizer, the Split regex, a
ByteLevel pre-tokenizer without its own regex, ByteLevel decoder; the byte-level vocabulary of the tiny
default model) with what Hugging Face tokenizers encodes and decodes. Run from the repository root:
    python ios_demo/FoveateKit/Tests/FoveateCoreTests/Fixtures/make_qwen2.py
"""
import json
from pathlib import Path

import tokenizers
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")
TEXTS = ["Hello world", "It's 2024!  Don'T stop", "a\n\nb \n c", "tabs\t\tand  spaces   end   ", "x+=1;\r\ny",
         "héllo cafe\u0301 naïve", "猫が好き 123", "emoji 🙂👍🏽!", "<|im_start|>user\nHi<|im_end|>", " 'S 'll 'LL", ""]

here = Path(__file__).parent
tok = Tokenizer.from_file("checkpoints/foveate-tiny/tokenizer.json")
tok.normalizer = normalizers.NFC()
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
encode = [{"text": t, "ids": tok.encode(t).ids} for t in TEXTS]
decode = [{"ids": e["ids"], "text": tok.decode(e["ids"], skip_special_tokens=False)} for e in encode]
out = {"generator": "tokenizers " + tokenizers.__version__, "json": json.loads(tok.to_str()), "encode": encode,
       "decode": decode}
(here / "qwen2.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
