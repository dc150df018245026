"""Start-up of runtime.generate: what it imports, in a fresh interpreter.

`--help` and a bad flag need argparse only; an ONNX build answers without torch or any other
training-side library (runtime/ needs no torch to run an exported graph).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING_SIDE = ("torch", "transformers", "matplotlib", "timm", "executorch", "coremltools")
PIPELINE_LIBRARIES = ("numpy", "PIL", "tokenizers", "jsonschema", "onnxruntime")


def _modules_after(argv: list[str], top_level: bool = True) -> tuple[int, set[str], str]:
    """Run runtime.generate's main(argv) in a fresh interpreter: (exit code, modules, stdout); `top_level`:
    only the first part of each module's name."""
    code = ("import json, sys\n"
            "from runtime.generate import main\n"
            "try:\n"
            f"    rc = main({argv!r})\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            f"names = {{m.split('.')[0] for m in sys.modules}} if {top_level!r} else set(sys.modules)\n"
            "print(json.dumps({'rc': rc, 'modules': sorted(names)}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    *answer, last = done.stdout.strip().splitlines()
    report = json.loads(last)
    return report["rc"], set(report["modules"]), "\n".join(answer)


@pytest.mark.parametrize("argv", [["--help"], ["--build", "b", "--prompt", "p", "--top-p", "2"]])
def test_help_and_a_bad_flag_import_no_pipeline_library(argv):
    rc, modules, _ = _modules_after(argv)
    assert rc in (0, 2)
    assert not modules & set(PIPELINE_LIBRARIES + TRAINING_SIDE), modules & set(PIPELINE_LIBRARIES + TRAINING_SIDE)


@pytest.mark.slow
def test_an_onnx_build_answers_without_torch(default_builds):
    build = default_builds("onnx")
    rc, modules, out = _modules_after(["--build", str(build), "--image", str(ROOT / "examples/test-all-0.png"),
                                       "--prompt", "Is there a yellow shape?", "--max-new-tokens", "4",
                                       "--timings"])
    assert rc == 0 and "backend OnnxBackend" in out
    assert {"onnxruntime", "numpy", "tokenizers"} <= modules  # it did run the graphs
    assert not modules & set(TRAINING_SIDE), modules & set(TRAINING_SIDE)
    startup = next(line for line in out.splitlines() if line.startswith("start-up: "))
    assert all(part in startup for part in ("runtime imports", "manifest", "tokenizer", "backend", "total"))


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["shared", "per-method"])
def test_an_executorch_build_answers_without_the_export_stack(default_builds, memory):
    """ExecuTorch's Python runtime wrappers import executorch.exir (and with it torch.export, dynamo and
    torchao: seconds of start-up); the backend loads programs through the extension they wrap."""
    build = default_builds("executorch")
    rc, modules, out = _modules_after(["--build", str(build), "--image", str(ROOT / "examples/test-all-0.png"),
                                       "--prompt", "Is there a yellow shape?", "--max-new-tokens", "4",
                                       "--memory", memory], top_level=False)
    assert rc == 0 and "backend ExecuTorchBackend" in out
    assert "executorch.extension.pybindings._portable_lib" in modules or any(m.startswith("executorch.") for m in modules)
    heavy = {m for m in modules if m.split(".")[:2] in (["executorch", "exir"], ["torch", "_dynamo"])
             or m.split(".")[0] in ("torchao", "transformers")}
    assert not heavy, sorted(heavy)[:10]
