"""Token sampling that the Java and Swift ports reproduce bit for bit: SplitMix64 + nucleus (top-p) sampling.

    sampler = Sampler(temperature=0.7, top_p=0.9, seed=42)
    token = sampler.pick(logits)  # logits: (V,) float32 or float64

The algorithm, exactly (the ports follow this text; docs/vectors.md has the test vectors):

SplitMix64 (Steele, Lea & Flood 2014; the `splitmix64.c` of Vigna) keeps one unsigned 64-bit state,
set to `seed mod 2**64`. All arithmetic wraps modulo 2**64; `>>` is a logical shift.
    next_u64():   state += 0x9e3779b97f4a7c15; z = state
                  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
                  z = (z ^ (z >> 27)) * 0x94d049bb133111eb
                  return z ^ (z >> 31)
    next_double(): (next_u64() >> 11) * 2**-53        (53 random bits, in [0, 1))
Seed 0 gives 0xe220a8397b1dcdaf first (Java's `new SplittableRandom(0).nextLong()` is the same value).

pick(logits), with x = logits converted to float64 (exact for float32 input):
 1. temperature <= 0: greedy. Return the index of the largest x, the lowest index on ties. No draw.
 2. Else, in IEEE float64, each step rounded as written:
      y_i = x_i / temperature;  m = max_i y_i;  e_i = exp(y_i - m)
      s = e_0 + e_1 + ... + e_{V-1}, added one by one in index order (not pairwise)
      p_i = e_i / s
 3. order = the ids sorted by p descending, equal p: lower id first (a stable sort of -p).
 4. c_k = p_order[0] + ... + p_order[k], again added one by one (the running sum).
    Keep the first K = k + 1 ids of `order`, k the smallest index with c_k >= top_p;
    K = V when no c_k reaches top_p (e.g. top_p = 1 and the sum rounds to just under 1).
 5. u = next_double() * c_{K-1}: exactly one draw per sampled token.
 6. Return order[j] for the smallest j < K with c_j > u; order[K-1] if none is (rounding).

Only `exp` is left to the platform's math library, whose last bit may differ (numpy's, Java's
StrictMath.exp, Swift's exp); a pick then changes only when u or top_p falls within a few ulps of a
running sum, which the vectors' cases are checked to avoid (runtime/vectors.py).
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


class SplitMix64:
    """The 64-bit generator above, on Python ints masked to 64 bits."""

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        self.state = int(seed) & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def next_double(self) -> float:
        return (self.next_u64() >> 11) * 2.0 ** -53


class Sampler:
    """Greedy when temperature <= 0, else nucleus sampling over softmax(logits / temperature)."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0):
        self.temperature, self.top_p = float(temperature), float(top_p)
        if math.isnan(self.temperature) or math.isnan(self.top_p):
            raise ValueError(f"temperature and top_p must be numbers, got {temperature!r}, {top_p!r}")
        self.rng = SplitMix64(seed)

    def pick(self, logits) -> int:
        x = np.asarray(logits, dtype=np.float64).ravel()
        if x.size == 0:
            raise ValueError("cannot pick from empty logits")
        if self.temperature <= 0:
            return int(np.argmax(x))  # first maximum: lowest id on ties
        ids, running = self.nucleus(x)
        u = self.rng.next_double() * running[-1]
        j = int(np.searchsorted(running, u, side="right"))  # first j with running[j] > u
        return int(ids[min(j, len(ids) - 1)])

    def nucleus(self, logits) -> tuple[np.ndarray, np.ndarray]:
        """Steps 2-4: the kept ids, most probable first, and the running sums of their probabilities."""
        y = np.asarray(logits, dtype=np.float64).ravel() / self.temperature
        e = np.exp(y - y.max())
        p = e / np.cumsum(e)[-1]  # cumsum adds in index order (np.sum would add pairwise)
        order = np.argsort(-p, kind="stable")
        running = np.cumsum(p[order])
        k = int(np.searchsorted(running, self.top_p, side="left"))  # first k with running[k] >= top_p
        keep = min(k + 1, len(order))
        return order[:keep], running[:keep]
