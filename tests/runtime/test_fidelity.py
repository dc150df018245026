"""runtime/fidelity.py: KL of answer distributions, and the model with its tokenizer from a checkpoint."""

import numpy as np

from runtime.fidelity import kl_divergence, model_and_tokenizer


def test_kl_divergence_matches_its_definition():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    pp = np.exp(p) / np.exp(p).sum(-1, keepdims=True)
    qq = np.exp(q) / np.exp(q).sum(-1, keepdims=True)
    np.testing.assert_allclose(kl_divergence(p, q), (pp * np.log(pp / qq)).sum(-1), rtol=1e-10)
    np.testing.assert_allclose(kl_divergence(p, p + 3.0), 0.0, atol=1e-12)  # a shift of logits is no change
    assert (kl_divergence(p, q) > 0).all()


def test_model_and_tokenizer_follow_the_checkpoint_and_the_plan(tmp_path):
    from export.random_model import RANDOM_MODEL_DIR

    plan = tmp_path / "exit.json"
    plan.write_text('{"name": "exit-1", "layers": {"0": "full", "1": "exit"}}')
    vlm, tok = model_and_tokenizer(RANDOM_MODEL_DIR, str(plan))
    assert not vlm.training and vlm.plan.name == "exit-1"
    assert tok.stop_tokens == tuple(vlm.cfg.prompt.stop_tokens) and tok.stop_ids
    assert tok.vocab_size <= vlm.cfg.decoder.vocab_size
