"""Train the small byte-level BPE tokenizers foveate ships, with Hugging Face `tokenizers`.

Byte-level, so any user text still tokenizes; the special tokens come first (ids 0..n-1) so a
model's stop and image ids do not depend on the corpus. Training is deterministic for a fixed corpus.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def train_bpe(texts: list[str], vocab_size: int, special_tokens=SPECIAL_TOKENS) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok
