"""Temporal sampling of Ego-RNN (and LSTA's RGB variant): which frames of an N-frame clip each input uses.

The reference states its formulas on 1-based frame numbers; every function here evaluates the
formula as written and returns 0-based indices into the clip's frame list.
"""

import numpy as np


def _check(num_frames: int, length: int, what: str) -> None:
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame to sample {what}, got num_frames={num_frames}")
    if length < 1:
        raise ValueError(f"{what} must be >= 1, got {length}")


def rgb_indices(num_frames: int, frames: int, endpoint: bool = False) -> np.ndarray:
    """(frames,) int 0-based: floor(linspace(1, N, T, endpoint)) - 1, train and test alike.

    endpoint=False is Ego-RNN's formula (frame N itself is never sampled), endpoint=True LSTA's (first and last
    frame always sampled).
    """
    _check(num_frames, frames, "frames")
    # Short clips repeat frames (the formula never exceeds N).
    return np.floor(np.linspace(1, num_frames, frames, endpoint=endpoint)).astype(np.int64) - 1


def stack_indices(starts, num_frames: int, stack: int) -> np.ndarray:
    """(..., stack) int 0-based frames s..s+stack-1 for 1-based starts s, clamped to the clip."""
    _check(num_frames, stack, "stack")
    starts = np.asarray(starts, np.int64)
    # Clips shorter than a stack repeat their last frame instead of failing.
    return np.minimum(starts[..., None] + np.arange(stack) - 1, num_frames - 1)


def flow_start_train(num_frames: int, stack: int, rng: np.random.Generator) -> int:
    """1-based random start s uniform in [1, N - stack] (inclusive); 1 when N <= stack."""
    _check(num_frames, stack, "stack")
    # The reference raises for N <= stack (empty range); ego_jax starts at 1 and repeats the last frame.
    return int(rng.integers(1, max(num_frames - stack, 1), endpoint=True))


def flow_start_test(num_frames: int, stack: int) -> int:
    """1-based centre start ceil((N - stack) / 2), or 1 when N <= stack."""
    _check(num_frames, stack, "stack")
    return max(-(-(num_frames - stack) // 2), 1)


def flow_starts_eval(num_frames: int, stack: int, k: int) -> np.ndarray:
    """(k,) 1-based starts floor(linspace(1, N - stack + 1, k, endpoint=False)) of k-stack evaluation."""
    _check(num_frames, stack, "stack")
    if k < 1:
        raise ValueError(f"the number of evaluation stacks must be >= 1, got {k}")
    starts = np.floor(np.linspace(1, num_frames - stack + 1, k, endpoint=False)).astype(np.int64)
    # For N < stack the formula descends below frame 1; those stacks start at 1.
    return np.maximum(starts, 1)
