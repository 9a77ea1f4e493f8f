"""Optical flow of many grey frame pairs with one method and backend.

`opencv` computes pair by pair on the CPU (TV-L1 or Farneback); `jax` computes TV-L1 for `batch` pairs per call,
split over all local devices (a shorter last call padded to the next power of two, and every call to a multiple of
the device count, so a few compiled programs serve every clip length of one frame size).
"""

import jax
import numpy as np

from ego_jax.data.flow import opencv, tvl1
from ego_jax.data.flow.tvl1 import DENSE_FLOW, TVL1

BACKENDS = ("opencv", "jax")
OPTICAL_METHODS = ("tvl1", "farneback")


def check(method: str, backend: str):
    """Raises ValueError naming what is available when a method / backend pair cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if method not in OPTICAL_METHODS:
        raise ValueError(f"unknown optical flow method {method!r}: expected one of {', '.join(OPTICAL_METHODS)}")
    if method == "farneback" and backend != "opencv":
        raise ValueError("Farneback flow has the opencv backend only: pass --backend opencv, or use TV-L1")


def optical_flow(
    prev: np.ndarray,
    next_: np.ndarray,
    *,
    method: str = "tvl1",
    backend: str = "opencv",
    params: TVL1 = DENSE_FLOW,
    batch: int = 32,
) -> np.ndarray:
    """Grey (N, H, W) uint8 pairs -> (N, H, W, 2) float32 flow in px from prev[i] to next_[i]."""
    check(method, backend)
    prev, next_ = np.asarray(prev), np.asarray(next_)
    if prev.shape != next_.shape or prev.ndim != 3:
        raise ValueError(f"expected two (N, H, W) grey stacks of one shape, got {prev.shape} and {next_.shape}")
    if backend == "opencv":
        fn = opencv.farneback if method == "farneback" else lambda a, b: opencv.tvl1(a, b, params)
        return np.stack([fn(a, b) for a, b in zip(prev, next_)]) if len(prev) else _empty(prev)
    out, devices = [], len(jax.local_devices())
    for start in range(0, len(prev), batch):
        a, b = prev[start : start + batch], next_[start : start + batch]
        size = -(-min(batch, 1 << (len(a) - 1).bit_length()) // devices) * devices
        pad = ((0, size - len(a)), (0, 0), (0, 0))
        out.append(np.asarray(tvl1.tvl1_on_devices(np.pad(a, pad), np.pad(b, pad), params))[: len(a)])
    return np.concatenate(out) if out else _empty(prev)


def _empty(prev):
    return np.zeros(prev.shape + (2,), np.float32)
