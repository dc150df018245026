"""Core ML backend (macOS 15+ only): the build's .mlpackage files through coremltools' MLModel.

The same runner protocol as every target (models/protocol.py): the stateful `text_decoder` keeps its
text K/V (and the top-k keep mask) as its own MLState; the stateless `vision_prefill` takes the image,
its start position and the embeddings of the text before it, and returns the vision K/V, which are
then passed to every `text_decoder` call. Integer inputs are int32 and the vision K/V float16, as the
manifest declares them (GraphCalls casts).

`check_package` reads no more than a package's structure and so runs on any platform: its
Manifest.json, the items it lists, the model spec's top-level protobuf fields and the weight blobs'
headers (coremltools' MIL blob storage: a 64-byte header whose first uint32 is the blob count, then per
blob a 64-byte record, sentinel 0xDEADBEEF, holding the data's size and offset).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .backends import GraphCalls
from .manifest import BuildError

BLOB_SENTINEL = 0xDEADBEEF


def check_package(package: Path) -> None:
    """Raise BuildError, naming the file, when an .mlpackage is missing, incomplete or truncated."""
    package = Path(package)
    if not package.is_dir():
        raise BuildError(f"{package}: not a Core ML package (not a directory)")
    try:
        info = json.loads((package / "Manifest.json").read_text())
        items = {k: v["path"] for k, v in info["itemInfoEntries"].items()}
        root = items[info["rootModelIdentifier"]]
    except OSError:
        raise BuildError(f"{package}: not a Core ML package (no Manifest.json)") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BuildError(f"{package}/Manifest.json: not a Core ML package manifest") from None
    for path in items.values():
        item = package / "Data" / path
        if not item.exists() or (item.is_dir() and not any(item.iterdir())):
            raise BuildError(f"{package}: incomplete Core ML package ({path} is missing or empty)")
    spec = package / "Data" / root
    _check_protobuf(spec)
    for blob in sorted((package / "Data").rglob("*.bin")):
        _check_blobs(blob)


def _check_protobuf(path: Path) -> None:
    """Walk the top-level fields of a protobuf message: a truncated file ends inside one."""
    data, i = path.read_bytes(), 0
    try:
        while i < len(data):
            key, i = _varint(data, i)
            wire = key & 7
            if wire == 0:
                _, i = _varint(data, i)
            elif wire == 2:
                length, i = _varint(data, i)
                i += length
            elif wire in (1, 5):
                i += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
            if i > len(data):
                raise ValueError("a field runs past the end")
    except ValueError as e:
        raise BuildError(f"{path}: corrupt or truncated Core ML model spec ({e})") from None
    if not data:
        raise BuildError(f"{path}: empty Core ML model spec")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("a varint runs past the end")
        byte, i = data[i], i + 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _check_blobs(path: Path) -> None:
    """Every weight blob's record is in place and its data inside the file."""
    size = path.stat().st_size
    truncated = BuildError(f"{path}: truncated or corrupt Core ML weights ({size} bytes)")
    with open(path, "rb") as f:
        header = f.read(64)
        if len(header) < 64:
            raise truncated
        (count,), record = struct.unpack_from("<I", header), 64
        for _ in range(count):
            f.seek(record)
            raw = f.read(24)
            if len(raw) < 24:
                raise truncated
            sentinel, _, length, offset = struct.unpack("<IIQQ", raw)
            if sentinel != BLOB_SENTINEL or offset + length > size:
                raise truncated
            record = (offset + length + 63) // 64 * 64  # the next record, 64-byte aligned


class CoreMLBackend(GraphCalls):
    def __init__(self, build_dir: Path, manifest: dict):
        import coremltools as ct

        self._setup(manifest)
        self.specs = manifest["graphs"]["methods"]
        self.models = {}
        for name, spec in self.specs.items():
            path = build_dir / spec["file"]
            try:
                self.models[name] = ct.models.MLModel(str(path))
            except Exception as e:  # coremltools raises its own types (and RuntimeError) for an unusable package
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise BuildError(f"{path}: Core ML cannot load it ({reason[:200]})") from None
        self.reset()

    def reset(self):
        super().reset()
        self.state = self.models["text_decoder"].make_state()
        for s in self.specs["text_decoder"].get("states", []):
            if s["name"].endswith("topk_keep"):
                self.state.write_state(s["name"], np.ones(s["shape"], np.float16))

    def _run(self, name, *arrays):
        spec = self.specs[name]
        feeds = {t["name"]: np.ascontiguousarray(a) for t, a in zip(spec["inputs"], arrays)}
        state = self.state if name == "text_decoder" else None
        out = self.models[name].predict(feeds, state=state) if state is not None else self.models[name].predict(feeds)
        return [np.asarray(out[t["name"]], np.float32) for t in spec["outputs"]]
