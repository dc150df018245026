"""The KV capacity, counted once: a conversation generates up to the cache's last row on every runnable
target (and through ExecuTorch's stock MultimodalRunner on a dense .pte), and one row past it is refused
with the runtime's own one-line error, never a failure inside a graph."""

import pytest

from models.protocol import KVLayout
from runtime.image import preprocess
from runtime.manifest import BuildError, load_manifest
from runtime.pipeline import Pipeline

ROOM = 3  # cache rows left after the prompt


def long_prompt(pipe: Pipeline, rows_left: int) -> tuple[list[int], list[int]]:
    """(before, after) ids of a prompt with an image that leaves `rows_left` rows of the text cache."""
    before, after = pipe.tokenizer.encode_prompt("Is there a red shape?", with_image=True)
    n_after = pipe.kv.text_rows - rows_left - pipe.kv.image_slots - len(before)
    return before, after[:1] * (n_after - len(after)) + after


@pytest.mark.slow
@pytest.mark.parametrize("target,plan,memory", [("onnx", "dense", None), ("onnx", "mixed", None),
                                                ("executorch", "dense", "shared"), ("executorch", "mixed", "shared"),
                                                ("executorch", "mixed", "per-method")])
def test_generates_to_the_last_row_and_refuses_one_past(builds, target, plan, memory):
    build = builds.get(target, plan)
    pipe = Pipeline(build, **({"memory": memory} if memory else {}))
    pixels = preprocess(build / "golden" / "case0.png", pipe.manifest["image"])
    before, after = long_prompt(pipe, ROOM)
    ids, _, _ = pipe.run_ids(before, pixels, after, max_new_tokens=50)
    assert len(ids) == ROOM + 1  # ROOM tokens fed back into the last rows, and the one picked after them
    reference = Pipeline(build, backend="torch").run_ids(before, pixels, after, max_new_tokens=50)[0]
    assert ids == reference
    kv = pipe.kv
    last = pipe.backend.embed([ids[-1]])
    with pytest.raises(BuildError, match=f"at slot {kv.text_rows} does not fit the KV cache of {kv.text_rows} rows"):
        pipe.backend.text(last, kv.max_context, kv.text_rows, False)
    with pytest.raises(BuildError, match="does not fit the KV capacity"):  # a prompt that leaves no row
        pipe.run_ids(*long_prompt(pipe, 0)[:1], pixels, long_prompt(pipe, 0)[1], max_new_tokens=1)


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["dense", "mixed"])
def test_pte_reports_the_context_its_cache_holds(builds, plan):
    """get_max_seq_len / get_max_context_len of the .pte equal the manifest's max_context, which is the
    text cache's rows plus, in the split layout, the image's vision K/V rows."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    build = builds.get("executorch", plan)
    manifest = load_manifest(build)
    kv = KVLayout.from_dict(manifest["kv"])
    module = _load_for_executorch(str(build / "model.pte"))
    for name in ("get_max_seq_len", "get_max_context_len"):
        assert int(module.run_method(name, ())[0]) == kv.max_context
    assert kv.max_context == kv.text_rows + (kv.vision_tokens if kv.layout == "split" else 0)
    text_rows = manifest["graphs"]["methods"]["text_decoder"]
    assert kv.text_kv_shape()[2] == kv.text_rows
    if plan == "dense":  # the shared cache holds the image's rows too
        config = manifest["model"]["config"]
        assert kv.text_rows == config["decoder"]["max_seq_len"] + kv.vision_tokens
        assert [t["name"] for t in text_rows["inputs"]] == ["embeds", "input_pos"]


@pytest.mark.slow
def test_stock_runner_generates_to_the_last_row(builds, tmp_path):
    """ExecuTorch's own MultimodalRunner on the dense .pte trusts get_max_seq_len: it decodes until the
    position reaches it (one token fewer than foveate's runtime, which also picks a token after the last
    row is filled), with the same tokens, and refuses a prompt that leaves no room. With the capacity counted
    twice (get_max_seq_len past the cache's rows) it decoded into rows the cache does not have."""
    import re

    import torch
    from executorch.extension.llm.runner import GenerationConfig, MultimodalRunner, make_image_input, make_token_input
    from tokenizers import Tokenizer, models

    build = builds.get("executorch", "dense")
    pipe = Pipeline(build)
    pixels = preprocess(build / "golden" / "case0.png", pipe.manifest["image"])
    before, after = long_prompt(pipe, ROOM)
    ours = pipe.run_ids(before, pixels, after, max_new_tokens=50)[0]
    vocab = pipe.manifest["model"]["config"]["decoder"]["vocab_size"]
    spelled = Tokenizer(models.BPE({f"<t{i}>": i for i in range(vocab)}, merges=[]))  # id i reads "<ti>"
    spelled.save(str(tmp_path / "tokenizer.json"))
    runner = MultimodalRunner(str(build / "model.pte"), str(tmp_path / "tokenizer.json"))

    def stock(before, after, new):
        pieces = []
        runner.generate([make_token_input(before), make_image_input(torch.from_numpy(pixels)),
                         make_token_input(after)], GenerationConfig(max_new_tokens=new, temperature=0.0, echo=False),
                        token_callback=pieces.append)
        return [int(i) for i in re.findall(r"<t(\d+)>", "".join(pieces))]

    assert stock(before, after, 50) == ours[:ROOM]
    with pytest.raises(RuntimeError):
        stock(*long_prompt(pipe, 0), 4)
