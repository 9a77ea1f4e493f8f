"""Frame pairs with known motion, made from a real photograph, to measure flow against the truth.

Each scene warps a grey image by a camera motion (a homography A: the point at x in the first frame is at A x in
the second) and, in `camera+object`, pastes a second textured patch that also moves by its own displacement. The
true flow is A x - x (plus the object's own motion on the object); `valid` marks where it is defined (the target
lies inside the frame, away from the object's disoccluded background).
"""

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Scene:
    """prev, next_ (H, W) uint8; flow (H, W, 2) float32 px; valid, obj, background (H, W) bool."""

    name: str
    prev: np.ndarray
    next_: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    obj: np.ndarray
    background: np.ndarray
    camera: np.ndarray  # (3, 3)
    own: tuple[float, float]  # the object's motion relative to the background, px


def epe(flow: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean end-point error (px) of (H, W, 2) flow against truth over mask."""
    return float(np.linalg.norm(np.asarray(flow, np.float64) - truth, axis=-1)[mask].mean())


def _rotation(angle, h, w):
    """Rotation by `angle` (rad) about the frame's centre."""
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]])
    return centre @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.linalg.inv(centre)


def scene(name: str, image: np.ndarray, camera: np.ndarray, patch: np.ndarray | None = None, own=(0.0, 0.0)) -> Scene:
    """`image` (H, W) uint8 moved by `camera`; `patch` (h, w) uint8 pasted at the centre moves with the camera
    plus `own` px."""
    h, w = image.shape
    x, y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    p = np.tensordot(camera, np.stack([x, y, np.ones_like(x)]), 1)
    flow = np.stack([p[0] / p[2] - x, p[1] / p[2] - y], -1)
    prev = image.copy()
    next_ = cv2.warpPerspective(image, camera, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    valid = (x + flow[..., 0] > 3) & (x + flow[..., 0] < w - 4) & (y + flow[..., 1] > 3) & (y + flow[..., 1] < h - 4)
    obj = np.zeros((h, w), bool)
    if patch is not None:
        ph, pw = patch.shape
        oy, ox = (h - ph) // 2, (w - pw) // 2
        prev[oy : oy + ph, ox : ox + pw] = patch
        centre = camera @ np.array([ox + pw / 2, oy + ph / 2, 1.0])
        d = centre[:2] / centre[2] - (ox + pw / 2, oy + ph / 2) + np.asarray(own)
        shift = np.float32([[1, 0, ox + d[0]], [0, 1, oy + d[1]]])
        covered = cv2.warpAffine(np.ones_like(patch), shift, (w, h), flags=cv2.INTER_NEAREST) > 0
        next_ = np.where(covered, cv2.warpAffine(patch, shift, (w, h), flags=cv2.INTER_CUBIC), next_)
        obj[oy : oy + ph, ox : ox + pw] = True
        flow[obj] = d
        valid = (valid & ~covered) | obj  # the background hidden in the second frame has no match
    inner = cv2.erode(obj.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    background = valid & ~(cv2.dilate(obj.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0)
    background[:8], background[-8:], background[:, :8], background[:, -8:] = False, False, False, False
    return Scene(name, prev, next_, flow.astype(np.float32), valid, inner, background, camera, tuple(own))


def known_motion_scenes(image: np.ndarray, patch_image: np.ndarray, size: tuple[int, int]) -> list[Scene]:
    """Translation, rotation, homography and camera + independently moving object, at (H, W) `size`, from two
    grey photographs (the background and the moving object's texture)."""
    h, w = size
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    patch = cv2.resize(patch_image, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    s = w / 128  # motions scale with the frame
    homography = np.array([[1.02, 0.01, 1.0 * s], [-0.01, 0.99, 0.5 * s], [2e-4 / s, 1e-4 / s, 1.0]])
    return [
        scene("translation", img, np.array([[1, 0, 2.5 * s], [0, 1, -1.5 * s], [0, 0, 1.0]])),
        scene("rotation", img, _rotation(0.03, h, w)),
        scene("homography", img, homography),
        scene(
            "camera+object",
            img,
            np.array([[1, 0, -2.0 * s], [0, 1, 1.0 * s], [0, 0, 1.0]]),
            patch,
            own=(3.0 * s, 2.0 * s),
        ),
    ]
