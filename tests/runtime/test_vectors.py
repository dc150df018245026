"""runtime/vectors.py: the vectors the ports are checked against say what the runtime does, checked independently."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

from runtime.image import preprocess
from runtime.manifest import BuildError, load_manifest
from runtime.sampler import Sampler, SplitMix64
from runtime.vectors import VectorsError, decode_array, encode_array, main, write_vectors


@pytest.fixture(scope="module")
def build(builds):
    """Built once per test session (tests/builds.py), shared with the other runtime tests."""
    return builds.get("onnx", "mixed")  # split K/V layout: every graph method is called


@pytest.fixture(scope="module")
def vectors(build, tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors") / "vectors.json"
    assert main(["--build", str(build), "--out", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def _arrays(obj):
    if isinstance(obj, dict):
        if "b64" in obj:
            yield obj
        else:
            for v in obj.values():
                yield from _arrays(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _arrays(v)


@pytest.mark.parametrize("a", [np.arange(12, dtype=np.float32).reshape(3, 4) / 7, np.array([-1, 2**40], np.int64),
                               np.array([[True, False]]), np.zeros((0, 3), np.uint8), np.array(3.5, np.float64),
                               np.arange(6, dtype=">i4").reshape(2, 3)])
def test_array_encoding_round_trips_and_is_little_endian(a):
    d = encode_array(a, "x")
    back = decode_array(json.loads(json.dumps(d)))
    assert d["name"] == "x" and d["shape"] == list(a.shape) and back.shape == a.shape
    assert back.dtype == a.dtype.newbyteorder("=") and np.array_equal(back, a)
    assert d["b64"] == encode_array(a.astype(a.dtype.newbyteorder("<")))["b64"]


def test_array_encoding_bytes():
    assert encode_array(np.array([1], np.int64))["b64"] == "AQAAAAAAAAA="  # 01 00 .. 00: little-endian
    assert encode_array(np.array([1.0], np.float32))["b64"] == "AACAPw=="  # 0x3f800000 as 00 00 80 3f
    assert encode_array(np.array([True, False]))["b64"] == "AQA="
    with pytest.raises(VectorsError):
        encode_array(np.zeros(2, np.float16))


@pytest.mark.slow
def test_every_array_in_the_file_decodes(vectors):
    arrays = list(_arrays(vectors))
    assert len(arrays) > 50
    for d in arrays:
        a = decode_array(d)
        assert list(a.shape) == d["shape"] and a.dtype.name == d["dtype"]
        assert encode_array(a)["b64"] == d["b64"]


@pytest.mark.slow
def test_header(vectors, build):
    manifest = load_manifest(build)
    assert vectors["format"] == 1 and vectors["build"] == manifest["name"]
    assert vectors["manifest_schema_version"] == manifest["schema_version"]


@pytest.mark.slow
def test_tokenizer_cases_equal_the_tokenizers_library(vectors, build):
    lib = Tokenizer.from_file(str(build / "tokenizer.json"))
    t = vectors["tokenizer"]
    texts = {c["text"] for c in t["encode"]}
    assert {"", "<image>"} <= texts and any("🙂" in x for x in texts) and any("猫" in x for x in texts)
    for c in t["encode"]:
        assert c["ids"] == lib.encode(c["text"], add_special_tokens=c["add_special_tokens"]).ids
    special = lib.token_to_id("<|im_start|>")
    assert any(special in c["ids"] for c in t["encode"])  # typed special tokens are single ids
    for c in t["decode"]:
        assert c["text"] == lib.decode(c["ids"], skip_special_tokens=c["skip_special_tokens"])
    assert {c["skip_special_tokens"] for c in t["decode"]} == {True, False}


@pytest.mark.slow
def test_stream_holds_back_a_split_character(vectors, build):
    lib = Tokenizer.from_file(str(build / "tokenizer.json"))
    stream = vectors["tokenizer"]["stream"]
    for c in stream:
        assert len(c["pushes"]) == len(c["ids"])
        assert "".join(c["pushes"]) + c["finish"] == lib.decode(c["ids"], skip_special_tokens=True)
        assert not any("\ufffd" in p for p in c["pushes"])
    split = [c for c in stream if any(lib.decode(c["ids"][:k]).endswith("\ufffd") for k in range(1, len(c["ids"])))]
    assert split, "no stream case splits a multi-byte character"
    for c in split:
        for k in range(1, len(c["ids"])):
            if lib.decode(c["ids"][:k]).endswith("\ufffd"):
                assert c["pushes"][k - 1] == ""  # nothing until the character is complete
        done = "".join(c["pushes"])
        assert any(ord(ch) > 127 for ch in done)


@pytest.mark.slow
def test_prompt_split(vectors, build):
    manifest = load_manifest(build)
    p = vectors["prompt"]
    assert p["template"]["before_image"] == manifest["prompt"]["before_image"]
    assert p["template"]["after_image"] == manifest["prompt"]["after_image"]
    lib = Tokenizer.from_file(str(build / "tokenizer.json"))
    for c in p["cases"]:
        filled = p["template"]["before_image"] + p["template"]["after_image"].replace("{prompt}", c["prompt"])
        assert lib.decode(c["before"] + c["after"], skip_special_tokens=False) == filled
        assert (c["before"] == []) == (not c["with_image"])
    assert {c["with_image"] for c in p["cases"]} == {True, False}


@pytest.mark.slow
def test_image_tensors_equal_a_fresh_preprocess(vectors, build):
    manifest = load_manifest(build)
    cases = vectors["image"]["cases"]
    sizes = {(c["width"], c["height"]) for c in cases}
    assert {(1, 1), (3, 2), (300, 200)} <= sizes and any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    alphas = [decode_array(c["rgba"])[..., 3] for c in cases]
    assert any(0 < a.min() < 255 or (a.min() == 0 and a.max() > 0) for a in alphas)
    assert {c["spec"]["resize_mode"] for c in cases} == {"pad", "crop"}
    for c in cases:
        rgba = decode_array(c["rgba"])
        assert rgba.shape == (c["height"], c["width"], 4) and rgba.dtype == np.uint8
        fresh = preprocess(Image.frombytes("RGBA", (c["width"], c["height"]), rgba.tobytes()), c["spec"])
        pixels = decode_array(c["pixels"])
        assert np.array_equal(pixels, fresh)
        size = c["spec"]["size"]
        assert pixels.shape == (1, 3, size, size) and pixels.dtype == np.float32
        assert decode_array(c["rgb8"]).shape == (size, size, 3)
    assert [c["spec"] for c in cases if not c["name"].endswith("_variant")][0] == manifest["image"]
    assert vectors["image"]["tolerance"] == 1e-5


@pytest.mark.slow
def test_sampler_cases_replay(vectors):
    s = vectors["sampler"]
    first = {c["seed"]: c["u64"][0] for c in s["splitmix64"]}
    assert first[0] == str(0xE220A8397B1DCDAF)
    for c in s["splitmix64"]:
        rng = SplitMix64(c["seed"])
        assert [int(x) for x in c["u64"]] == [rng.next_u64() for _ in range(5)]
        assert c["next_doubles"] == [rng.next_double() for _ in range(5)]
    assert any(c["temperature"] == 0 for c in s["cases"]) and any(c["top_p"] < 1 for c in s["cases"])
    for c in s["cases"]:
        logits = decode_array(c["logits"])
        sampler = Sampler(c["temperature"], c["top_p"], c["seed"])
        assert c["picks"] == [sampler.pick(logits) for _ in range(len(c["picks"]))]
        if c["temperature"] == 0:
            assert set(c["picks"]) == {int(np.argmax(logits))} and c["uniforms"] == []
    ties = decode_array(next(c for c in s["cases"] if c["logits_name"] == "ties")["logits"])
    assert np.sum(ties == ties.max()) > 1


@pytest.mark.slow
def test_calls_replay_the_golden_conversation(vectors, build):
    manifest = load_manifest(build)
    golden = json.loads((build / "golden.json").read_text())
    methods = manifest["graphs"]["methods"]
    assert len(vectors["calls"]["cases"]) == len(golden["cases"])
    for case, g in zip(vectors["calls"]["cases"], golden["cases"]):
        assert case["ids"] == g["ids"] and case["generated_ids"] == g["ids"]
        calls = case["calls"]
        assert {c["method"] for c in calls} == set(methods)
        for c in calls:
            declared = methods[c["method"]]
            assert [a["name"] for a in c["inputs"]] == [d["name"] for d in declared["inputs"]]
            assert [a["name"] for a in c["outputs"]] == [d["name"] for d in declared["outputs"]][:len(c["outputs"])]
            assert [a["dtype"] for a in c["inputs"]] == [d["dtype"] for d in declared["inputs"]]
        first_decoder = next(i for i, c in enumerate(calls) if c["method"] == "text_decoder")
        assert calls[first_decoder - 1]["method"] == "token_embedding"
        np.testing.assert_array_equal(decode_array(calls[first_decoder]["inputs"][0]),
                                      decode_array(calls[first_decoder - 1]["outputs"][0]))
        vision = next(c for c in calls if c["method"] == "vision_encoder")
        rgba = decode_array(case["rgba"])
        fresh = preprocess(Image.fromarray(rgba, "RGBA"), manifest["image"])
        np.testing.assert_array_equal(decode_array(vision["inputs"][0]), fresh)
        _check_greedy_replay(case, calls)


def _check_greedy_replay(case, calls):
    """Greedy picks from the recorded logits are the golden ids, and each is fed back as the next input."""
    decoder_logits = [decode_array(c["outputs"][0]) for c in calls if c["method"] == "text_decoder"]
    fed = [decode_array(c["inputs"][0]).ravel().tolist() for c in calls if c["method"] == "token_embedding"]
    n = len(case["ids"])
    picks = [int(np.argmax(logits[0, -1])) for logits in decoder_logits[-n:]]
    assert picks == case["ids"]
    if n > 1:
        assert fed[-(n - 1):] == [[i] for i in case["ids"][:-1]]


@pytest.mark.slow
def test_a_backend_without_recording_is_refused(build, tmp_path):
    with pytest.raises(VectorsError, match="does not record graph calls"):
        write_vectors(build, tmp_path / "v.json", backend="torch")
    assert not (tmp_path / "v.json").exists()


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["--build", str(tmp_path / "missing"), "--out", str(tmp_path / "v.json")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["--build", str(tmp_path / "empty"), "--out", str(tmp_path / "v.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "v.json").exists()


def _apply(manifest: dict, edit: dict) -> dict:
    """docs/vectors.md's edit, applied independently of runtime/vectors.py."""
    out = json.loads(json.dumps(manifest))
    *parents, last = edit["path"]
    target = out
    for key in parents:
        target = target[key]
    if edit["op"] == "remove":
        del target[last]
    else:
        assert edit["op"] == "set", edit
        target[last] = edit["value"]
    return out


@pytest.mark.slow
def test_bad_manifests_are_the_builds_own_with_one_edit_and_load_manifests_refusal(vectors, build, tmp_path):
    cases = {c["name"]: c for c in vectors["bad_manifests"]}
    for name in ("other_schema_version", "missing_kv", "missing_text_decoder", "missing_vision_prefill",
                 "image_size_text", "image_size_zero", "image_size_negative", "image_mean_two_values", "prompt_empty"):
        assert name in cases, name
    manifest = json.loads((build / "manifest.json").read_text())
    for name, case in cases.items():
        assert json.loads(case["text"]) == _apply(manifest, case["edit"]), name
        copy = tmp_path / name
        shutil.copytree(build, copy)
        (copy / "manifest.json").write_text(case["text"], encoding="utf-8")
        with pytest.raises(BuildError) as e:
            load_manifest(copy)
        assert str(e.value) == case["error"].replace("manifest.json", str(copy / "manifest.json"), 1), name
        assert "\n" not in case["error"] and all(m in case["error"] for m in case["mentions"]), name
    assert cases["image_size_text"]["error"] == "manifest.json: image.size: '256px' is not of type 'integer'"
    assert cases["prompt_empty"]["error"] == "manifest.json: prompt: 'before_image' is a required property"
    assert cases["image_mean_two_values"]["error"] == "manifest.json: image.mean: [0.5, 0.5] is too short"


def test_vectors_of_a_manifest_the_check_accepts_are_refused(monkeypatch):
    import runtime.vectors as vectors_module

    manifest = {"kv": {"layout": "split"}}
    monkeypatch.setattr(vectors_module, "load_manifest", lambda d: manifest)
    with pytest.raises(VectorsError, match="other_schema_version: its manifest check accepted it"):
        vectors_module.bad_manifests_section(manifest)
