"""Training: the batched forward is the model's own forward, targets are the answers, and the loss falls."""

import numpy as np
import torch

from data.shapes import samples
from models.train import (Batcher, init_weights, pixels_of, sequence_logits, task_config, task_tokenizer, train)
from models.vlm import VLM, Cursor
from runtime.image import preprocess


def _small_model(tok, seed=0):
    cfg = task_config(tok.get_vocab_size(with_added_tokens=True))
    cfg = cfg.replace(decoder={"num_layers": 2})
    torch.manual_seed(seed)
    vlm = VLM(cfg).eval()
    init_weights(vlm, std=0.1)  # larger than training's, so that the comparison below is not of near-zeros
    return vlm


def test_shared_context_forward_matches_the_chunked_path():
    tok = task_tokenizer()
    vlm = _small_model(tok)
    batcher = Batcher(tok, vlm.cfg)
    items = samples("val", "all", 4)
    qas = [(s.question, s.answer) for s in items]  # two images, two questions each
    ids, _ = batcher(qas)
    pixels = pixels_of([items[0].image, items[2].image])
    with torch.no_grad():
        batched = sequence_logits(vlm, batcher.prefix, vlm.encode_image(pixels), ids, repeats=2)
        for b, image in enumerate([0, 0, 1, 1]):
            vlm.decoder.reset()
            cur = Cursor()
            vlm.prefill_text(cur, batcher.prefix[None])
            vlm.prefill_image(cur, vlm.encode_image(pixels[image:image + 1]))
            chunked = vlm.prefill_text(cur, ids[b:b + 1], all_logits=True)
            torch.testing.assert_close(batched[b], chunked[0], atol=1e-4, rtol=1e-4)


def test_targets_are_the_answer_and_the_stop_token():
    tok = task_tokenizer()
    batcher = Batcher(tok, task_config(tok.get_vocab_size(with_added_tokens=True)))
    qas = [("What colour is the circle?", "red"), ("How many squares are there?", "3")]
    ids, targets = batcher(qas)
    for b, (question, answer) in enumerate(qas):
        positions = (targets[b] != -100).nonzero().flatten()
        assert tok.decode(targets[b, positions].tolist()) == answer  # the stop token is skipped when decoding
        assert targets[b, positions[-1]] == batcher.stop
        assert torch.equal(ids[b, positions + 1], targets[b, positions])  # position t predicts token t+1
        prompt = tok.decode(ids[b, :positions[0] + 1].tolist(), skip_special_tokens=False)
        assert prompt.endswith("assistant\n") and question in prompt


def test_training_pixels_are_the_runtime_preprocessing():
    cfg = task_config(512)
    s = samples("test", "easy", 1)[0]
    expected = preprocess(s.image, cfg.image_spec())
    np.testing.assert_array_equal(pixels_of([s.image]).numpy(), expected)


def test_a_training_scene_asks_every_question_type_before_repeating_one():
    from collections import Counter

    from data.shapes import every_question
    from models.train import balanced_order

    rng = np.random.default_rng(0)
    for i in range(30):
        _, qs = every_question("train", i)
        types = [q[3] for q in qs]
        total = Counter(types)
        order = balanced_order(rng, types)
        assert sorted(order) == list(range(len(qs)))
        for p in range(1, len(order) + 1):
            seen = Counter(types[j] for j in order[:p])
            # a type is asked a second (third, ...) time only when every type with questions left is level
            for t in seen:
                for u in total:
                    assert seen[t] <= seen[u] + 1 or seen[u] == total[u], (i, p, t, u)


def test_a_few_steps_of_training_lower_the_loss():
    tok = task_tokenizer()
    vlm = _small_model(tok)
    init_weights(vlm)
    losses = []
    train(vlm.cfg, tok, steps=24, lr=3e-3, seed=0, log=lambda line: None, eval_every=1000, images=4, questions=2,
          val_samples=4, vlm=vlm, on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses


def test_the_train_time_encoder_sees_and_folds_into_the_shipped_form():
    from models.train import fold_encoder, trainable_encoder

    tok = task_tokenizer()
    vlm = _small_model(tok)
    items = samples("val", "all", 4)
    pixels = pixels_of([s.image for s in items])
    with torch.no_grad():
        assert vlm.vision(pixels).std(0).mean() < 1e-6  # default init: every image looks the same
        trainable_encoder(vlm)
        vlm.train()
        assert vlm.vision(pixels).std(0).mean() > 1e-2  # the multi-branch form with BatchNorm keeps the signal
        vlm.eval()
        features = vlm.vision(pixels)
        fold_encoder(vlm)
        torch.testing.assert_close(vlm.vision(pixels), features, atol=1e-4, rtol=1e-4)
    shipped = VLM(vlm.cfg)
    shipped.load_state_dict(vlm.state_dict())  # strict: the folded encoder has the shipped layout


def test_the_every_mix_asks_distinct_questions_of_each_scene():
    from data.shapes import every_question
    from models.train import train_batch

    tok = task_tokenizer()
    batcher = Batcher(tok, task_config(tok.get_vocab_size(with_added_tokens=True)))
    pixels, ids, targets, cells = train_batch(3, batcher, images=2, questions=12, mix="every")
    assert pixels.shape[0] == 2 and ids.shape[0] == 24 and cells.shape[0] == 2
    for scene in range(2):
        rows = {tuple(r.tolist()) for r in ids[12 * scene:12 * scene + 12]}
        assert len(rows) == min(12, len(every_question("train", 6 + scene)[1]))
