"""Spatial transforms of Ego-RNN (one per clip, shared by its frames, flow and motion maps); the models'
input normalisation is their stream entry's (ego_jax.streams).

Reference (torchvision-style on PIL images): train = resize shorter side to `resize` -> horizontal
flip p=0.5 -> multi-scale corner crop (side int(resize * s), s in SCALES, position in POSITIONS) ->
resize to `crop`; test = resize shorter side -> centre crop. A flipped x-flow image becomes 255 - v.

Resizing (`method`):
  'pil' (default, the reference): PIL bilinear, which antialiases when it shrinks. Shrinking runs
        PIL itself; enlarging runs OpenCV INTER_LINEAR_EXACT, which equals PIL's bilinear there to
        1 grey level (rounding; mean 0.13 on real frames 168 -> 224) at about 6x PIL's speed.
  'cv2': OpenCV INTER_LINEAR only: no antialiasing when shrinking, so real frames 256 -> 224
        differ from PIL by 0.37 grey levels on average (12 at most), at about 8x PIL's speed there
        (enlarging: within 1 grey level, as 'pil').
        On GTEA61 only the scale-1 train crop (256 -> 224) and a non-native `resize` shrink, so the
        two methods differ only there.
"""

import dataclasses

import cv2
import numpy as np
from PIL import Image, ImageOps

SCALES = (1.0, 0.875, 0.75, 0.65625)
POSITIONS = ("c", "tl", "tr", "bl", "br")
METHODS = ("pil", "cv2")


@dataclasses.dataclass(frozen=True)
class Spatial:
    """One clip's transform: resize to `resized` (h, w), cut `box` (x1, y1, x2, y2), resize to size x size,
    mirror if `flip`."""

    resized: tuple[int, int]
    box: tuple[int, int, int, int]
    size: int
    flip: bool


def resized_shape(height: int, width: int, resize: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to `resize` (reference `Scale`: int() of the longer side)."""
    if min(height, width) == resize:
        return height, width
    if width < height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def train_spatial(rng: np.random.Generator, height: int, width: int, *, resize: int = 256, crop: int = 224) -> Spatial:
    """Random flip + multi-scale corner crop for a (height, width) clip, drawn from `rng`."""
    h, w = resized_shape(height, width, resize)
    flip = bool(rng.random() < 0.5)
    side = int(min(h, w) * SCALES[rng.integers(len(SCALES))])
    position = POSITIONS[rng.integers(len(POSITIONS))]
    if position == "c":
        # The reference's centre box is 2 * (side // 2) wide around (w // 2, h // 2).
        x1, y1 = w // 2 - side // 2, h // 2 - side // 2
        x2, y2 = w // 2 + side // 2, h // 2 + side // 2
    else:
        y1 = 0 if position[0] == "t" else h - side
        x1 = 0 if position[1] == "l" else w - side
        x2, y2 = x1 + side, y1 + side
    if flip:
        # The reference crops the mirrored image; the same pixels sit mirrored in the original.
        x1, x2 = w - x2, w - x1
    return Spatial((h, w), (x1, y1, x2, y2), crop, flip)


def eval_spatial(height: int, width: int, *, resize: int = 256, crop: int = 224) -> Spatial:
    """Centre crop (reference `CenterCrop`: offsets int(round((w - crop) / 2))) after resizing."""
    h, w = resized_shape(height, width, resize)
    if crop > min(h, w):
        raise ValueError(f"crop {crop} does not fit frames resized to {h}x{w} (resize={resize}); use crop <= resize")
    x1, y1 = int(round((w - crop) / 2)), int(round((h - crop) / 2))
    return Spatial((h, w), (x1, y1, x1 + crop, y1 + crop), crop, False)


def resize_bilinear(img: np.ndarray, height: int, width: int, method: str = "pil") -> np.ndarray:
    """uint8 (H, W[, C]) -> (height, width[, C]) PIL-style bilinear resize (see module doc for `method`)."""
    if img.shape[:2] == (height, width):
        return img
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; expected one of {METHODS}")
    if method == "pil" and (height < img.shape[0] or width < img.shape[1]):
        return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.BILINEAR))
    interpolation = cv2.INTER_LINEAR_EXACT if method == "pil" else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interpolation)


def _cut(img: np.ndarray, spatial: Spatial) -> np.ndarray:
    x1, y1, x2, y2 = spatial.box
    return img[y1:y2, x1:x2]


def apply(img: np.ndarray, spatial: Spatial, *, method: str = "pil") -> np.ndarray:
    """uint8 frame (H, W[, C]) -> (size, size[, C]) uint8: resize, crop, resize, mirror."""
    img = resize_bilinear(img, *spatial.resized, method)
    img = resize_bilinear(_cut(img, spatial), spatial.size, spatial.size, method)
    return img[:, ::-1] if spatial.flip else img


def apply_flow_x(img: np.ndarray, spatial: Spatial, *, method: str = "pil") -> np.ndarray:
    """x-flow (H, W) uint8 -> (size, size): mirrored flow points the other way, so a flip also maps v -> 255 - v."""
    out = apply(img, spatial, method=method)
    return 255 - out if spatial.flip else out


def reference_train_crop(
    img: Image.Image,
    flip: bool,
    scale: float,
    position: str,
    *,
    resize: int = 256,
    crop: int = 224,
    invert: bool = False,
) -> np.ndarray:
    """PIL image -> (crop, crop[, C]) uint8 through the reference's own PIL chain (Scale -> flip ->
    MultiScaleCornerCrop), ported line by line: what train_spatial + apply are tested against, and benchmark.py
    data's per-file baseline loader. invert: a flipped x-flow image becomes 255 - v (the reference's flow dataset)."""
    w, h = img.size
    if min(w, h) != resize:
        img = img.resize((resize, int(resize * h / w)) if w < h else (int(resize * w / h), resize), Image.BILINEAR)
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if invert:
            img = ImageOps.invert(img)
    w, h = img.size
    side = int(min(w, h) * scale)
    box = {
        "c": (w // 2 - side // 2, h // 2 - side // 2, w // 2 + side // 2, h // 2 + side // 2),
        "tl": (0, 0, side, side),
        "tr": (w - side, 0, w, side),
        "bl": (0, h - side, side, h),
        "br": (w - side, h - side, w, h),
    }[position]
    return np.asarray(img.crop(box).resize((crop, crop), Image.BILINEAR))


def motion_target(
    mmap: np.ndarray, spatial: Spatial, grid: tuple[int, int], threshold: float | None = None
) -> np.ndarray:
    """Motion map (H, W) uint8 {0, 255} -> (h, w) float32 moving fraction per cell of the cropped frame, or {0, 1} when
    `threshold` is set (a cell moves when its fraction > threshold)."""
    moving = (mmap > 127).astype(np.float32)
    if moving.shape != spatial.resized:
        moving = cv2.resize(moving, spatial.resized[::-1], interpolation=cv2.INTER_LINEAR)
    # INTER_AREA shrinking is the exact area average, also for cells that cut pixels fractionally.
    frac = cv2.resize(_cut(moving, spatial), grid[::-1], interpolation=cv2.INTER_AREA)
    if spatial.flip:
        frac = frac[:, ::-1]
    if threshold is not None:
        frac = (frac > threshold).astype(np.float32)
    return np.ascontiguousarray(frac)
