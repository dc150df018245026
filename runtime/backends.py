"""Backends: one small class per engine, each an engine of the runner protocol (models/protocol.py).

    reset()                                   embed(ids: list[int]) -> embeds
    encode_image(pixels) -> vision embeds     prefill_vision(vision_embeds, start_pos, prefix_embeds | None)
    text(embeds, pos, slot, select) -> logits (V,) of the chunk's last position

numpy in, numpy out. The graph backends speak to the build's declared methods (manifest "graphs") and keep
the vision K/V that vision_prefill returns to hand them to every text_decoder call; every call checks its
inputs against the declared I/O first (`check_inputs`), and a chunk that would write past the text cache
is refused before any graph runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .manifest import BuildError, method_spec

_NP = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "float16": np.float16}


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


def check_slots(kv: dict, slot: int, n: int) -> None:
    """Refuse a chunk of n rows at `slot` that the text cache cannot hold (before a graph fails inside)."""
    if slot < 0 or slot + n > kv["text_rows"]:
        raise BuildError(f"a chunk of {n} tokens at slot {slot} does not fit the KV cache of {kv['text_rows']} rows")


class TorchBackend:
    """The PyTorch model itself, rebuilt from the build's weights, config and plan, in the build's KV layout."""

    def __init__(self, build_dir: Path, manifest: dict):
        import torch

        from models.checkpoint import load_model
        from models.vlm import EagerEngine, shared_layout_model

        self.torch, self.manifest, self.kv = torch, manifest, manifest["kv"]
        model = load_model(build_dir / manifest["weights"], plan=manifest["plan"],
                           max_seq_len=self.kv["text_rows"] - self.kv["image_slots"])
        self.model = shared_layout_model(model) if self.kv["layout"] == "shared" else model
        self.engine = EagerEngine(self.model)

    def encode_image(self, pixels):
        with self.torch.no_grad():
            return self.engine.encode_image(self.torch.from_numpy(np.ascontiguousarray(pixels))).numpy()

    def embed(self, ids):
        with self.torch.no_grad():
            return self.engine.embed(list(ids)).numpy()

    def prefill_vision(self, vision_embeds, start_pos: int, prefix_embeds):
        prefix = None if prefix_embeds is None else self.torch.from_numpy(prefix_embeds)
        with self.torch.no_grad():
            self.engine.prefill_vision(self.torch.from_numpy(vision_embeds), start_pos, prefix)

    def text(self, embeds, pos: int, slot: int, select: bool):
        check_slots(self.kv, slot, embeds.shape[1])
        with self.torch.no_grad():
            return self.engine.text(self.torch.from_numpy(embeds), pos, slot, select).numpy()

    def reset(self):
        self.engine.reset()


class GraphCalls:
    """The engine calls in terms of the declared methods; subclasses provide `_run(method, *arrays)`, which
    returns the method's outputs in declared order.

    Setting `calls` to a list records every method call into it, in order, as
    {"method": name, "inputs": [arrays, declared order], "outputs": [arrays, declared order]}
    (runtime.vectors writes these as the call sequences the apps' ports are checked against)."""

    calls: list | None = None

    def _setup(self, manifest: dict):
        self.manifest, self.kv = manifest, manifest["kv"]
        self.layout = self.kv["layout"]
        self.hidden = manifest["model"]["config"]["decoder"]["hidden_size"]
        self.vision_kv: list[np.ndarray] = []

    def _call(self, name, *arrays) -> list:
        """Run a method; integer and float inputs are cast to the declared dtypes (Core ML declares int32
        and float16 where the other targets take int64 and float32), then checked against the declaration."""
        declared = method_spec(self.manifest, name)["inputs"]
        arrays = [np.asarray(a, _NP[t["dtype"]]) if t["dtype"] in _NP else a for t, a in zip(declared, arrays)]
        check_inputs(self.manifest, name, arrays)
        outputs = [np.array(o) for o in self._run(name, *arrays)]  # copies: a runtime may reuse its memory
        if self.calls is not None:
            self.calls.append({"method": name, "inputs": [np.array(a) for a in arrays], "outputs": outputs})
        return outputs

    def reset(self):
        vision = self.kv.get("vision_kv") or []
        self.vision_kv = [np.zeros(self.kv["vision_kv_shape"], np.float32) for _ in vision]

    def encode_image(self, pixels):
        return self._call("vision_encoder", pixels)[0]

    def embed(self, ids):
        return self._call("token_embedding", np.array([list(ids)], np.int64))[0]

    def prefill_vision(self, vision_embeds, start_pos: int, prefix_embeds):
        if prefix_embeds is None:  # the method takes at least one row; start_pos = 0 masks it
            prefix_embeds = np.zeros((1, 1, self.hidden), np.float32)
        out = self._call("vision_prefill", vision_embeds, np.array([start_pos], np.int64), prefix_embeds)
        self.vision_kv = out[1:]  # kept for every text_decoder call

    def text(self, embeds, pos: int, slot: int, select: bool):
        n = embeds.shape[1]
        check_slots(self.kv, slot, n)
        if self.layout == "shared":
            return self._call("text_decoder", embeds, np.array([pos], np.int64))[0][0, -1]
        return self._call("text_decoder", embeds, np.arange(pos, pos + n, dtype=np.int64),
                          np.array([slot], np.int64), np.array([int(select)], np.int64), *self.vision_kv)[0][0, -1]


EXECUTORCH_MEMORY = ("shared", "per-method")


class ExecuTorchBackend(GraphCalls):
    """The .pte through ExecuTorch's runtime, with its methods' memory one of two ways:
    "shared"      one Program (as `executorch.runtime` loads it): its methods share their memory arenas;
    "per-method"  the pybindings Module (as `portable_lib` loads it), which, like the Android binding's Module, gives
                  each method memory of its own: what a phone runs."""

    def __init__(self, build_dir: Path, manifest: dict, memory: str = "shared"):
        import torch  # first: ExecuTorch's extension links against libtorch

        import executorch.kernels.quantized  # noqa: F401 (registers the int8 embedding kernel of 8da4w builds)
        # The extension itself, which executorch.runtime and portable_lib wrap: both import executorch.exir, and
        # with it the whole export stack (torch.export, dynamo, torchao), seconds of start-up a runtime never uses.
        from executorch.extension.pybindings import _C

        if memory not in EXECUTORCH_MEMORY:
            raise BuildError(f"unknown ExecuTorch memory mode {memory!r}; valid: {', '.join(EXECUTORCH_MEMORY)}")
        self._setup(manifest)
        self.torch, self.memory = torch, memory
        file = build_dir / manifest["graphs"]["files"][0]
        names = list(manifest["graphs"]["methods"])
        try:
            if memory == "shared":
                program = _C._load_program(str(file), enable_etdump=False, debug_buffer_size=0,
                                           program_verification=_C.Verification.InternalConsistency)
                # Load every method before running any: loading one re-initialises the program's initialised
                # buffers, which an earlier method may already have written.
                methods = {name: program.load_method(name) for name in names}
                self._exec = lambda name, inputs: methods[name](inputs)
            else:
                module = _C._load_for_executorch(str(file))  # loads each method on its first run
                module.method_names()  # reads the program now: a truncated file fails here, not on a first run
                self._exec = lambda name, inputs: module.run_method(name, tuple(inputs))
        except RuntimeError as e:
            raise BuildError(f"{file}: ExecuTorch cannot load it ({str(e).splitlines()[0]})") from None
        self.reset()

    def _run(self, name, *arrays):
        out = self._exec(name, [self.torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [o.numpy() for o in out]  # _call copies them


class OnnxBackend(GraphCalls):
    """One onnxruntime session per method; the text K/V state lives here as numpy arrays, passed in and out."""

    def __init__(self, build_dir: Path, manifest: dict):
        import onnxruntime as ort

        self._setup(manifest)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions, self.state_specs = {}, {}
        for name, spec in manifest["graphs"]["methods"].items():
            path = build_dir / spec["file"]
            try:
                self.sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types for a truncated or corrupt graph
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise BuildError(f"{path}: onnxruntime cannot load it ({reason[:200]})") from None
            for s in spec.get("states", []):
                self.state_specs[s["name"]] = s
        self.reset()

    def _run(self, name, *arrays):
        spec = self.manifest["graphs"]["methods"][name]
        unread = set(spec.get("unread_inputs", []))  # declared, but the graph never reads them
        feeds = {t["name"]: np.ascontiguousarray(a) for t, a in zip(spec["inputs"], arrays) if t["name"] not in unread}
        feeds.update({s["name"]: self.state[s["name"]] for s in spec.get("states", [])})
        session = self.sessions[name]
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        self.state.update({k[:-len(".out")]: v for k, v in out.items() if k.endswith(".out")})
        return [out[t["name"]] for t in spec["outputs"]]

    def reset(self):
        super().reset()
        self.state = {name: (np.ones if name.endswith("topk_keep") else np.zeros)(s["shape"], np.float32)
                      for name, s in self.state_specs.items()}


def coreml_backend(build_dir: Path, manifest: dict):
    from .coreml_backend import CoreMLBackend, check_package

    for spec in manifest["graphs"]["methods"].values():  # a missing or broken package is said first
        check_package(build_dir / spec["file"])
    if sys.platform != "darwin":
        raise BuildError("Core ML prediction needs macOS 15 or later; this build's parity.json records the checks "
                         f"made at export on this machine; run `python -m runtime.parity --build {build_dir}` on a "
                         "Mac for the prediction check")
    return CoreMLBackend(build_dir, manifest)


BACKENDS = {"torch": TorchBackend, "executorch": ExecuTorchBackend, "onnxruntime": OnnxBackend,
            "coreml": coreml_backend}
TARGET_BACKEND = {"executorch": "executorch", "onnx": "onnxruntime", "coreml": "coreml"}


def make_backend(name: str | None, build_dir: Path, manifest: dict, **options):
    """options: executorch's memory mode (memory="per-method")."""
    name = name or TARGET_BACKEND[manifest["target"]]
    if name not in BACKENDS:
        raise BuildError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    if name not in ("torch", TARGET_BACKEND[manifest["target"]]):
        raise BuildError(f"a {manifest['target']} build runs on {TARGET_BACKEND[manifest['target']]} or torch, "
                         f"not {name}")
    if options and name != "executorch":
        raise BuildError(f"{', '.join(options)} applies to the executorch backend only, not {name}")
    return BACKENDS[name](Path(build_dir), manifest, **options)
