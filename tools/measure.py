"""Measuring, shared by the bench tools: interleaved repeats with medians, this machine's GEMM rate and
memory bandwidth (the roofline's two peaks), process RSS, and the one-line exit on bad input."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from runtime.manifest import BuildError

METRICS = ("image_encode_s", "prefill_s", "ttft_s", "decode_tok_s")  # what a bench run reports per build


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def measure(runs: dict, repeats: int, log=print, metrics=METRICS) -> dict:
    """runs {label: fn() -> timings} -> {label: {metric: stats}}, interleaved A B A B ..."""
    samples = {label: {} for label in runs}
    for r in range(repeats + 1):  # the first round warms up and is not kept
        for label, fn in runs.items():
            timings = fn()
            if r:
                for m, v in timings.items():
                    samples[label].setdefault(m, []).append(v)
        log(f"[bench] round {r}/{repeats}" + (" (warm-up)" if r == 0 else ""))
    return {label: {m: stats(v) for m, v in s.items() if m in metrics} for label, s in samples.items()}


def gemm_rate(backend: str, n: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of an n x n x n linear through the backend (median of repeats)."""
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    run = _gemm_runner(backend, x)
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times))


def _gemm_runner(backend: str, x: np.ndarray):
    import torch

    linear = torch.nn.Linear(x.shape[0], x.shape[0], bias=False).eval()
    xt = torch.from_numpy(x)
    if backend == "torch":
        return lambda: linear(xt)
    if backend == "onnxruntime":
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        w = numpy_helper.from_array(linear.weight.detach().numpy().T.copy(), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"x": x})
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    buffer = to_edge_transform_and_lower(torch.export.export(linear, (xt,)),
                                         partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    program = Runtime.get().load_program(buffer)  # reads `buffer` in place: keep both alive with the method
    method = program.load_method("forward")
    return lambda: (buffer, program, method.execute([xt]))[-1]


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large copy (read + write), median of repeats."""
    src = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times[1:]))


def machine() -> dict:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def run_or_exit(run_fn, args) -> tuple[dict | None, int]:
    """(result, 0), or (None, exit code) after one line on stderr: 2 bad input, 3 a build failed."""
    try:
        return run_fn(args), 0
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 3
