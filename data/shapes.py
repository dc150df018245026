"""The generated visual-question task: coloured shapes and rendered digits, with easy and hard questions.

    from data.shapes import samples
    for s in samples("test", "hard", 200):
        s.image, s.question, s.answer  # PIL RGB image, str, one-word str

    python -m data.shapes --split test --kind all --n 8 --out examples/  # PNGs + questions.json

A scene is a 4 x 4 grid of cells on a plain or noisy light background. Two to six shapes (circle,
square, triangle; six colours; large or small) sit in distinct cells, and one or two corner cells
hold a rendered digit (PIL's built-in FreeType font: nothing is downloaded). With the default
256 px image and a stride-32 encoder, a cell is 2 x 2 vision tokens.

Questions mirror the seeds' easy / hard finding (docs/design.md §12):
  easy  (coarse: colour presence, the colour of the only circle, the shape of the only red object)
  hard  (fine-grained: counting, reading the digit in a named corner, the colour of the shape left of
         another, the colour of a small object)
Every answer is one word.

Everything is deterministic: sample `i` of a split is drawn from its own generator seeded by
(split seed, i), so splits never overlap and any sample can be rebuilt alone. The test split is for
reporting only; training uses "train", and calibration and plan choice use "val".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}
KINDS = ("easy", "hard")
GRID = 4
COLOURS = {
    "red": (215, 35, 35), "green": (30, 150, 50), "blue": (35, 75, 215),
    "yellow": (225, 195, 20), "purple": (135, 50, 165), "orange": (240, 125, 25),
}
SHAPES = ("circle", "square", "triangle")
CORNERS = {"top left": (0, 0), "top right": (0, GRID - 1), "bottom left": (GRID - 1, 0),
           "bottom right": (GRID - 1, GRID - 1)}
QUESTION_TYPES = {
    "easy": ("colour_present", "colour_of_shape", "shape_of_colour"),
    "hard": ("count", "corner_digit", "left_of", "small_colour"),
}


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    small: bool
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    items: tuple[Item, ...]
    digits: dict  # (row, col) corner cell -> digit
    background: tuple[int, int, int]
    noise: float  # std of the background's pixel noise, 0 for a plain background
    seed: int  # for the rendering jitter


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    question: str
    answer: str
    kind: str  # "easy" | "hard"
    qtype: str  # one of QUESTION_TYPES[kind]


def sample_scene(rng: random.Random) -> Scene:
    corners = rng.sample(list(CORNERS.values()), rng.choice((1, 2)))
    digits = {cell: rng.randrange(10) for cell in corners}
    free = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in digits]
    cells = rng.sample(free, rng.randint(2, 6))
    items = tuple(Item(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.random() < 0.25, r, c)
                  for r, c in cells)
    grey = rng.randint(205, 250)
    background = tuple(min(255, grey + rng.randint(-8, 8)) for _ in range(3))
    noise = rng.choice((0.0, 0.0, 6.0, 12.0))
    return Scene(items, digits, background, noise, rng.randrange(2**31))


def render(scene: Scene, size: int = 256) -> Image.Image:
    """The scene as an RGB image of size x size pixels."""
    rng = random.Random(scene.seed)
    cell = size / GRID
    pixels = np.full((size, size, 3), scene.background, dtype=np.float32)
    if scene.noise:
        pixels += np.random.default_rng(scene.seed).normal(0.0, scene.noise, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for it in scene.items:
        radius = cell * (rng.uniform(0.1, 0.14) if it.small else rng.uniform(0.3, 0.4))
        slack = cell / 2 - radius - 1
        cx = (it.col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (it.row + 0.5) * cell + rng.uniform(-slack, slack)
        colour = tuple(int(np.clip(v + rng.randint(-15, 15), 0, 255)) for v in COLOURS[it.colour])
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if it.shape == "circle":
            draw.ellipse(box, fill=colour)
        elif it.shape == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=colour)
    for (row, col), digit in scene.digits.items():
        font = ImageFont.load_default(size=int(cell * rng.uniform(0.55, 0.7)))
        left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
        x = (col + 0.5) * cell - (left + right) / 2 + rng.uniform(-cell / 10, cell / 10)
        y = (row + 0.5) * cell - (top + bottom) / 2 + rng.uniform(-cell / 10, cell / 10)
        draw.text((x, y), str(digit), fill=(rng.randint(0, 50),) * 3, font=font)
    return image


def candidates(scene: Scene, qtype: str) -> list[tuple[str, str]]:
    """Every (question, answer) of the given type that the scene allows, in a fixed order."""
    items = scene.items
    if qtype == "colour_present":
        present = {it.colour for it in items}
        return [(f"Is there a {c} shape?", "yes" if c in present else "no") for c in sorted(COLOURS)]
    if qtype == "colour_of_shape":
        return [(f"What colour is the {it.shape}?", it.colour) for it in items
                if [j.shape for j in items].count(it.shape) == 1 and not it.small]
    if qtype == "shape_of_colour":
        return [(f"What shape is {it.colour}?", it.shape) for it in items
                if [j.colour for j in items].count(it.colour) == 1 and not it.small]
    if qtype == "count":
        return [(f"How many {shape}s are there?", str(sum(it.shape == shape for it in items))) for shape in SHAPES]
    if qtype == "corner_digit":
        return [(f"What number is in the {name} corner?", str(scene.digits[cell]))
                for name, cell in CORNERS.items() if cell in scene.digits]
    if qtype == "left_of":
        unique = [it for it in items if sum((j.colour, j.shape) == (it.colour, it.shape) for j in items) == 1]
        return [(f"What colour is the shape left of the {it.colour} {it.shape}?", left.colour)
                for it in unique if (left := _left_neighbour(items, it)) is not None]
    if qtype == "small_colour":
        return [(f"What colour is the small {it.shape}?", it.colour) for it in items
                if it.small and sum(j.small and j.shape == it.shape for j in items) == 1]
    raise ValueError(f"unknown question type {qtype!r}")


def questions(scene: Scene, qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """One (question, answer) of the given type about the scene, or None if the scene has none.

    Presence questions are drawn half "no" (when some colour is absent), half "yes"; the other types
    draw uniformly from `candidates`."""
    found = candidates(scene, qtype)
    if qtype == "colour_present":
        absent = [qa for qa in found if qa[1] == "no"]
        if absent and rng.random() < 0.5:
            return rng.choice(absent)
        return rng.choice([qa for qa in found if qa[1] == "yes"])
    return rng.choice(found) if found else None


def _left_neighbour(items, it: Item) -> Item | None:
    """The nearest shape in the same row to the left of `it`."""
    left = [j for j in items if j.row == it.row and j.col < it.col]
    return max(left, key=lambda j: j.col) if left else None


def generator(split: str, index: int) -> random.Random:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_SEEDS)}")
    return random.Random(SPLIT_SEEDS[split] * 1_000_000_007 + index)


def scene_questions(split: str, index: int, kinds=KINDS) -> tuple[Scene, list[tuple[str, str, str, str]]]:
    """Scene `index` of `split` and one (question, answer, kind, qtype) of every type it allows."""
    rng = generator(split, index)
    scene = sample_scene(rng)
    out = []
    for kind in kinds:
        for qtype in QUESTION_TYPES[kind]:
            qa = questions(scene, qtype, rng)
            if qa:
                out.append((*qa, kind, qtype))
    return scene, out


def every_question(split: str, index: int) -> tuple[Scene, list[tuple[str, str, str, str]]]:
    """Scene `index` of `split` (the scene of `scene_questions`) and every (question, answer, kind,
    qtype) it allows: about 17 per scene, for training."""
    scene = sample_scene(generator(split, index))
    return scene, [(q, a, kind, qtype) for kind in KINDS for qtype in QUESTION_TYPES[kind]
                   for q, a in candidates(scene, qtype)]


def samples(split: str, kind: str, n: int, size: int = 256, start: int = 0) -> list[Sample]:
    """The first n samples of a split: one question per scene, question types taken in turn.

    kind "all" alternates easy and hard scenes. Scenes without the wanted type are skipped, so the
    list depends only on (split, kind, n, start).
    """
    kinds = KINDS if kind == "all" else (kind,)
    if any(k not in KINDS for k in kinds):
        raise ValueError(f"unknown kind {kind!r}; valid kinds: easy, hard, all")
    wanted = [(k, q) for q in range(max(len(QUESTION_TYPES[k]) for k in kinds)) for k in kinds
              if q < len(QUESTION_TYPES[k])]
    wanted = [(k, QUESTION_TYPES[k][q]) for k, q in wanted]
    out, index = [], start
    while len(out) < n:
        kind_i, qtype = wanted[len(out) % len(wanted)]
        rng = generator(split, index)
        scene = sample_scene(rng)
        qa = questions(scene, qtype, rng)
        index += 1
        if qa:
            out.append(Sample(render(scene, size), qa[0], qa[1], kind_i, qtype))
    return out


def vocabulary_text() -> list[str]:
    """Every question and answer the task can ask, for training the tokenizer."""
    lines = [f"Is there a {c} shape?" for c in COLOURS] + [f"What shape is {c}?" for c in COLOURS]
    for s in SHAPES:
        lines += [f"What colour is the {s}?", f"How many {s}s are there?", f"What colour is the small {s}?"]
        lines += [f"What colour is the shape left of the {c} {s}?" for c in COLOURS]
    lines += [f"What number is in the {name} corner?" for name in CORNERS]
    lines += ["yes", "no", *COLOURS, *SHAPES, *[str(d) for d in range(10)]]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.shapes", description="Write task samples as PNG files "
                                 "and a questions.json listing (image, question, answer, kind, type).")
    ap.add_argument("--split", default="test", choices=tuple(SPLIT_SEEDS))
    ap.add_argument("--kind", default="all", choices=("easy", "hard", "all"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", required=True, help="directory to write")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for i, s in enumerate(samples(args.split, args.kind, args.n)):
        name = f"{args.split}-{args.kind}-{i}.png"
        s.image.save(out / name)
        listing.append({"image": name, "question": s.question, "answer": s.answer, "kind": s.kind, "type": s.qtype})
    (out / "questions.json").write_text(json.dumps(listing, indent=1) + "\n")
    print(f"wrote {len(listing)} samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
