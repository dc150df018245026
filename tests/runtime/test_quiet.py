"""models/quiet.py, as every entry point gets it (each package's __init__): the toolchain's known harmless
messages are hidden, each by its text and origin; anything else still prints; -W shows everything again."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCHAO_ENUM = "is an Enum subclass and is now natively supported"
RENAMED = "Input, 'decoder.layers.0.text_k', of the source model, has been renamed to 'decoder_layers_0_text_k' in the Core ML model"


def stderr_of(code: str, *python_flags: str) -> str:
    done = subprocess.run([sys.executable, *python_flags, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def test_torchao_enum_registration_is_hidden():
    assert TORCHAO_ENUM not in stderr_of("import runtime, torchao")
    assert TORCHAO_ENUM in stderr_of("import runtime, torchao", "-W", "default")  # -W: everything shows


def test_every_package_installs_the_filters():
    check = ("import logging, sys, {0}\n"
             "from models.quiet import KNOWN_RECORDS\n"
             "sys.exit(not all(f in logging.getLogger(n).filters for n, f in KNOWN_RECORDS.items()))\n")
    for package in ("runtime", "export", "tools", "models"):
        stderr_of(check.format(package))


def test_the_same_log_message_about_another_library_still_prints():
    code = ("import enum, logging, runtime\n"
            "class Mode(enum.Enum):\n    A = 1\n"
            "log = logging.getLogger('torch.utils._pytree')\n"
            "log.warning('%s is an Enum subclass and is now natively supported by torch.compile', Mode)\n"
            "logging.getLogger('coremltools').warning('coremltools: something else went wrong')\n")
    err = stderr_of(code)
    assert "Mode'> is an Enum subclass" in err
    assert "something else went wrong" in err


def test_known_coremltools_import_messages_are_hidden_off_macos():
    code = ("import logging, runtime\n"
            "log = logging.getLogger('coremltools')\n"
            "log.warning('scikit-learn version 1.9.1 is not supported. Minimum required version: 0.17.')\n"
            "log.warning(\"Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'\")\n"
            "log.warning('Torch var decoder.layers.3.text_v is added again.')\n"
            "log.warning('Torch var vision_states is added again.')\n")
    err = stderr_of(code)
    assert "scikit-learn" not in err and "text_v is added again" not in err
    assert "Torch var vision_states is added again." in err  # not a K/V state buffer: still said
    assert ("_MLModelProxy" in err) == (sys.platform == "darwin")  # on a Mac it means prediction is broken


def test_known_warning_is_hidden_and_an_unrelated_user_warning_is_not():
    code = ("import warnings, export\n"
            f"warnings.warn_explicit({RENAMED!r}, UserWarning, 'preprocess.py', 245,\n"
            "                      module='coremltools.converters.mil.mil.passes.defs.preprocess')\n"
            f"warnings.warn_explicit({RENAMED!r}, UserWarning, 'ours.py', 1, module='models.decoder')\n"
            "warnings.warn_explicit('`torch.jit.trace` is deprecated. Please switch to `torch.export`.',\n"
            "                      FutureWarning, '_trace.py', 1006, module='torch.jit._trace')\n"
            "warnings.warn('an unrelated warning', UserWarning)\n"
            "warnings.warn('an unrelated future warning', FutureWarning)\n")
    err = stderr_of(code)
    assert "an unrelated warning" in err and "an unrelated future warning" in err
    assert "torch.jit.trace" not in err
    assert err.count("has been renamed") == 1 and "ours.py" in err  # the same text from elsewhere still shows
    assert "preprocess.py" in stderr_of(code, "-W", "default")
