"""Writes sentencepiece.json beside this file: two SentencePiece-style
tokenizer.json files (LLaMA's normalizer form and the Metaspace form) with what Hugging Face tokenizers
encodes and decodes, so the Swift port's SentencePiece path is checked without a download."""
import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, decoders, processors, pre_tokenizers

chars = list("▁helowrdatcnsiu.,!?") + ["é"]
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab[f"<0x{b:02X}>"] = len(vocab)
for c in chars:
    vocab.setdefault(c, len(vocab))
merges = [("▁", "h"), ("e", "l"), ("el", "l"), ("▁h", "ell"), ("▁hell", "o"), ("▁", "w"), ("o", "r"), ("▁w", "or"),
          ("l", "d"), ("▁wor", "ld"), ("▁", "a"), ("▁", "c"), ("a", "t"), ("▁c", "at"), ("▁", "▁")]
for a, b in merges:
    vocab.setdefault(a + b, len(vocab))


def llama(kind):
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if kind == "normalizer":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first")])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


TEXTS = ["hello world", "hello  world", " hello", "a cat", "héllo", "猫 cat", "hello\nworld", "<s>hello</s> cat",
         "cat</s>", "x€y", "", "   "]
out = {"generator": "tokenizers " + __import__("tokenizers").__version__, "tokenizers": []}
for kind in ("normalizer", "metaspace"):
    tok = llama(kind)
    enc, dec = [], []
    for t in TEXTS:
        for add in (False, True):
            enc.append({"text": t, "add_special_tokens": add, "ids": tok.encode(t, add_special_tokens=add).ids})
        ids = tok.encode(t, add_special_tokens=True).ids
        for cut in (ids, ids[:-1]):
            for skip in (True, False):
                dec.append({"ids": cut, "skip_special_tokens": skip, "text": tok.decode(cut, skip_special_tokens=skip)})
    out["tokenizers"].append({"kind": kind, "json": json.loads(tok.to_str()), "encode": enc, "decode": dec})
(Path(__file__).parent / "sentencepiece.json").write_text(json.dumps(out, ensure_ascii=False, indent=1))
