"""Known harmless messages of the toolchain, hidden in one place, each by its exact text and origin.

Every package's __init__ (models, runtime, export, tools) calls `install()`, so `python -m models.X`,
`python -m runtime.X`, `python export/build.py` and `python -m tools.X` start without them; anything not
listed here still prints. Python started with -W (or PYTHONWARNINGS) shows everything. It lives in models/,
the lowest layer, so that every layer may import it; it imports the standard library only.
Not here: ExecuTorch's `[cpuinfo_utils.cpp]` lines, which its C++ writes to the process's stderr itself
(only redirecting file descriptor 2 would hide them, and with them any real native error).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings


class KnownRecords(logging.Filter):
    """Drops a library's log records whose message template matches one of `patterns` from its start (and,
    with `only_if`, for which it is true)."""

    def __init__(self, patterns: tuple[str, ...], only_if=None):
        super().__init__()
        self.pattern, self.only_if = re.compile("|".join(f"(?:{p})" for p in patterns)), only_if

    def filter(self, record: logging.LogRecord) -> bool:
        known = isinstance(record.msg, str) and self.pattern.match(record.msg) is not None
        return not (known and (self.only_if is None or self.only_if(record)))


def _torchao_enum(record: logging.LogRecord) -> bool:
    return bool(record.args) and getattr(record.args[0], "__module__", "").startswith("torchao")


# logger name -> filter. Log records of libraries (not Python warnings), most of them at import.
KNOWN_RECORDS = {
    # torchao registers its Enums (KernelPreference, ScaleCalculationMode) as pytree constants, which this
    # torch deprecates in favour of native support; nothing foveate does depends on it
    "torch.utils._pytree": KnownRecords((r"%s is an Enum subclass and is now natively supported",), _torchao_enum),
    # coremltools: its scikit-learn converter (unused); the pinned torch, newer than coremltools lists (the
    # tests convert and check every method with this pair); the text decoder's K/V buffers, met again as
    # its states (their writes are checked in the saved spec); off macOS only, its prediction library,
    # which exists only on macOS (foveate runs Core ML predictions only there)
    "coremltools": KnownRecords((r"scikit-learn version \S+ is not supported",
                                 r"Torch version \S+ has not been tested with coremltools",
                                 r"Torch var decoder\.layers\.\d+\.text_[kv] is added again\.$")
                                + (() if sys.platform == "darwin" else (r"Failed to load _ML\w+Proxy: ",))),
}
# (message regex, category, module regex) for warnings.filterwarnings
KNOWN_WARNINGS = (
    # state names: coremltools writes the buffer's dots as underscores, as export/coreml.py declares them
    (r"Input, '[\w.]+', of the source model, has been renamed to '\w+' in the Core ML model", UserWarning,
     r"coremltools\."),
    # the Core ML path traces the stateful text decoder on purpose (export/coreml.py says why)
    (r"`torch\.jit\.trace(_method)?` is deprecated", FutureWarning, r"torch\.jit\._trace"),
)


def install() -> None:
    """Hide the known messages (idempotent). Does nothing when Python was started with -W options."""
    if sys.warnoptions:
        return
    for name, known in KNOWN_RECORDS.items():
        logging.getLogger(name).addFilter(known)  # the same object each time: added once
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
