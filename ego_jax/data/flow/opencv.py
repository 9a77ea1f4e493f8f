"""The `opencv` backend: OpenCV's CPU optical flow of one grey frame pair at a time.

TV-L1 is cv2.optflow.DualTVL1OpticalFlow (opencv-contrib) with the parameters of `TVL1`; Farneback is
cv2.calcOpticalFlowFarneback with the parameters of OpenCV's CUDA Farneback defaults, which dense_flow's
`-t 0` ran (5 levels, pyramid scale 0.5, window 13, 10 iterations, poly_n 5, poly_sigma 1.1).
"""

import cv2
import numpy as np

from ego_jax.data.flow.tvl1 import DENSE_FLOW, TVL1

FARNEBACK = {"pyr_scale": 0.5, "levels": 5, "winsize": 13, "iterations": 10, "poly_n": 5, "poly_sigma": 1.1, "flags": 0}


def tvl1(prev: np.ndarray, next_: np.ndarray, params: TVL1 = DENSE_FLOW) -> np.ndarray:
    """Grey (H, W) uint8 pair -> (H, W, 2) float32 flow in px (x, y) from prev to next_."""
    return params.opencv().calc(prev, next_, None)


def farneback(prev: np.ndarray, next_: np.ndarray) -> np.ndarray:
    """Grey (H, W) uint8 pair -> (H, W, 2) float32 Farneback flow in px from prev to next_."""
    return cv2.calcOpticalFlowFarneback(prev, next_, None, **FARNEBACK)
