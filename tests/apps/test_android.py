"""android_demo/: the Java core against the ports' vectors, and the native ExecuTorch engine end to end.

The Java sources are compiled with javac into a temporary directory and run with JUnit 4 (Debian packages
junit4 and libandroid-json-java, which .ci/run installs); the native engine is built with g++ against the
executorch wheel (android_demo/native/build.sh). Paths reach Java as system properties.
"""

import json
import re
import shutil
import subprocess
import sys
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
    if shutil.which("javac") is None or missing:  # a failure, not a skip: CI installs them (.ci/run)
        pytest.fail(f"needs javac and the Debian packages junit4, libandroid-json-java (missing: {missing or 'javac'});"
                    " apt-get install -y junit4 libandroid-json-java openjdk-17-jdk-headless")
    return list(jars.values())


@pytest.fixture(scope="session")
def java_core(tmp_path_factory) -> list[Path]:
    """The core, the native engine's Java side and their tests compiled once: the class path to run them with."""
    cp = _classpath()
    out = tmp_path_factory.mktemp("android-core-classes")
    sources = sorted(str(p) for part in ("core", "native") for p in (ANDROID / part / "src").rglob("*.java"))
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


def test_lossy_utf8_decoding_is_the_maximal_subpart_rule(java_core):
    run_junit(java_core, "org.foveate.core.Utf8Test", {}, 1)


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


# The native engine: ExecuTorch's C++ runtime from the wheel, one memory per method as on the phone.

@pytest.fixture(scope="session")
def native_lib(tmp_path_factory) -> Path:
    if shutil.which("g++") is None:
        pytest.fail("needs g++ to build the native engine (apt-get install -y g++)")
    out = tmp_path_factory.mktemp("android-native")
    proc = subprocess.run([str(ANDROID / "native" / "build.sh"), str(out), sys.executable],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / "libfoveate_engine.so"


def _native(java_core, native_lib, dirs: list[Path], tmp_path) -> list[dict]:
    report = tmp_path / "golden-report.json"
    out = run_junit(java_core, "org.foveate.nativeengine.NativeEngineTest",
                    {"foveate.native.lib": native_lib, "foveate.builds": ",".join(map(str, dirs)),
                     "foveate.report": report}, 8)
    print(out[out.find("foveate"):])  # the per-case golden report with timings (pytest -s shows it)
    reports = json.loads(report.read_text())
    assert [r["all_match"] for r in reports] == [True] * len(dirs)
    for r in reports:
        for case in r["cases"]:
            assert case["ttft_s"] > 0 and case["image_encode_s"] > 0 and case["prefill_s"] > 0
            assert case["decode_tok_s"] > 0 or case["tokens"] == 1
    return reports


def test_native_engine_replays_golden_token_exact(java_core, native_lib, default_builds, builds, tmp_path):
    """The default (split) build, a dense (shared) build and an STF build, golden.json through the Java
    conversation over the native engine; plus bad input: missing / truncated .pte, wrong shapes."""
    dirs = [default_builds("executorch"), builds.get("executorch", "dense"), builds.get("executorch", "stf-exit")]
    reports = _native(java_core, native_lib, dirs, tmp_path)
    assert {r["layout"] for r in reports} == {"split", "shared"}


def test_native_engine_runs_an_8da4w_build(java_core, native_lib, default_builds, tmp_path):
    """The README's default model as an 8da4w build (its .pte needs the quantized kernels linked)."""
    (report,) = _native(java_core, native_lib, [default_builds("executorch", "8da4w")], tmp_path)
    assert report["quant"] == "8da4w"


# The app layer is not compiled here: its names are checked against what the builds declare.

def _string_literals(path: Path) -> set[str]:
    return set(re.findall(r'"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8")))


def test_app_uses_only_names_the_manifests_declare(default_builds, builds):
    manifests = [json.loads((b / "manifest.json").read_text()) for b in
                 (default_builds("executorch"), builds.get("executorch", "dense"), builds.get("executorch", "stf-exit"))]
    declared = set()
    for m in manifests:
        for name, spec in m["graphs"]["methods"].items():
            declared |= {name, *(i["name"] for i in spec["inputs"])}
    protocol = ANDROID / "core" / "src" / "main" / "java" / "org" / "foveate" / "core" / "Protocol.java"
    names = {s for s in _string_literals(protocol) if re.fullmatch(r"[a-z][a-z0-9_]*", s)}
    assert {"vision_encoder", "token_embedding", "vision_prefill", "text_decoder", "pixels", "ids"} <= names
    assert names - {"split", "shared"} <= declared, f"Protocol.java names undeclared: {names - declared}"
    constants = set(re.findall(r"static final String (\w+) =", protocol.read_text()))
    app = sorted((ANDROID / "app" / "src").rglob("*.java"))
    assert app, "no app sources"
    for src in app:
        text = src.read_text(encoding="utf-8")
        for const in re.findall(r"Protocol\.([A-Z_]+)\b", text):
            assert const in constants, f"{src.name}: Protocol.{const} does not exist"
        for call, name in re.findall(r'\.(execute|loadMethod|getMethodMetadata)\(\s*"([^"]*)"', text):
            assert name in declared, f"{src.name}: {call}(\"{name}\") is no method a build declares"
    engine = (ANDROID / "app" / "src" / "main" / "java" / "org" / "foveate" / "demo" / "ExecuTorchEngine.java")
    assert "extends GraphEngine" in engine.read_text(), "the app's engine must take its names from the core"
