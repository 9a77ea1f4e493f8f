"""Temporal sampling vs the reference formulas; expected values worked out by hand (1-based, then -1)."""

import numpy as np
import pytest

from ego_jax.data import sampling


@pytest.mark.parametrize(
    "n, t, expected_1based",
    [
        # N < T: 1 + 4i/7 = 1, 1.57, 2.14, 2.71, 3.29, 3.86, 4.43 -> short clips repeat, frame N never used.
        (5, 7, [1, 1, 2, 2, 3, 3, 4]),
        (1, 3, [1, 1, 1]),
        # N = T: 1 + 15i/16 -> 1, 1.94, 2.88, ..., 15.06.
        (16, 16, [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        # Long clip: 1 + 33i/7 = 1, 5.71, 10.43, 15.14, 19.86, 24.57, 29.29.
        (34, 7, [1, 5, 10, 15, 19, 24, 29]),
        (645, 4, [1, 162, 323, 484]),
    ],
)
def test_rgb_indices(n, t, expected_1based):
    np.testing.assert_array_equal(sampling.rgb_indices(n, t), np.array(expected_1based) - 1)


@pytest.mark.parametrize(
    "n, t, expected_1based",
    [
        # LSTA's makeDataset: linspace(1, N, T, endpoint=True) = 1, 1.67, 2.33, 3, 3.67, 4.33, 5 -> frame N is used.
        (5, 7, [1, 1, 2, 3, 3, 4, 5]),
        (1, 3, [1, 1, 1]),
        (16, 16, list(range(1, 17))),
        # 1 + 33i/6 = 1, 6.5, 12, 17.5, 23, 28.5, 34.
        (34, 7, [1, 6, 12, 17, 23, 28, 34]),
    ],
)
def test_rgb_indices_with_endpoint(n, t, expected_1based):
    np.testing.assert_array_equal(sampling.rgb_indices(n, t, endpoint=True), np.array(expected_1based) - 1)


@pytest.mark.parametrize(
    "n, start",
    [
        (3, 1),  # N < stack
        (5, 1),  # N = stack
        (6, 1),  # N = stack + 1: ceil(1/2) = 1
        (7, 1),  # ceil(2/2)
        (8, 2),  # ceil(3/2)
        (34, 15),  # ceil(29/2)
    ],
)
def test_flow_start_test(n, start):
    assert sampling.flow_start_test(n, 5) == start


@pytest.mark.parametrize(
    "n, k, expected",
    [
        (34, 5, [1, 6, 12, 18, 24]),  # 1 + 29i/5 = 1, 6.8, 12.6, 18.4, 24.2
        (7, 5, [1, 1, 1, 2, 2]),  # 1 + 2i/5
        (5, 5, [1, 1, 1, 1, 1]),  # N = stack: linspace(1, 1)
        (3, 5, [1, 1, 1, 1, 1]),  # N < stack: 1, 0.6, 0.2, -0.2, -0.6 clamped to 1
        (34, 1, [1]),
    ],
)
def test_flow_starts_eval(n, k, expected):
    np.testing.assert_array_equal(sampling.flow_starts_eval(n, 5, k), expected)


@pytest.mark.parametrize(
    "start, n, expected",
    [
        (15, 34, [14, 15, 16, 17, 18]),
        (1, 5, [0, 1, 2, 3, 4]),
        (1, 3, [0, 1, 2, 2, 2]),  # short clip repeats its last frame
    ],
)
def test_stack_indices(start, n, expected):
    np.testing.assert_array_equal(sampling.stack_indices(start, n, 5), expected)


def test_stack_indices_of_several_starts():
    np.testing.assert_array_equal(sampling.stack_indices([1, 3], 4, 3), [[0, 1, 2], [2, 3, 3]])


@pytest.mark.parametrize("n, allowed", [(10, {1, 2, 3, 4, 5}), (7, {1, 2}), (6, {1}), (5, {1}), (2, {1})])
def test_flow_start_train_covers_exactly_the_inclusive_range(n, allowed):
    rng = np.random.default_rng(0)
    seen = {sampling.flow_start_train(n, 5, rng) for _ in range(200)}
    assert seen == allowed


def test_flow_start_train_is_a_function_of_the_generator_state():
    a = [sampling.flow_start_train(100, 5, np.random.default_rng([1, 2, 3])) for _ in range(3)]
    assert len(set(a)) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: sampling.rgb_indices(0, 7),
        lambda: sampling.flow_start_test(0, 5),
        lambda: sampling.flow_starts_eval(10, 5, 0),
        lambda: sampling.rgb_indices(5, 0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
