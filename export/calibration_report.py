"""The calibration report: README.md with tables, PNG figures (matplotlib, no display) and calibration.json.

Figures: allocation.png (λ and ε per layer and token type), influence.png (VisiPruner influence per
layer and vision token, with the filtering and exit layers found), knockout.png (vision removed from
one layer, or exited from a layer on: KL and accuracy), cka.png (vision states, layer x layer) and
pareto.png (every plan scored: prefill FLOPs vs easy and hard accuracy, the front, the chosen plan).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

def write_report(result: dict, out: Path) -> None:
    """Write the whole report into a temporary directory, then rename it to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from models.checkpoint import replace_dir

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, draw in (("allocation", _allocation), ("influence", _influence), ("knockout", _knockout),
                           ("cka", _cka), ("pareto", _pareto)):
            draw(result, tmp / f"{name}.png")
        (tmp / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
        (tmp / "README.md").write_text(markdown(result))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _heatmap(ax, data, xlabels, ylabels, title, fmt="{:.2f}", cmap="viridis", log=False):
    from matplotlib.colors import LogNorm

    data = np.asarray(data, dtype=float)
    norm = LogNorm(vmin=max(data[data > 0].min(), 1e-6), vmax=data.max()) if log and (data > 0).any() else None
    im = ax.imshow(np.maximum(data, 1e-6) if log else data, aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=8)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    ax.set_title(title, fontsize=10)
    if fmt and data.size <= 64:
        for (i, j), v in np.ndenumerate(data):
            bright = im.norm(v) > 0.6  # dark text on the bright end of the colour map
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="k" if bright else "w")
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def _layers(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _allocation(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    m = result["measurements"]
    lam, eps = np.array(m["lambda"]), np.array(m["epsilon"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    _heatmap(axes[0], lam, m["token_types"], _layers(len(lam)), "λ: attention mass over the answer")
    _heatmap(axes[1], eps, m["token_types"], _layers(len(eps)), "ε: λ per key of the type", fmt="{:.3f}")
    _save(fig, path)


def _influence(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    m = result["measurements"]
    drop = 1 - np.array(m["influence_cos_mean"])  # (L, N_v)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1.3]})
    _heatmap(axes[0], drop, [str(j) if j % 8 == 0 else "" for j in range(drop.shape[1])], _layers(len(drop)),
             "1 - cosine when one vision token is masked (mean over samples; log)", fmt=None, log=True)
    axes[0].set_xlabel("vision token (raster order)")
    layers = np.arange(len(drop))
    width = 0.4
    for offset, key, label in ((-width / 2, "filtering_layer", "filtering layer"), (width / 2, "exit_layer", "exit layer")):
        counts = [m[key]["counts"][str(i)] for i in layers]
        axes[1].bar(layers + offset, counts, width, label=label)
    axes[1].set_xticks(layers, _layers(len(layers)), fontsize=8)
    axes[1].set_title(f"per sample (none: exit {m['exit_layer']['none']})", fontsize=10)
    axes[1].legend(fontsize=8)
    _save(fig, path)


def _knockout(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    ko, dense = result["measurements"]["knockout"], result["dense"]
    rows = (("layer_text", "vision off in one layer"), ("exit_from", "exit from the layer on"))
    n = len(ko["layer_text"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, metric, title in zip(axes, ("kl", "easy", "hard"), ("KL(dense || plan)", "easy accuracy drop (pt)",
                                                                 "hard accuracy drop (pt)")):
        if metric == "kl":
            data = [[s["kl"] for s in ko[key]] for key, _ in rows]
        else:
            data = [[100 * (dense[metric] - s[metric]) for s in ko[key]] for key, _ in rows]
        _heatmap(ax, data, _layers(n), [label for _, label in rows], title, fmt="{:.2f}" if metric == "kl" else "{:.1f}",
                 cmap="magma")
    _save(fig, path)


def _cka(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    cka = np.array(result["measurements"]["cka"])
    labels = ["in"] + [f"L{i}" for i in range(len(cka) - 1)]
    fig, ax = plt.subplots(figsize=(5, 4.2))
    _heatmap(ax, cka, labels, labels, "linear CKA of vision states (entering L0, leaving each layer)")
    _save(fig, path)


def _pareto(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    scored, dense, chosen = result["scored"], result["dense"], result["chosen"]
    flops = np.array([s["flops"] for s in scored]) / 1e6
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    budget = result["options"]["budget"]
    for ax, kind, limit in zip(axes, ("easy", "hard"), (budget["max_easy_drop"], budget["max_hard_drop"])):
        acc = 100 * np.array([s[kind] for s in scored])
        ax.scatter(flops, acc, s=14, c="0.6", label="plans scored")
        order = np.argsort(flops)
        front = np.maximum.accumulate(acc[order])
        ax.step(flops[order], front, where="post", color="C0", label="front (best accuracy at <= FLOPs)")
        ax.axhline(100 * dense[kind] - limit, color="C3", ls="--", lw=1, label=f"budget (-{limit:g} pt)")
        ax.scatter([dense["flops"] / 1e6], [100 * dense[kind]], marker="s", color="k", zorder=3, label="dense")
        ax.scatter([chosen["flops"] / 1e6], [100 * chosen[kind]], marker="*", s=160, color="C1", zorder=4, label="chosen")
        ax.set_xlabel(f"decoder prefill MFLOPs ({result['options']['objective']})")
        ax.set_ylabel(f"{kind} accuracy (%), calibration split")
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _row(name: str, s: dict) -> str:
    return (f"| {name} | {' '.join(s['plan']['modes'])} | {s['flops'] / 1e6:.1f} | {_pct(s['vision_removed'])}% "
            f"| {_pct(s['easy'])} | {_pct(s['hard'])} | {s['top1']:.3f} | {s['kl']:.4f} |")


HEAD = ("| run | modes | prefill MFLOPs | vision FLOPs removed | easy % | hard % | top-1 | KL |\n"
        "|---|---|---|---|---|---|---|---|")


def markdown(result: dict) -> str:
    o, m, plan = result["options"], result["measurements"], result["plan"]
    lines = [f"# Calibration of plan `{plan['name']}`", "", plan["description"] + ".", "",
             f"Calibration questions: {o['n']} from the {o['split']} split; calibration took "
             f"{result['calibration_seconds']:.0f} s. Text-only prefill: {result['flops_text_only'] / 1e6:.1f} MFLOPs.",
             "", "## Chosen plan", "", "```json", json.dumps(plan, indent=2), "```", "",
             "### Calibration split", "", HEAD, _row("dense", result["dense"]), _row("chosen", result["chosen"]), ""]
    if "test" in result:
        t = result["test"]
        lines += [f"### Test split (held out, n={t['n']}, scored after the choice)", "", HEAD, _row("dense", t["dense"]),
                  _row("chosen", t["chosen"]), ""]
    lines += ["## Search", "", f"Greedy descent, {len(result['scored'])} plans scored. Path:", "", HEAD]
    lines += [_row(f"step {i}", s) for i, s in enumerate(result["path"], 1)] + [""]
    lines += ["![FLOPs vs fidelity](pareto.png)", "", "## Measurements (dense model, calibration split)", "",
              "### Attention allocation", "", "Per layer, the attention mass of the answer's queries on each token "
              "type, summed over the answer (λ) and per key of the type (ε); mean over heads and samples.", "",
              "| layer | " + " | ".join(f"λ {t}" for t in m["token_types"]) + " | ε image / ε instruction |",
              "|---" * (len(m["token_types"]) + 2) + "|"]
    for i, (lam, eps) in enumerate(zip(m["lambda"], m["epsilon"])):
        lines.append(f"| {i} | " + " | ".join(f"{v:.3f}" for v in lam) + f" | {eps[1] / max(eps[2], 1e-12):.2f} |")
    lines += ["", "![allocation](allocation.png)", "", "### Influence of vision tokens on the last prompt token", "",
              f"Filtering layer (cosine < 0.995): mean {_fmt(m['filtering_layer']['mean'])}; vision exit layer: mean "
              f"{_fmt(m['exit_layer']['mean'])} ({m['exit_layer']['none']} of {m['samples']} samples have none); tokens "
              f"kept at the filtering layer (L2 >= 0.2): median {m['kept_tokens_median']:g}.", "",
              "| layer | min cosine | max L2 | tokens below 0.995 | filtering here | exit here |", "|---|---|---|---|---|---|"]
    for i in range(len(m["influence_cos_min"])):
        lines.append(f"| {i} | {m['influence_cos_min'][i]:.4f} | {m['influence_l2_max'][i]:.3f} | "
                     f"{m['influential_tokens'][i]:.1f} | {m['filtering_layer']['counts'][str(i)]} | "
                     f"{m['exit_layer']['counts'][str(i)]} |")
    lines += ["", "![influence](influence.png)", "", "### Knock-out", "", HEAD]
    for key, label in (("layer_text", "vision off in layer"), ("exit_from", "exit from layer")):
        lines += [_row(f"{label} {i}", s) for i, s in enumerate(m["knockout"][key])]
    cka = np.array(m["cka"])
    lines += ["", "![knock-out](knockout.png)", "", "### CKA between the vision states of layers", "",
              "Each layer's output against its input (1: the layer left the vision states' geometry as it was): "
              + ", ".join(f"L{i} {cka[i, i + 1]:.3f}" for i in range(len(cka) - 1))
              + f"; first input against last output: {cka[0, -1]:.3f}.", "", "![cka](cka.png)", ""]
    return "\n".join(lines)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"
