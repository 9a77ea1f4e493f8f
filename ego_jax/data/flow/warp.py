"""Warp flow: optical flow after removing the camera's motion, as dense_flow's warp tool made GTEA61's flow.

dense_flow's `extract_warp_gpu` (src/dense_warp_flow_gpu.cpp, include/warp_flow.h; the camera-motion compensation
of Wang & Schmid's improved dense trajectories) does, for each pair of consecutive frames:
1. optical flow of the pair;
2. point matches: keypoint descriptors matched by L2 brute force within a 25 px window, plus up to 1000 corners
   (goodFeaturesToTrack, quality 0.001, distance 3) moved by the flow at their rounded position;
3. a homography from the matches by RANSAC (reprojection threshold 1 px), used only with more than 50 matches and
   more than 25 inliers, else the identity;
4. the second frame warped back by it (bilinear; where the warped position falls within 5 px of the border or
   outside, the first frame's pixel instead, so the flow there is 0), and optical flow again: the warp flow.

Deviations, each forced or named: SIFT keypoints and descriptors instead of SURF (patented, excluded from the
opencv-contrib wheels); OpenCV 5's warpPerspective samples at exact positions where dense_flow's OpenCV rounded
them to 1/32 px. Three quirks of dense_flow are reproduced by default (`quirks=True`) and fixed with False:
the second frame's keypoints are matched against the clip's FIRST frame (dense_flow never updates them), the
corners that sample the flow are found in the second frame, and their vertical displacement is read at column y
instead of x (`f_y[y]`).
"""

import concurrent.futures
import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from ego_jax.data.flow.optical import optical_flow

MIN_MATCHES, MIN_INLIERS = 50, 25  # dense_flow: use the homography only above both
RANSAC_THRESHOLD = 1.0
MATCH_WINDOW = 25  # px: keypoints match only within this distance along x and y
MAX_CORNERS, CORNER_QUALITY, CORNER_DISTANCE = 1000, 0.001, 3
BORDER_MARGIN = 5  # px: dense_flow's MyWarpPerspective keeps the first frame within this of the border


@dataclasses.dataclass(frozen=True)
class Features:
    """Keypoint positions (K, 2) float32 (x, y) and their descriptors (K, D) float32 of one grey frame."""

    points: np.ndarray
    descriptors: np.ndarray | None

    @classmethod
    def of(cls, gray: np.ndarray) -> "Features":
        keypoints, descriptors = cv2.SIFT_create().detectAndCompute(gray, None)
        return cls(np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors)


@dataclasses.dataclass(frozen=True)
class Camera:
    """The camera motion of one pair: homography (3, 3) mapping frame-1 to frame-2 positions (identity when
    unsupported), how many matches fed RANSAC and how many it kept."""

    homography: np.ndarray
    matches: int
    inliers: int

    @property
    def used(self) -> bool:
        return self.matches > MIN_MATCHES and self.inliers > MIN_INLIERS


def _feature_matches(reference: Features, current: Features) -> tuple[np.ndarray, np.ndarray]:
    if not len(reference.points) or not len(current.points):
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    delta = np.abs(reference.points[None] - current.points[:, None])  # (current, reference, 2)
    mask = np.all(delta < MATCH_WINDOW, -1).astype(np.uint8)
    matches = cv2.BFMatcher(cv2.NORM_L2).match(current.descriptors, reference.descriptors, mask)
    ref = np.float32([reference.points[m.trainIdx] for m in matches]).reshape(-1, 2)
    cur = np.float32([current.points[m.queryIdx] for m in matches]).reshape(-1, 2)
    return ref, cur


def _flow_matches(corner_frame: np.ndarray, flow: np.ndarray, quirks: bool) -> tuple[np.ndarray, np.ndarray]:
    h, w = corner_frame.shape
    corners = cv2.goodFeaturesToTrack(corner_frame, MAX_CORNERS, CORNER_QUALITY, CORNER_DISTANCE)
    if corners is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    corners = corners.reshape(-1, 2)
    x = np.clip(np.rint(corners[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.rint(corners[:, 1]).astype(int), 0, h - 1)
    if quirks:  # flow_y.ptr(y)[y]: row y, column y, running on into later rows past the width
        dy = flow[..., 1].reshape(-1)[np.minimum(y * w + y, h * w - 1)]
    else:
        dy = flow[y, x, 1]
    return corners, np.stack([x + flow[y, x, 0], y + dy], -1).astype(np.float32)


def camera_motion(
    prev: np.ndarray, next_: np.ndarray, flow: np.ndarray, *, reference: Features | None = None, quirks: bool = True
) -> Camera:
    """The homography of one grey uint8 pair from its optical flow (H, W, 2) and keypoint matches. `reference`:
    the features to match next_'s against (default prev's; dense_flow's quirk: the clip's first frame's)."""
    reference = reference or Features.of(prev)
    ref_pts, cur_pts = _feature_matches(reference, Features.of(next_))
    flow_src, flow_dst = _flow_matches(next_ if quirks else prev, flow, quirks)
    src, dst = np.concatenate([flow_src, ref_pts]), np.concatenate([flow_dst, cur_pts])
    homography, inliers = np.eye(3), 0
    if len(src) > MIN_MATCHES:
        found, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_THRESHOLD)
        inliers = int(mask.sum()) if mask is not None else 0
        if found is not None and inliers > MIN_INLIERS:
            homography = found
    return Camera(homography, len(src), inliers)


def remove_camera(prev: np.ndarray, next_: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """next_ warped back onto prev by the homography (uint8, as dense_flow's MyWarpPerspective): at x it holds
    next_(H x); where H x is outside the frame or within 5 px of its border, prev(x)."""
    h, w = prev.shape
    warped = cv2.warpPerspective(
        next_,
        homography,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    x, y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    p = np.tensordot(homography, np.stack([x, y, np.ones_like(x)]), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        px, py = p[0] / p[2], p[1] / p[2]
    inside = (px > BORDER_MARGIN) & (px < w - 1 - BORDER_MARGIN) & (py > BORDER_MARGIN) & (py < h - 1 - BORDER_MARGIN)
    return np.where(inside, warped, prev)


def warp_flow(
    prev: np.ndarray,
    next_: np.ndarray,
    *,
    quirks: bool = True,
    references: Sequence[Features] | None = None,
    workers: int = 1,
    **flow,
) -> tuple[np.ndarray, list[Camera]]:
    """Grey (N, H, W) uint8 consecutive pairs -> warp flow (N, H, W, 2) float32 px and each pair's Camera.
    flow: optical_flow's keywords (method, backend, params, batch), for both of its optical flows.
    With quirks, pair i matches against references[i] (its clip's first frame; default: prev[0] for every pair)."""
    optical = optical_flow(prev, next_, **flow)
    if not len(prev):
        return optical, []
    if quirks and references is None:
        references = [Features.of(prev[0])] * len(prev)

    def pair(i):
        camera = camera_motion(
            prev[i], next_[i], optical[i], reference=references[i] if quirks else None, quirks=quirks
        )
        return camera, remove_camera(prev[i], next_[i], camera.homography)

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV releases the GIL
        cameras, warped = zip(*pool.map(pair, range(len(prev))))
    return optical_flow(prev, np.stack(warped), **flow), list(cameras)
