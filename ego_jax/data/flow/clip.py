"""One clip in, the authors' layout out: frames and quantised flow written as dense_flow wrote them.

  OUT/frames/<clip>/image_00001.jpg, OUT/flow_x/<clip>/flow_x_00001.jpg, OUT/flow_y/<clip>/flow_y_00001.jpg

what ego_jax's GTEA61 builder reads as the authors' layout (ego_jax/data/gtea61/layout.py). As dense_flow's
tools, a clip of T frames gives T - 1 pairs, and image k is the SECOND frame of pair k (the video's first frame is
never written), so that frames and flow have one count. Files are written to OUT/.partial/<clip>/ and moved into
place when the clip is complete, then OUT/.done/<clip>.json records the FlowSpec: a finished clip is skipped, a
half-written one redone, and a clip finished with another FlowSpec refused.
"""

import concurrent.futures
import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from ego_jax.data import video
from ego_jax.data.flow import optical, quantisation, warp
from ego_jax.data.flow.tvl1 import DENSE_FLOW, TVL1

METHODS = ("warp_tvl1", "tvl1", "farneback")
KINDS = {"frames": "image", "flow_x": "flow_x", "flow_y": "flow_y"}  # folder -> file name prefix
DONE, PARTIAL = ".done", ".partial"


class FlowSpecMismatch(ValueError):
    """A clip in the output folder was extracted with another FlowSpec than this run's."""


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """Everything that determines the files written for a clip.

    method: 'warp_tvl1' (dense_flow's extract_warp_gpu, GTEA61's flow), 'tvl1' or 'farneback' (optical flow);
    backend: 'opencv' (CPU, pair by pair) or 'jax' (batched; TV-L1 only); tvl1: its parameters; bound: the
    quantisation range in px; quirks: dense_flow's warp-tool quirks (ego_jax/data/flow/warp.py); short_side:
    resize frames so that their shorter side has this many px (None: as decoded); image_ext: '.jpg' (the authors')
    or '.png'.
    """

    method: str = "warp_tvl1"
    backend: str = "opencv"
    tvl1: TVL1 = DENSE_FLOW
    bound: float = quantisation.BOUND
    quirks: bool = True
    short_side: int | None = None
    image_ext: str = ".jpg"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown flow method {self.method!r}: expected one of {', '.join(METHODS)}")
        optical.check("farneback" if self.method == "farneback" else "tvl1", self.backend)
        if self.image_ext not in (".jpg", ".png"):
            raise ValueError(f"image_ext {self.image_ext!r}: expected '.jpg' or '.png'")
        if not self.bound > 0 or (self.short_side is not None and self.short_side < 16):
            raise ValueError(f"bound {self.bound} must be > 0 and short_side {self.short_side} None or >= 16 px")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT = FlowSpec()  # what the authors ran for GTEA61


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """clip name, pairs written, whether it was already done (skipped), pairs whose homography was used."""

    clip: str
    pairs: int
    skipped: bool = False
    homographies: int | None = None


def gray(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H, W) uint8 grey, OpenCV's weights and rounding (dense_flow's cvtColor)."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else frames[..., 0]


def pairs_flow(
    prev: np.ndarray,
    next_: np.ndarray,
    spec: FlowSpec = DEFAULT,
    *,
    first_frames=None,
    batch: int = 32,
    workers: int = 1,
) -> tuple[np.ndarray, list[warp.Camera] | None]:
    """Grey (N, H, W) uint8 pairs -> their flow (N, H, W, 2) float32 px and, for warp flow, each pair's Camera
    (None otherwise). first_frames: each pair's clip's first frame, or its Features (dense_flow's quirk matches
    keypoints against it; default prev[0] for every pair)."""
    if spec.method != "warp_tvl1":
        return optical.optical_flow(
            prev, next_, method=spec.method, backend=spec.backend, params=spec.tvl1, batch=batch
        ), None
    refs = None
    if spec.quirks and first_frames is not None:
        refs = [f if isinstance(f, warp.Features) else warp.Features.of(f) for f in first_frames]
    return warp.warp_flow(
        prev,
        next_,
        backend=spec.backend,
        params=spec.tvl1,
        batch=batch,
        quirks=spec.quirks,
        references=refs,
        workers=workers,
    )


def clip_flow(
    frames: np.ndarray, spec: FlowSpec = DEFAULT, *, batch: int = 32, workers: int = 1
) -> tuple[np.ndarray, list[warp.Camera] | None]:
    """(T, H, W, 3) uint8 RGB frames of one clip -> flow of its T - 1 consecutive pairs (T - 1, H, W, 2) float32
    px, and each pair's Camera for warp flow (None otherwise)."""
    g = gray(frames)
    return pairs_flow(g[:-1], g[1:], spec, batch=batch, workers=workers)


def clip_name(source) -> str:
    """A video's file name without extension, or a frame folder's name."""
    source = Path(source)
    return source.stem if source.is_file() else source.name


def _marker(out: Path, clip: str) -> Path:
    return out / DONE / f"{clip}.json"


def _identity(spec: dict) -> dict:
    # Both backends compute one algorithm (float summation order aside): shards may run on CPUs and accelerators.
    return {k: v for k, v in spec.items() if k != "backend"}


def done(out, clip: str, spec: FlowSpec) -> bool:
    """Whether `clip` is complete in `out` with `spec` (its backend aside); FlowSpecMismatch if it was made with
    another spec."""
    marker = _marker(Path(out), clip)
    if not marker.exists():
        return False
    recorded = json.loads(marker.read_text())["spec"]
    if _identity(recorded) != _identity(json.loads(json.dumps(spec.to_json()))):
        raise FlowSpecMismatch(
            f"clip {clip} in {out} was extracted with {recorded}, this run asks for {spec.to_json()}: write to "
            f"another output folder, or delete {marker} and the clip's folders to redo it"
        )
    return True


def _write_atomic(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_clip(
    out,
    clip: str,
    frames: np.ndarray,
    flow: np.ndarray,
    spec: FlowSpec = DEFAULT,
    *,
    workers: int = 1,
    extra: dict | None = None,
) -> Path:
    """Writes frames[1:] (T - 1, H, W, 3) RGB and flow (T - 1, H, W, 2) of `clip` in the authors' layout under
    `out`, all at once (staged, then moved), and marks the clip done; returns the done marker."""
    out = Path(out)
    if len(frames) != len(flow) + 1:
        raise ValueError(f"{clip}: {len(frames)} frames but {len(flow)} flow fields: expected one pair less")
    stage = out / PARTIAL / clip
    shutil.rmtree(stage, ignore_errors=True)
    for kind in KINDS:
        (stage / kind).mkdir(parents=True)
    q = quantisation.quantise(flow, spec.bound)

    def one(k):
        name = f"_{k + 1:05d}{spec.image_ext}"
        bgr = cv2.cvtColor(frames[k + 1], cv2.COLOR_RGB2BGR)
        for kind, image in (("frames", bgr), ("flow_x", q[k, ..., 0]), ("flow_y", q[k, ..., 1])):
            (stage / kind / (KINDS[kind] + name)).write_bytes(quantisation.encode_image(image, spec.image_ext))

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, range(len(flow))))
    for kind in KINDS:
        final = out / kind / clip
        shutil.rmtree(final, ignore_errors=True)  # left by a run killed between these moves
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / kind, final)
    marker = _marker(out, clip)
    marker.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(marker, json.dumps({"spec": spec.to_json(), "pairs": len(flow), **(extra or {})}).encode())
    shutil.rmtree(stage, ignore_errors=True)
    return marker


def extract_clip(
    source, out, clip: str | None = None, *, spec: FlowSpec = DEFAULT, batch: int = 32, workers: int = 1
) -> ClipResult:
    """A video file or frame folder -> its frames and flow in the authors' layout under `out` (clip name: `clip`,
    default the file's stem / folder's name; may hold '/'). Skipped if already done with this spec; VideoError if
    the source cannot be read or has fewer than 2 frames."""
    out, clip = Path(out), clip or clip_name(source)
    if done(out, clip, spec):
        return ClipResult(clip, json.loads(_marker(out, clip).read_text())["pairs"], skipped=True)
    frames = video.read_frames(source, spec.short_side)
    if len(frames) < 2:
        raise video.VideoError(f"{source} has {len(frames)} frame: flow needs at least 2 consecutive frames")
    flow, cameras = clip_flow(frames, spec, batch=batch, workers=workers)
    used = None if cameras is None else sum(c.used for c in cameras)
    write_clip(out, clip, frames, flow, spec, workers=workers, extra={"homographies": used})
    return ClipResult(clip, len(flow), homographies=used)
