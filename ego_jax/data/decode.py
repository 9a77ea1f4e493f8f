"""Image decoding with OpenCV: encoded bytes (PNG or JPEG) -> uint8 arrays."""
import cv2
import numpy as np


class DecodeError(ValueError):
    """An encoded frame that OpenCV cannot decode (corrupt or truncated file)."""


def _decode(data: bytes, flag: int, what: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise DecodeError(f"cannot decode {what} ({len(data)} bytes): corrupt or not an image")
    return img


def decode_rgb(data: bytes, what: str = "RGB frame") -> np.ndarray:
    """Encoded colour image -> (H, W, 3) uint8 in RGB order."""
    return cv2.cvtColor(_decode(data, cv2.IMREAD_COLOR, what), cv2.COLOR_BGR2RGB)


def decode_gray(data: bytes, what: str = "single-channel frame") -> np.ndarray:
    """Encoded image -> (H, W) uint8; a 3-channel file (the release's flow PNGs) keeps its first channel."""
    img = _decode(data, cv2.IMREAD_UNCHANGED, what)
    return img if img.ndim == 2 else img[..., 0]
