"""The bench's figures from its timings: ratios against dense, the roofline, the vision K/V design
comparison, and the Markdown table (tools/bench.py measures; this file only computes and prints)."""

from __future__ import annotations

from tools.measure import METRICS


def quantized(row: dict) -> bool:
    return (row["quant"], row["quant_vision"]) != ("none", "none")


def ratios(results: list[dict]) -> None:
    """Adds, to every row, its speed-ups over the first dense row of the same backend (the main model's:
    rows of an --also model are against it too, quantized rows against the fp32 one). The share of vision
    prefill time removed needs the text-only floor of the same weights, so a quantized row has none."""
    dense = {}
    for r in results:
        if r["plan"] == "dense":
            dense.setdefault(r["backend"], r)
    for r in results:
        d = dense.get(r["backend"])
        if d is None:
            continue
        t = {m: r["timings"][m]["median"] for m in METRICS}
        td = {m: d["timings"][m]["median"] for m in METRICS}
        floor = r["text_only_prefill_s"]
        r["vs_dense"] = {
            "prefill_speedup": td["prefill_s"] / t["prefill_s"],
            "ttft_speedup": td["ttft_s"] / t["ttft_s"],
            "decode_ratio": t["decode_tok_s"] / td["decode_tok_s"] if td["decode_tok_s"] else None,
            "vision_prefill_time_removed": (td["prefill_s"] - t["prefill_s"]) / (td["prefill_s"] - floor)
            if not quantized(r) and td["prefill_s"] > floor else None,
            "kv_ratio": r["cost"]["kv_bytes_static"] / d["cost"]["kv_bytes_static"],
            "ttft_bound_s": t["image_encode_s"] + t["prefill_s"],
        }


def roofline(results: list[dict], peaks: dict, bandwidth: float) -> None:
    """Prefill FLOP rate over the fp32 GEMM peak, decode bytes (fp32 parameters + filled KV) per second over
    the memory bandwidth. Neither holds for a quantized row (other kernels, fewer bytes): it gets None."""
    for r in results:
        t = r["timings"]
        if quantized(r):
            r["roofline"] = None
            continue
        prefill_rate = r["cost"]["prefill_flops"] / t["prefill_s"]["median"]
        decode_rate = r["cost"]["decode_bytes_per_token"] * t["decode_tok_s"]["median"]
        r["roofline"] = {"prefill_flops_per_s": prefill_rate, "prefill_of_gemm_peak": prefill_rate / peaks[r["backend"]],
                         "decode_bytes_per_s": decode_rate, "decode_of_bandwidth": decode_rate / bandwidth}


def table(results: list[dict]) -> str:
    head = ("| backend | plan | vision tokens | encode ms | prefill ms | TTFT ms | decode tok/s | prefill x | "
            "vision prefill time removed | KV MiB | graphs MB | prefill % GEMM peak | decode % bandwidth |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        t, v = r["timings"], r.get("vs_dense", {})
        removed = v.get("vision_prefill_time_removed")
        cells = [r["backend"], r["plan"], str(r["vision_tokens"]), f"{t['image_encode_s']['median'] * 1e3:.1f}",
                 f"{t['prefill_s']['median'] * 1e3:.1f}", f"{t['ttft_s']['median'] * 1e3:.1f}",
                 f"{t['decode_tok_s']['median']:.1f}", f"{v.get('prefill_speedup', 1.0):.2f}",
                 "-" if removed is None else f"{100 * removed:.0f}%", f"{r['cost']['kv_bytes_static'] / 2 ** 20:.1f}",
                 f"{r['graph_bytes'] / 1e6:.1f}"]
        roof = r["roofline"]
        cells += ["-", "-"] if roof is None else [f"{100 * roof['prefill_of_gemm_peak']:.1f}",
                                                  f"{100 * roof['decode_of_bandwidth']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def vision_kv_comparison(rows: list[dict]) -> list[dict]:
    """Per planned build measured in both designs: the vision K/V as method outputs/inputs (io, what phones
    run) over the earlier buffers shared between methods, from the same interleaved run."""
    out = []
    for new in [r for r in rows if r["vision_kv"] == "io"]:
        key = (new["backend"], new["model"], new["quant"], new["quant_vision"])
        old = [r for r in rows if r["vision_kv"] == "buffers" and r["plan"].replace("+kvbuffers", "") == new["plan"]
               and (r["backend"], r["model"], r["quant"], r["quant_vision"]) == key]
        if old:
            t_new, t_old = new["timings"], old[0]["timings"]
            out.append({"plan": new["plan"], "backend": new["backend"],
                        "ttft_new_over_old": t_new["ttft_s"]["median"] / t_old["ttft_s"]["median"],
                        "decode_new_over_old": t_new["decode_tok_s"]["median"] / t_old["decode_tok_s"]["median"]})
    return out
