"""Prompt tokenization and streaming detokenization over a `tokenizer.json` (Hugging Face `tokenizers`, no torch).

    tok = PromptTokenizer("build/x/tokenizer.json", manifest["prompt"])
    before, after = tok.encode_prompt("What is this?", with_image=True)
    stream = tok.stream()
    for token in generated: print(stream.push(token), end="")
    print(stream.finish())

`prompt` is the manifest's prompt section: {"before_image", "after_image" (contains "{prompt}"),
"stop_tokens", "image_token"}. The prompt is split around the image as LLaVA's `tokenizer_image_token`
does: each piece is tokenized on its own, and only the first piece gets the tokenizer's post-processor
(so a LLaMA BOS appears once, and Qwen2 adds none). Without an image, before_image + after_image is one
piece, returned in `after_ids` with `before_ids` empty; nothing is removed from the template, so
Qwen2's "user\\n" + "\\n{prompt}" keeps both newlines, as transformers' FastVLM chat template does.
Special-token strings typed inside the user's text are parsed as special tokens (as the reference
processors do). Decoding skips special tokens, as the reference `predict.py` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Tokenizer


class TokenizerError(ValueError):
    """A tokenizer file or prompt template that cannot be used."""


class PromptTokenizer:
    def __init__(self, tokenizer_json_path, prompt: dict):
        path = os.fspath(tokenizer_json_path)
        if not os.path.isfile(path):
            raise TokenizerError(f"{path}: tokenizer file not found")
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # the Rust library raises a plain Exception on malformed JSON
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        self.before_image = prompt.get("before_image", "")
        self.after_image = prompt.get("after_image", "{prompt}")
        if "{prompt}" not in self.after_image:
            raise TokenizerError(f"prompt template after_image must contain '{{prompt}}': {self.after_image!r}")
        self.image_token = prompt.get("image_token", "<image>")
        self.stop_tokens = tuple(prompt.get("stop_tokens", ()))
        ids = [self.tokenizer.token_to_id(t) for t in self.stop_tokens]
        self.stop_ids = tuple(i for i in ids if i is not None)  # stop tokens present in the vocab

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_prompt(self, text: str, with_image: bool = True) -> tuple[list[int], list[int]]:
        """The template filled with `text`: (ids before the image, ids after it)."""
        after = self.after_image.replace("{prompt}", text)
        if not with_image:
            return [], self.encode(self.before_image + after, add_special_tokens=True)
        return self.encode(self.before_image, add_special_tokens=True), self.encode(after)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Text deltas as ids arrive: decodes all ids so far and emits the new suffix.

    A suffix ending in U+FFFD (a character whose bytes have not all arrived) is held back until the
    next id completes it; `finish()` returns whatever is still held. The concatenation of all deltas
    plus `finish()` equals `decode(all ids)`.
    """

    def __init__(self, tokenizer: PromptTokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # emitted so far

    def push(self, ids) -> str:
        """Add one id or a list of ids; return the text that is now complete."""
        if isinstance(ids, Iterable):
            self.ids.extend(int(i) for i in ids)
        else:
            self.ids.append(int(ids))
        text = self.tokenizer.decode(self.ids, self.skip)
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def finish(self) -> str:
        """The rest of the text, incomplete characters included."""
        return self._emit(self.tokenizer.decode(self.ids, self.skip))

    def _emit(self, text: str) -> str:
        common = len(os.path.commonprefix([text, self.text]))  # all of self.text, unless the decoder rewrote it
        delta, self.text = text[common:], text
        return delta
