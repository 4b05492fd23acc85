"""actors/sampling.py: inverse-CDF categorical sampling against the distribution it samples."""

import numpy as np
import pytest

from actors.sampling import sample_categorical


def test_frequencies_match_the_probabilities():
    probs = np.array(
        [[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.25, 0.25, 0.5]], dtype=np.float32
    )
    rng = np.random.default_rng(0)
    n = 40_000
    counts = np.zeros_like(probs, dtype=np.float64)
    for _ in range(n // 1000):
        draws = sample_categorical(np.repeat(probs, 1000, axis=0), rng).reshape(len(probs), 1000)
        for row in range(len(probs)):
            counts[row] += np.bincount(draws[row], minlength=3)
    freq = counts / n
    # 5 standard errors of a frequency at p = 0.5 and n = 40k is 0.0125
    np.testing.assert_allclose(freq, probs, atol=0.0125)
    assert counts[1, 2] == 0 and counts[2, 0] == 0 and counts[2, 1] == 0  # zero probability: never


def test_hand_example_with_fixed_uniforms():
    class FixedUniforms:
        def __init__(self, u):
            self.u = np.asarray(u, dtype=np.float64).reshape(-1, 1)

        def random(self, shape):
            assert shape == self.u.shape
            return self.u

    probs = np.array([[0.2, 0.3, 0.5]] * 5)
    # cdf = 0.2, 0.5, 1.0: u < 0.2 -> 0, 0.2 <= u < 0.5 -> 1, u >= 0.5 -> 2
    actions = sample_categorical(probs, FixedUniforms([0.0, 0.19, 0.2, 0.49, 0.999]))
    assert actions.tolist() == [0, 0, 1, 1, 2] and actions.dtype == np.int64


def test_rounding_never_selects_past_the_last_positive_action():
    probs = np.array([[0.3, 0.3, 0.3999999, 0.0]], dtype=np.float32)  # sums to a hair under 1

    class AlmostOne:
        def random(self, shape):
            return np.full(shape, 1.0 - 1e-12)

    assert sample_categorical(probs, AlmostOne()).tolist() == [2]


def test_same_seed_same_actions():
    probs = np.full((16, 4), 0.25)
    a = sample_categorical(probs, np.random.default_rng(3))
    b = sample_categorical(probs, np.random.default_rng(3))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("shape", [(4,), (2, 0), (2, 3, 4)])
def test_wrong_shapes_raise(shape):
    with pytest.raises(ValueError, match=r"\[B, A\]"):
        sample_categorical(np.ones(shape), np.random.default_rng(0))
