"""In-memory GTEA61-like examples (encoded PNG frames) so pipeline tests need no tfds build.

Frames carry their identity: RGB green = frame index, blue = clip index, red = a column ramp;
flow_y = 10 + frame index; flow_x = a column ramp (not mirror-symmetric); motion maps have a
moving block in their left third. A list of these dicts is a valid grain / make_loader source.
"""

import cv2
import numpy as np


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def fake_clip(
    index: int, num_frames: int, *, height: int = 48, width: int = 80, modalities=("rgb", "flow_x", "flow_y", "mmaps")
) -> dict:
    """One example dict like the gtea61 builder's, with `num_frames` frames of height x width."""
    ramp = np.broadcast_to((np.arange(width) * 3 % 256).astype(np.uint8), (height, width))
    example = {"label": index % 61, "num_frames": num_frames, "clip_id": f"S1/fake/{index}"}
    frames = range(num_frames)
    if "rgb" in modalities:
        # cv2 encodes BGR: channel order (blue, green, red).
        example["rgb"] = [_png(np.stack([np.full_like(ramp, index), np.full_like(ramp, i), ramp], -1)) for i in frames]
    if "flow_x" in modalities:
        example["flow_x"] = [_png(np.ascontiguousarray(ramp // 2 + 64)) for _ in frames]
    if "flow_y" in modalities:
        example["flow_y"] = [_png(np.full_like(ramp, 10 + i)) for i in frames]
    if "mmaps" in modalities:
        mmap = np.zeros((height, width), np.uint8)
        mmap[:, : width // 3] = 255
        example["mmaps"] = [_png(mmap) for _ in frames]
    return example


def fake_source(frame_counts, **kwargs) -> list[dict]:
    """A list of fake examples, clip i having frame_counts[i] frames."""
    return [fake_clip(i, n, **kwargs) for i, n in enumerate(frame_counts)]
