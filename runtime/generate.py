"""Ask a build about an image; stream the answer, then the timings.

    python -m runtime.generate --build build/foveate-tiny-default-onnx --image examples/test-all-0.png --prompt "Is there a yellow shape?"

`--timings` adds where start-up went: the runtime's imports, the manifest, the tokenizer, the backend
(its engine's imports, loading the graphs and their methods) and the answer.

Exit codes: 0 answered; 2 bad input (image, prompt, build, backend).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="build directory (holds manifest.json)")
    ap.add_argument("--image", default=None, help="image file (omit for a text-only question)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None,
                    help="torch, executorch, onnxruntime or coreml (default: the build's own)")
    ap.add_argument("--memory", default=None, choices=("shared", "per-method"),
                    help="executorch: the methods share memory (executorch.runtime, the default) or each has its "
                         "own (as ExecuTorch's Android binding runs a .pte)")
    ap.add_argument("--timings", action="store_true", help="also print where start-up went")
    args = ap.parse_args(argv)
    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        ap.error("--max-new-tokens >= 1, --temperature >= 0 and 0 < --top-p <= 1")
    start = time.perf_counter()
    from .image import ImageError  # numpy, PIL, tokenizers, jsonschema: not needed for --help or a bad flag
    from .manifest import BuildError
    from .pipeline import Pipeline
    from .tokenizer import TokenizerError

    imported = time.perf_counter()
    try:
        pipe = Pipeline(args.build, backend=args.backend, **({"memory": args.memory} if args.memory else {}))
        loaded = time.perf_counter()
        result = pipe.generate(args.image, args.prompt, args.max_new_tokens, args.temperature, args.top_p,
                               args.seed, on_text=lambda s: print(s, end="", flush=True))
        answered = time.perf_counter()
    except (BuildError, ImageError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = result.timings
    print()
    print(f"backend {type(pipe.backend).__name__}; vision tokens seen by the decoder: {result.vision_tokens}")
    print(f"image encode {t.get('image_encode_s', 0) * 1e3:.1f} ms | prefill {t['prefill_s'] * 1e3:.1f} ms | "
          f"time to first token {t['ttft_s'] * 1e3:.1f} ms | decode {t['decode_tok_s']:.1f} tokens/s "
          f"({len(result.ids)} tokens)")
    if args.timings:
        load = pipe.load_timings
        print(f"start-up: runtime imports {imported - start:.2f} s | manifest {load['manifest_s'] * 1e3:.0f} ms | "
              f"tokenizer {load['tokenizer_s'] * 1e3:.0f} ms | backend (engine imports, graphs, methods) "
              f"{load['backend_s']:.2f} s | answer {answered - loaded:.2f} s | total {answered - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
