"""The generated task: deterministic, splits apart, and every label agrees with the rendered pixels."""

import numpy as np
import pytest

from data.shapes import (CORNERS, COLOURS, GRID, QUESTION_TYPES, SHAPES, every_question, render, sample_scene,
                         samples, scene_questions, generator, vocabulary_text)


def _pixels(image):
    return np.asarray(image).astype(np.int32)


def _near(pixels, rgb, tol=45):
    return (np.abs(pixels - np.array(rgb)).max(-1) <= tol)


def test_same_split_same_samples_and_splits_differ():
    a, b = samples("test", "all", 12), samples("test", "all", 12)
    assert [(s.question, s.answer) for s in a] == [(s.question, s.answer) for s in b]
    assert all(np.array_equal(_pixels(x.image), _pixels(y.image)) for x, y in zip(a, b))
    val = samples("val", "all", 12)
    assert not any(np.array_equal(_pixels(x.image), _pixels(y.image)) for x, y in zip(a, val))


def test_unknown_split_and_kind_fail_clearly():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        generator("dev", 0)
    with pytest.raises(ValueError, match="unknown kind 'medium'"):
        samples("test", "medium", 1)


def test_kinds_take_their_question_types_in_turn():
    easy = samples("val", "easy", 9)
    assert [s.qtype for s in easy] == list(QUESTION_TYPES["easy"]) * 3
    hard = samples("val", "hard", 8)
    assert [s.qtype for s in hard] == list(QUESTION_TYPES["hard"]) * 2
    mixed = samples("val", "all", 14)
    assert {s.kind for s in mixed} == {"easy", "hard"} and {s.qtype for s in mixed} == {
        *QUESTION_TYPES["easy"], *QUESTION_TYPES["hard"]}
    assert all(s.image.mode == "RGB" and s.image.size == (256, 256) for s in mixed)


def test_colour_presence_answers_match_the_pixels():
    checked = 0
    for s in samples("test", "easy", 60):
        if s.qtype != "colour_present":
            continue
        colour = s.question.split()[3]
        count = _near(_pixels(s.image), COLOURS[colour]).sum()
        assert (count > 40) == (s.answer == "yes"), (s.question, s.answer, count)
        checked += 1
    assert checked >= 15


def test_digits_sit_in_their_corners_and_nowhere_else():
    for i in range(30):
        scene = sample_scene(generator("test", i))
        dark = (_pixels(render(scene)).max(-1) < 80)  # digits are drawn near black; shapes and backgrounds are not
        cell = 256 // GRID
        for r in range(GRID):
            for c in range(GRID):
                ink = dark[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].sum()
                assert (ink > 20) == ((r, c) in scene.digits), (i, r, c, ink)


def test_answers_follow_the_scene():
    for i in range(40):
        scene, qas = every_question("val", i)
        for question, answer, kind, qtype in qas:
            if qtype == "count":
                shape = question.split()[2][:-1]
                assert int(answer) == sum(it.shape == shape for it in scene.items)
            elif qtype == "corner_digit":
                name = question[len("What number is in the "):-len(" corner?")]
                assert int(answer) == scene.digits[CORNERS[name]]
            elif qtype == "left_of":
                colour, shape = question.rstrip("?").split()[-2:]
                ref = next(it for it in scene.items if (it.colour, it.shape) == (colour, shape))
                left = [it for it in scene.items if it.row == ref.row and it.col < ref.col]
                assert answer == max(left, key=lambda it: it.col).colour
            elif qtype == "small_colour":
                shape = question.rstrip("?").split()[-1]
                assert [it.colour for it in scene.items if it.small and it.shape == shape] == [answer]
            elif qtype == "colour_of_shape":
                shape = question.rstrip("?").split()[-1]
                assert [it.colour for it in scene.items if it.shape == shape] == [answer]
            elif qtype == "shape_of_colour":
                colour = question.rstrip("?").split()[-1]
                assert [it.shape for it in scene.items if it.colour == colour] == [answer]
            assert answer in {"yes", "no", *COLOURS, *SHAPES, *map(str, range(10))}


def test_every_question_is_a_superset_of_the_sampled_ones_on_the_same_scene():
    for i in range(60):
        scene, sampled = scene_questions("train", i)
        same, every = every_question("train", i)
        assert same == scene and set(sampled) <= set(every) and len(set(every)) == len(every)
        by_type = {}
        for _, answer, _, qtype in every:
            by_type.setdefault(qtype, []).append(answer)
        present = {it.colour for it in scene.items}
        assert sorted(by_type["colour_present"]) == sorted("yes" if c in present else "no" for c in COLOURS)
        assert len(by_type["count"]) == len(SHAPES) and len(by_type.get("corner_digit", [])) == len(scene.digits)


def test_vocabulary_text_covers_every_question():
    vocab = set(vocabulary_text())
    for i in range(100):
        _, qas = every_question("train", i)
        for question, answer, _, _ in qas:
            assert question in vocab and answer in vocab


def test_cli_writes_the_samples_it_lists(tmp_path):
    import json

    from data.shapes import main
    from PIL import Image

    assert main(["--split", "val", "--kind", "hard", "--n", "3", "--out", str(tmp_path)]) == 0
    listing = json.loads((tmp_path / "questions.json").read_text())
    expected = samples("val", "hard", 3)
    assert [(e["question"], e["answer"]) for e in listing] == [(s.question, s.answer) for s in expected]
    for e, s in zip(listing, expected):
        assert np.array_equal(_pixels(Image.open(tmp_path / e["image"])), _pixels(s.image))
