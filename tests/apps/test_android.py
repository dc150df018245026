"""android_demo/: the Java core against the ports' vectors.

The Java sources are compiled with javac into a temporary directory and run with JUnit 4 (Debian packages
junit4 and libandroid-json-java, which .ci/run installs). Paths reach Java as system properties.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "android_demo"
JARS = {"junit": ("junit4.jar",), "hamcrest": ("hamcrest-core.jar", "hamcrest.jar"),
        "json": ("com.android.json.jar", "json-android.jar")}
JAVA_DIR = Path("/usr/share/java")

pytestmark = pytest.mark.slow


def _jar(kind: str) -> Path | None:
    return next((JAVA_DIR / n for n in JARS[kind] if (JAVA_DIR / n).is_file()), None)


def _classpath() -> list[Path]:
    jars = {k: _jar(k) for k in JARS}
    missing = [k for k, j in jars.items() if j is None]
    if shutil.which("javac") is None or missing:
        pytest.skip(f"needs javac and the Debian packages junit4, libandroid-json-java (missing: {missing or 'javac'})")
    return list(jars.values())


@pytest.fixture(scope="session")
def java_core(tmp_path_factory) -> list[Path]:
    """The core and its tests compiled once: the class path to run them with."""
    cp = _classpath()
    out = tmp_path_factory.mktemp("android-core-classes")
    sources = sorted(str(p) for p in (ANDROID / "core" / "src").rglob("*.java"))
    subprocess.run(["javac", "-nowarn", "-encoding", "UTF-8", "--release", "17", "-d", str(out),
                    "-cp", ":".join(map(str, cp)), *sources], check=True, capture_output=True, text=True)
    return [out, *cp]


def run_junit(classpath: list[Path], test_class: str, props: dict, min_tests: int, timeout: int = 600) -> str:
    """Run one JUnit 4 class; assert its result line is "OK (N tests)" with N >= min_tests."""
    args = [f"-D{k}={v}" for k, v in props.items()]
    proc = subprocess.run(["java", "-Xss8m", *args, "-cp", ":".join(map(str, classpath)),
                           "org.junit.runner.JUnitCore", test_class],
                          capture_output=True, text=True, timeout=timeout)
    found = re.search(r"^OK \((\d+) tests?\)$", proc.stdout, re.M)
    assert proc.returncode == 0 and found, f"{test_class} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert int(found.group(1)) >= min_tests, proc.stdout[-2000:]
    return proc.stdout


def _vectors(build: Path) -> dict:
    path = build / "vectors.json"
    assert path.is_file(), f"{build} has no vectors.json"
    return {"foveate.vectors": str(path)}


# The core against the README's default build (split layout) and a dense build (shared layout).

@pytest.fixture(scope="module")
def vector_builds(default_builds, builds) -> dict:
    return {"default-onnx": default_builds("onnx"), "dense-executorch": builds.get("executorch", "dense")}


def test_tokenizer_matches_the_vectors(java_core, default_builds):
    run_junit(java_core, "org.foveate.core.TokenizerTest", _vectors(default_builds("onnx")), 6)


def test_image_preprocessing_matches_the_vectors(java_core, default_builds):
    run_junit(java_core, "org.foveate.core.ImagePreprocessorTest", _vectors(default_builds("onnx")), 4)


def test_sampler_matches_the_vectors(java_core, default_builds):
    run_junit(java_core, "org.foveate.core.SamplerTest", _vectors(default_builds("onnx")), 3)


@pytest.mark.parametrize("which", ["default-onnx", "dense-executorch"])
def test_conversation_replays_every_golden_call_sequence(java_core, vector_builds, which):
    run_junit(java_core, "org.foveate.core.ConversationTest", _vectors(vector_builds[which]), 5)


def test_manifest_refuses_what_it_cannot_use(java_core, default_builds):
    run_junit(java_core, "org.foveate.core.ManifestTest", _vectors(default_builds("onnx")), 6)


# SentencePiece-derived tokenizer.json (LLaMA / MobileVLM), checked against Hugging Face tokenizers itself.

SP_SPECIALS = ["<unk>", "<s>", "</s>"]
SP_CORPUS = ["the cat sat on the mat", "what is in the image? a red shape", "hello world, the quick brown fox",
             "is there a red shape? yes, there is", "café naïve über"]
SP_TEXTS = ["the cat", "What is in the image?", " what is  in\nthe 猫 🙂?", "<s>hello</s> world", "", "  ",
            "café naïve Ünïcode", "tabs\tand\n\nnewlines \n", "👍🏽 done", "a</s>b<unk>c", "日本語"]


def _sentencepiece_tokenizer(variant: str, out: Path) -> Path:
    """A small LLaMA-style tokenizer.json: "legacy" (Prepend + Replace normalizer, as MobileVLM's file) or
    "metaspace" (Metaspace pre-tokenizer, prepend_scheme first, as newer conversions write), byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if variant == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(SP_CORPUS * 20, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                                special_tokens=SP_SPECIALS + byte_tokens))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    d = json.loads(tok.to_str())
    d["added_tokens"] = [a for a in d["added_tokens"] if a["content"] in SP_SPECIALS]  # bytes stay in the vocab
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    return out / "tokenizer.json"


def _sentencepiece_cases(path: Path) -> dict:
    from runtime.tokenizer import PromptTokenizer

    tok = PromptTokenizer(path, {"after_image": "{prompt}"})
    cases = []
    for text in SP_TEXTS:
        for special in (False, True):
            ids = tok.encode(text, add_special_tokens=special)
            stream = tok.stream()
            pushes = [stream.push(i) for i in ids]
            cases.append({"text": text, "add_special_tokens": special, "ids": ids, "pushes": pushes,
                          "finish": stream.finish(), "decode_skip": tok.decode(ids, True),
                          "decode_keep": tok.decode(ids, False)})
    return {"vocab_size": tok.vocab_size, "cases": cases}


def test_sentencepiece_tokenizers_match_hugging_face(java_core, tmp_path):
    dirs = []
    for variant in ("legacy", "metaspace"):
        path = _sentencepiece_tokenizer(variant, tmp_path / variant)
        cases = _sentencepiece_cases(path)
        assert any("<0x" in t for t in json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"])
        (path.parent / "cases.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
        dirs.append(str(path.parent))
    run_junit(java_core, "org.foveate.core.SentencePieceTokenizerTest", {"foveate.sp": ",".join(dirs)}, 1)

