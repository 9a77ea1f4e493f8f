"""Optical flow and warp flow from video, as the authors made GTEA61's (dense_flow), on the CPU or batched in JAX.

Library API (dataset builders and inference call these; none reimplements them):

  from ego_jax.data import flow, video

  # one clip in, files out: OUT/frames/<clip>/image_00001.jpg, OUT/flow_x/<clip>/flow_x_00001.jpg, OUT/flow_y/...
  spec = flow.FlowSpec(method="warp_tvl1", backend="opencv", bound=20, short_side=256)
  result = flow.extract_clip("P01/take_cup.mp4", "OUT", clip="P01/take_cup/1", spec=spec)  # skipped if done

  # arrays only
  frames = video.read_frames("clip.mp4")                             # (T, H, W, 3) uint8 RGB
  fields, cameras = flow.clip_flow(frames, spec)                     # (T - 1, H, W, 2) float32 px
  images = flow.quantise(fields, bound=20)                           # uint8, 128 = no motion
  optical = flow.optical_flow(prev_gray, next_gray, backend="jax", batch=64)  # (N, H, W) pairs -> (N, H, W, 2)
  flow.write_clip("OUT", "P01/take_cup/1", frames, fields, spec)     # the layout, atomically

  # a whole folder (what scripts/extract_flow.py runs): sorted sources, this machine's shard, resumable
  summary = flow.extract_all(flow.shard(flow.list_sources("videos/"), 0, 4), "OUT", spec, workers=8)

- FlowSpec: what determines the written files (method warp_tvl1 | tvl1 | farneback, backend opencv | jax, TV-L1
  parameters `TVL1`, bound, dense_flow's quirks, short_side, image_ext); a clip finished with another spec is
  refused (FlowSpecMismatch), a half-written one redone.
- Methods: `tvl1` (Dual TV-L1, ego_jax/data/flow/tvl1.py; the opencv backend is cv2.optflow's, the jax backend
  the same algorithm jitted and batched over pairs), `warp_tvl1` (TV-L1 after removing the camera's motion by a
  RANSAC homography, ego_jax/data/flow/warp.py), `farneback` (OpenCV only).
- Layout and counts as dense_flow: T frames give T - 1 pairs; image k is the second frame of pair k.
- Quantisation exactly as dense_flow (ego_jax/data/flow/quantisation.py); `dequantise` is its inverse.
"""

from ego_jax.data.flow.clip import (
    KINDS,
    METHODS,
    ClipResult,
    FlowSpec,
    FlowSpecMismatch,
    clip_flow,
    clip_name,
    done,
    extract_clip,
    gray,
    pairs_flow,
    write_clip,
)
from ego_jax.data.flow.dataset import (
    Source,
    Summary,
    extract_all,
    list_sources,
    parse_shard,
    shard,
)
from ego_jax.data.flow.optical import BACKENDS, optical_flow
from ego_jax.data.flow.quantisation import BOUND, dequantise, encode_image, quantise
from ego_jax.data.flow.tvl1 import DENSE_FLOW, OPENCV_DEFAULTS, TVL1
from ego_jax.data.flow.warp import Camera, camera_motion, remove_camera, warp_flow

__all__ = [
    "BACKENDS",
    "BOUND",
    "DENSE_FLOW",
    "KINDS",
    "METHODS",
    "OPENCV_DEFAULTS",
    "TVL1",
    "Camera",
    "ClipResult",
    "FlowSpec",
    "FlowSpecMismatch",
    "Source",
    "Summary",
    "camera_motion",
    "clip_flow",
    "clip_name",
    "dequantise",
    "done",
    "encode_image",
    "extract_all",
    "extract_clip",
    "gray",
    "list_sources",
    "optical_flow",
    "pairs_flow",
    "parse_shard",
    "quantise",
    "remove_camera",
    "shard",
    "warp_flow",
    "write_clip",
]
