"""Image decoding with OpenCV: encoded bytes (PNG or JPEG) -> uint8 arrays; frames already decoded pass through.

A loader's source may hold decoded frames (frames read from a video, flow computed in memory) instead of encoded
files: a uint8 array of the expected rank is returned as it is, so both go through the same sampling and crops.
"""

import cv2
import numpy as np


class DecodeError(ValueError):
    """An encoded frame that OpenCV cannot decode (corrupt or truncated file), or a decoded one of the wrong shape."""


def _decode(data: bytes, flag: int, what: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise DecodeError(f"cannot decode {what} ({len(data)} bytes): corrupt or not an image")
    return img


def _decoded(img: np.ndarray, channels: int | None, what: str) -> np.ndarray:
    """A frame given decoded: checked to be uint8 (H, W) (channels None) or (H, W, channels)."""
    expected = "(H, W)" if channels is None else f"(H, W, {channels})"
    if img.dtype != np.uint8 or img.shape[2:] != (() if channels is None else (channels,)) or img.ndim < 2:
        raise DecodeError(f"{what}: a decoded frame must be a uint8 {expected} array, got {img.dtype} {img.shape}")
    return img


def decode_rgb(data: bytes | np.ndarray, what: str = "RGB frame") -> np.ndarray:
    """Encoded colour image (or a decoded uint8 (H, W, 3) RGB array, returned as is) -> (H, W, 3) uint8 RGB."""
    if isinstance(data, np.ndarray):
        return _decoded(data, 3, what)
    return cv2.cvtColor(_decode(data, cv2.IMREAD_COLOR, what), cv2.COLOR_BGR2RGB)


def decode_gray(data: bytes | np.ndarray, what: str = "single-channel frame") -> np.ndarray:
    """Encoded image (or a decoded uint8 (H, W) array, returned as is) -> (H, W) uint8; a 3-channel file (the
    release's flow PNGs) keeps its first channel."""
    if isinstance(data, np.ndarray):
        return _decoded(data, None, what)
    img = _decode(data, cv2.IMREAD_UNCHANGED, what)
    return img if img.ndim == 2 else img[..., 0]
