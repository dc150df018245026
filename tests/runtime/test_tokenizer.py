"""runtime/tokenizer.py: prompt split around the image, special tokens as single ids, stop ids, streaming text."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from runtime.tokenizer import PromptTokenizer, StreamDecoder, TokenizerError

TOKENIZER = Path(__file__).resolve().parents[2] / "checkpoints" / "foveate-tiny-random" / "tokenizer.json"
QWEN2 = {"before_image": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
         "after_image": "\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
         "stop_tokens": ["<|im_end|>", "<|endoftext|>", "</s>"], "image_token": "<image>"}
TEXTS = ["What colour is the square?", "How many circles are there?  Two.\n", "héllo 猫 🙂 {prompt} {}", ""]


@pytest.fixture(scope="module")
def tok():
    return PromptTokenizer(TOKENIZER, QWEN2)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    before, after = tok.encode_prompt(text, with_image=True)
    filled = QWEN2["before_image"] + QWEN2["after_image"].replace("{prompt}", text)
    assert tok.decode(before + after, skip_special_tokens=False) == filled


def test_template_special_tokens_are_single_ids(tok):
    start, end = tok.tokenizer.token_to_id("<|im_start|>"), tok.tokenizer.token_to_id("<|im_end|>")
    before, after = tok.encode_prompt("What colour is the square?", with_image=True)
    assert before[0] == start and before.count(start) == 2 and before.count(end) == 1
    assert after.count(end) == 1 and after.count(start) == 1
    assert tok.decode(after[after.index(start) + 1:]) == "assistant\n"
    assert tok.encode("<image>") == [tok.tokenizer.token_to_id("<image>")]


def test_without_image_the_whole_template_is_one_piece(tok):
    before, after = tok.encode_prompt("Hi", with_image=False)
    assert before == [] and after == tok.encode(QWEN2["before_image"] + QWEN2["after_image"].replace("{prompt}", "Hi"))


def test_stop_ids_resolved_and_absent_ones_dropped(tok):
    ids = tok.tokenizer.get_vocab()
    assert tok.stop_ids == (ids["<|im_end|>"], ids["<|endoftext|>"])  # "</s>" is not in this vocab


def test_post_processor_bos_appears_once(tmp_path):
    vocab = {"<s>": 0, "<unk>": 1, "hello": 2, "world": 3, "\n": 4}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split("\n", "isolated")
    t.add_special_tokens(["<s>"])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    t.save(str(tmp_path / "tokenizer.json"))
    tok = PromptTokenizer(tmp_path / "tokenizer.json", {"before_image": "hello", "after_image": "\n{prompt}"})
    assert tok.encode_prompt("world", with_image=True) == ([0, 2], [4, 3])
    assert tok.encode_prompt("world", with_image=False) == ([], [0, 2, 4, 3])


def test_stream_of_multi_byte_characters(tok):
    ids = tok.encode("猫 🙂 héllo")
    assert len(ids) > 4  # byte tokens: characters span several ids
    stream = tok.stream()
    deltas = [stream.push(i) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + stream.finish() == "猫 🙂 héllo"


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 511), max_size=40), chunk=st.integers(1, 4))
def test_stream_concatenation_equals_decode(tok, ids, chunk):
    stream = StreamDecoder(tok)
    text = "".join(stream.push(ids[i:i + chunk]) for i in range(0, len(ids), chunk)) + stream.finish()
    assert text == tok.decode(ids)


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        PromptTokenizer(tmp_path / "absent.json", QWEN2)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        PromptTokenizer(tmp_path / "bad.json", QWEN2)
    with pytest.raises(TokenizerError, match=r"\{prompt\}"):
        PromptTokenizer(TOKENIZER, {**QWEN2, "after_image": "\nno placeholder"})
