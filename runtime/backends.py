"""Backends: one small class per engine, all with the same five calls (numpy in, numpy out).

    encode_image(pixels) -> vision embeddings      embed(ids) -> embeddings
    prefill_vision(embeds, start_pos)               text(embeds, pos, slot, select) -> last logits
    reset()

`layout` says which KV protocol the graphs follow: "split" (vision K/V apart, `vision_prefill`,
text_decoder(embeds, pos, slot, select)) or "shared" (dense only: image embeddings go through
text_decoder(embeds, input_pos) like text, as ExecuTorch's stock runner does).
Every call checks its inputs against the manifest's declared I/O first (`check_inputs`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .manifest import BuildError, method_spec

_NP = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


def check_inputs(manifest: dict, method: str, arrays: list[np.ndarray]) -> None:
    """Raise BuildError when arrays do not match the method's declared inputs (names, ranks, dims, dtypes)."""
    declared = method_spec(manifest, method)["inputs"]
    if len(arrays) != len(declared):
        raise BuildError(f"{method}: expected {len(declared)} inputs, got {len(arrays)}")
    for spec, a in zip(declared, arrays):
        shape = spec["shape"]
        ok_rank = a.ndim == len(shape)
        ok_dims = ok_rank and all(isinstance(d, str) or d == n for d, n in zip(shape, a.shape))
        if not (ok_dims and a.dtype == _NP[spec["dtype"]]):
            raise BuildError(f"{method}.{spec['name']}: expected {spec['dtype']}{shape}, got {a.dtype}{list(a.shape)}")


class TorchBackend:
    """The PyTorch model itself, rebuilt from the build's weights, config and plan."""

    layout = "split"

    def __init__(self, build_dir: Path, manifest: dict):
        import torch

        from models.checkpoint import load_model

        self.torch = torch
        self.model = load_model(build_dir / manifest["weights"], plan=manifest["plan"],
                                max_seq_len=manifest["kv"]["text_capacity"])
        self.manifest = manifest

    def _t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def encode_image(self, pixels):
        with self.torch.no_grad():
            return self.model.encode_image(self._t(pixels)).numpy()

    def embed(self, ids):
        with self.torch.no_grad():
            return self.model.decoder.embed(self._t(ids)).numpy()

    def prefill_vision(self, embeds, start_pos: int):
        with self.torch.no_grad():
            self.model.decoder.forward_vision(self._t(embeds), self.torch.tensor(start_pos))

    def text(self, embeds, pos, slot: int, select: bool):
        with self.torch.no_grad():
            out = self.model.decoder.forward_text(self._t(embeds), self._t(pos), self.torch.tensor(slot), select)
        return out.numpy()

    def reset(self):
        self.model.decoder.reset()


class GraphCalls:
    """The five calls in terms of the declared methods; subclasses provide `_run(method, *arrays)`."""

    def encode_image(self, pixels):
        return self._run("vision_encoder", pixels)

    def embed(self, ids):
        return self._run("token_embedding", ids)

    def prefill_vision(self, embeds, start_pos: int):
        self._run("vision_prefill", embeds, np.array([start_pos], np.int64))

    def text(self, embeds, pos, slot: int, select: bool):
        if self.layout == "shared":
            return self._run("text_decoder", embeds, np.array([pos[0]], np.int64))
        return self._run("text_decoder", embeds, pos.astype(np.int64), np.array([slot], np.int64),
                         np.array([select]))


class ExecuTorchBackend(GraphCalls):
    """The .pte through ExecuTorch's Python runtime (`executorch.runtime`, which shares state buffers
    between the methods of one program)."""

    def __init__(self, build_dir: Path, manifest: dict):
        import executorch.kernels.quantized  # noqa: F401 (registers the int8 embedding kernel of 8da4w builds)
        import torch
        from executorch.runtime import Runtime

        self.torch, self.manifest, self.layout = torch, manifest, manifest["kv_layout"]
        file = build_dir / manifest["graphs"]["files"][0]
        try:
            program = Runtime.get().load_program(str(file))
            # Load every method before running any: loading re-initialises initialised buffers (TOOLCHAIN.md).
            self.methods = {name: program.load_method(name) for name in manifest["graphs"]["methods"]}
        except RuntimeError as e:
            raise BuildError(f"{file}: ExecuTorch cannot load it ({str(e).splitlines()[0]})") from None

    def _run(self, name, *arrays):
        check_inputs(self.manifest, name, list(arrays))
        out = self.methods[name].execute([self.torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return out[0].numpy()

    def reset(self):
        """Stale K/V is masked by position; nothing to clear between conversations."""


class OnnxBackend(GraphCalls):
    """One onnxruntime session per method; the KV state lives here as numpy arrays, passed in and out."""

    def __init__(self, build_dir: Path, manifest: dict):
        import onnxruntime as ort

        self.manifest, self.layout = manifest, manifest["kv_layout"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions, self.state_specs = {}, {}
        for name, spec in manifest["graphs"]["methods"].items():
            self.sessions[name] = ort.InferenceSession(str(build_dir / spec["file"]), opts,
                                                       providers=["CPUExecutionProvider"])
            for s in spec.get("states", []):
                self.state_specs[s["name"]] = s
        self.reset()

    def _run(self, name, *arrays):
        check_inputs(self.manifest, name, list(arrays))
        spec = self.manifest["graphs"]["methods"][name]
        feeds = {t["name"]: np.ascontiguousarray(a) for t, a in zip(spec["inputs"], arrays)}
        feeds.update({s["name"]: self.state[s["name"]] for s in spec.get("states", [])})
        session = self.sessions[name]
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        self.state.update({k[:-len(".out")]: v for k, v in out.items() if k.endswith(".out")})
        return out[spec["outputs"][0]["name"]]

    def reset(self):
        self.state = {name: (np.ones if name.endswith("topk_keep") else np.zeros)(s["shape"], np.float32)
                      for name, s in self.state_specs.items()}


def coreml_backend(build_dir: Path, manifest: dict):
    if sys.platform != "darwin":
        raise BuildError("Core ML prediction needs macOS; on Linux run this build's parity with --backend torch "
                         "or use the executorch/onnx builds")
    from .coreml_backend import CoreMLBackend

    return CoreMLBackend(build_dir, manifest)


BACKENDS = {"torch": TorchBackend, "executorch": ExecuTorchBackend, "onnxruntime": OnnxBackend,
            "coreml": coreml_backend}
TARGET_BACKEND = {"executorch": "executorch", "onnx": "onnxruntime", "coreml": "coreml"}


def make_backend(name: str | None, build_dir: Path, manifest: dict):
    name = name or TARGET_BACKEND[manifest["target"]]
    if name not in BACKENDS:
        raise BuildError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    if name not in ("torch", TARGET_BACKEND[manifest["target"]]):
        raise BuildError(f"a {manifest['target']} build runs on {TARGET_BACKEND[manifest['target']]} or torch, "
                         f"not {name}")
    return BACKENDS[name](Path(build_dir), manifest)
