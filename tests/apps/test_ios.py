"""ios_demo/FoveateKit: the Swift core (FoveateCore) against the default build's vectors, through `swift test`.

The package has no dependencies outside the Swift toolchain; FOVEATE_VECTORS names the vectors file, and the
tests read the build's manifest.json and tokenizer.json beside it. The first run compiles the package
(about a minute); its build output stays in ios_demo/FoveateKit/.build/ (ignored by git).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ios_demo" / "FoveateKit"
SWIFT_FALLBACK = Path("/opt/swift/usr/bin/swift")


def _swift() -> str | None:
    found = shutil.which("swift")
    return found or (str(SWIFT_FALLBACK) if SWIFT_FALLBACK.is_file() else None)


def _written_tests() -> int:
    """XCTest methods in the package's test target (each `func test...(`)."""
    pattern = re.compile(r"^\s*func test\w*\(", re.M)
    return sum(len(pattern.findall(p.read_text())) for p in (PACKAGE / "Tests").rglob("*.swift"))


@pytest.mark.slow
def test_swift_core_passes_the_vectors(default_builds):
    swift = _swift()
    assert swift is not None, "no Swift toolchain on PATH or in /opt/swift (ios_demo/README.md says how to run these tests)"
    vectors = default_builds("onnx") / "vectors.json"
    assert vectors.is_file(), f"the default build wrote no vectors: {vectors}"
    env = {**os.environ, "FOVEATE_VECTORS": str(vectors)}
    run = subprocess.run([swift, "test", "--package-path", str(PACKAGE)], env=env, capture_output=True, text=True,
                         timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"swift test exited {run.returncode}:\n{out[-6000:]}"
    summaries = re.findall(r"Executed (\d+) tests?, with (\d+) failures?", out)
    assert summaries, f"no XCTest summary in the output:\n{out[-3000:]}"
    executed, failed = map(int, summaries[-1])  # the last one is 'All tests'
    assert failed == 0, out[-6000:]
    assert executed >= _written_tests() > 0, f"{executed} XCTest cases ran, {_written_tests()} are written"
