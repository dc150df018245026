"""runtime/sampler.py: SplitMix64 against published values; greedy, nucleus and the drawn distribution."""

import numpy as np
import pytest

from runtime.sampler import Sampler, SplitMix64


def test_splitmix64_published_values():
    # splitmix64.c (Vigna) / Java's SplittableRandom(0).nextLong(): seed 0.
    r = SplitMix64(0)
    assert [r.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    # Rosetta Code, "Pseudo-random numbers/Splitmix64": the first five for seed 1234567 ...
    r = SplitMix64(1234567)
    assert [r.next_u64() for _ in range(5)] == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                                                4593380528125082431, 16408922859458223821]
    # ... and floor(5 * next_float) over 100,000 draws for seed 987654321.
    r = SplitMix64(987654321)
    counts = np.bincount([int(r.next_double() * 5) for _ in range(100_000)], minlength=5)
    assert counts.tolist() == [20027, 19892, 20073, 19978, 20030]


def test_splitmix64_wraps_and_doubles_are_53_bit():
    r, s = SplitMix64(-1), SplitMix64((1 << 64) - 1)  # the seed is taken modulo 2**64
    assert [r.next_u64() for _ in range(4)] == [s.next_u64() for _ in range(4)]
    r = SplitMix64(7)
    for _ in range(1000):
        d = r.next_double()
        assert 0.0 <= d < 1.0 and (d * 2.0 ** 53).is_integer()
    with pytest.raises(TypeError):
        SplitMix64(1.5)


def test_greedy_takes_the_lowest_id_on_ties_and_draws_nothing():
    s = Sampler(temperature=0.0, seed=3)
    assert s.pick(np.array([0.1, 2.0, -1.0, 2.0, 2.0], np.float32)) == 1
    assert s.pick([5.0]) == 0
    assert s.rng.state == 3  # no draw
    assert Sampler(temperature=-1.0).pick([0.0, 0.0, 1.0]) == 2


def test_nucleus_keeps_the_shortest_prefix_reaching_top_p():
    logits = np.log(np.array([0.1, 0.5, 0.15, 0.25]))
    ids, running = Sampler(1.0, 1.0).nucleus(logits)
    assert ids.tolist() == [1, 3, 2, 0] and running[-1] == pytest.approx(1.0)
    assert Sampler(1.0, 0.45).nucleus(logits)[0].tolist() == [1]
    assert Sampler(1.0, 0.6).nucleus(logits)[0].tolist() == [1, 3]
    assert Sampler(1.0, 0.8).nucleus(logits)[0].tolist() == [1, 3, 2]
    assert Sampler(1.0, 1e-12).nucleus(logits)[0].tolist() == [1]  # at least one token
    tied = Sampler(1.0, 0.5).nucleus(np.zeros(4))[0]
    assert tied.tolist() == [0, 1]  # equal probabilities: lower id first


def test_small_top_p_is_greedy_and_draws_once_per_token():
    logits = np.random.default_rng(0).normal(size=50)
    s = Sampler(temperature=1.3, top_p=1e-9, seed=5)
    assert [s.pick(logits) for _ in range(20)] == [int(np.argmax(logits))] * 20
    r = SplitMix64(5)
    for _ in range(20):
        r.next_u64()
    assert s.rng.state == r.state


def test_restricted_draws_stay_in_the_nucleus():
    logits = np.log(np.array([0.1, 0.5, 0.15, 0.25]))
    s = Sampler(temperature=1.0, top_p=0.6, seed=11)
    assert {s.pick(logits) for _ in range(500)} == {1, 3}


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_distribution(temperature):
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    logits = np.log(probs)
    expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
    s, n = Sampler(temperature=temperature, seed=2024), 20_000
    counts = np.bincount([s.pick(logits) for _ in range(n)], minlength=len(probs))
    chi2 = float((((counts - n * expected) ** 2) / (n * expected)).sum())
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom: p = 0.001


def test_top_p_renormalises_the_kept_tokens():
    probs = np.array([0.5, 0.3, 0.2])
    s, n = Sampler(temperature=1.0, top_p=0.75, seed=9), 20_000
    counts = np.bincount([s.pick(np.log(probs)) for _ in range(n)], minlength=3)
    assert counts[2] == 0
    assert counts[0] / n == pytest.approx(0.5 / 0.8, abs=0.015)


def test_same_seed_same_picks_other_seed_other_picks():
    logits = np.random.default_rng(1).normal(size=1000).astype(np.float32)

    def run(seed):
        s = Sampler(temperature=1.0, top_p=0.95, seed=seed)
        return [s.pick(logits) for _ in range(30)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Sampler(temperature=float("nan"))
    with pytest.raises(ValueError):
        Sampler(temperature=1.0).pick([])
