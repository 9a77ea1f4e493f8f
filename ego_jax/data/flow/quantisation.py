"""dense_flow's quantisation of flow to 8-bit images (src/common.cpp: convertFlowToImage, encodeFlowMap).

Each component is clipped to [-bound, bound] and mapped to round(255 * (v + bound) / (2 * bound)), rounding half
to even as cvRound does (so 0 px -> 128); dense_flow's tools store it as a grey JPEG (quality 95, imencode's
default). TSN's and dense_flow's build_of.py pass bound 20 (the tool's own default is 15); Ego-RNN never states its
bound, 20 is inferred from that tooling.
"""

import cv2
import numpy as np

BOUND = 20.0
JPEG_QUALITY = 95  # cv::imencode(".jpg") default, what dense_flow writes


def quantise(flow: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Flow in px (any shape, float) -> uint8 of the same shape, exactly as dense_flow's CAST macro."""
    v = np.asarray(flow, np.float32).astype(np.float64)  # dense_flow reads float32, computes in double
    scaled = np.rint(255.0 * (v + bound) / (2.0 * bound))
    return np.where(v > bound, 255, np.where(v < -bound, 0, scaled)).astype(np.uint8)


def dequantise(image: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """uint8 -> flow in px (float32): the centre of each quantisation step (128 -> +0.078 px at bound 20)."""
    return (np.asarray(image, np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)


def encode_image(image: np.ndarray, ext: str = ".jpg") -> bytes:
    """(H, W) or (H, W, 3 BGR) uint8 -> file bytes; JPEG at dense_flow's quality, PNG lossless."""
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.shape} {image.dtype} image as {ext}")
    return data.tobytes()
