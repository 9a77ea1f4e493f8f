"""Frames from a video file or a folder of frames: frame-exact, RGB uint8, optionally resized by the short side.

  frames = read_frames("clip.mp4", short_side=256)    # (T, H, W, 3) uint8, frame t = the t-th frame of the file
  for frame in iter_frames("clip_frames/"): ...       # a folder of images, in the order of the number in their names
  write_video("clip.mp4", frames, fps=30)             # the inverse (stand-in data, tests)

Videos are decoded with PyAV (FFmpeg's libraries in the wheel): every frame the stream holds, in presentation
order, whatever the frame rate (constant or not), none dropped or duplicated. A file that cannot be opened or
decoded raises VideoError naming it.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Encoder and pixel format per container when writing (ffv1 in .mkv is lossless).
_ENCODERS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("ffv1", "bgr0"),
    ".avi": ("mjpeg", "yuvj444p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
}


class VideoError(ValueError):
    """A video file or frame folder that cannot be read; the message names it and says what was expected."""


def is_video(path) -> bool:
    """Whether `path` names a video file by its extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def image_files(folder) -> list[Path]:
    """The image files directly in `folder`, ordered by the last number in their names (frame_2 before frame_10)."""
    files = [
        f
        for f in Path(folder).iterdir()
        if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() and not f.name.startswith(".")
    ]

    def key(f):
        numbers = re.findall(r"\d+", f.stem)
        return (int(numbers[-1]) if numbers else -1, f.name)

    return sorted(files, key=key)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) scaled so that the shorter side is `short_side` (the longer one rounded), aspect ratio kept."""
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), short_side


def resize_short_side(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    """(H, W, C) -> (H', W', C) with min(H', W') = short_side; bilinear, as dense_flow's cv::resize; None: as is."""
    if not short_side:
        return frame
    h, w = frame.shape[:2]
    size = short_side_size(h, w, short_side)
    return frame if size == (h, w) else cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR)


def _decode_video(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream (streams: {list(container.streams)}): expected a video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding; output order is unchanged
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise VideoError(
            f"cannot decode video {path}: {e}. The file is corrupt, truncated or not a video; "
            "re-encode or re-download it"
        ) from e


def _read_folder(folder: Path) -> Iterator[np.ndarray]:
    files = image_files(folder)
    if not files:
        raise VideoError(
            f"no frames in {folder}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) named with "
            "their frame number, e.g. image_00001.jpg"
        )
    size = None
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"cannot decode frame {f}: corrupt or not an image; restore or remove it")
        if size is not None and img.shape != size:
            raise VideoError(
                f"frame {f} is {img.shape[1]}x{img.shape[0]} but the earlier frames of {folder} are "
                f"{size[1]}x{size[0]}: every frame of a clip must have one size"
            )
        size = img.shape
        yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_frames(source, short_side: int | None = None) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 RGB of a video file or a folder of images, in order; resized if short_side is set."""
    source = Path(source)
    if source.is_dir():
        frames = _read_folder(source)
    elif source.is_file():
        if not is_video(source):
            raise VideoError(
                f"{source} is not a video file: expected one of {', '.join(VIDEO_EXTENSIONS)} or a folder of frames"
            )
        frames = _decode_video(source)
    else:
        raise VideoError(f"{source} does not exist: expected a video file or a folder of frames")
    for frame in frames:
        yield resize_short_side(frame, short_side)


def read_frames(source, short_side: int | None = None) -> np.ndarray:
    """All frames of a video file or frame folder: (T, H, W, 3) uint8 RGB; VideoError if there are none."""
    frames = list(iter_frames(source, short_side))
    if not frames:
        raise VideoError(f"{source} holds no frames: the video is empty or its stream cannot be decoded")
    return np.stack(frames)


def write_video(path, frames: np.ndarray, fps=25, crf: int = 17) -> Path:
    """Encodes (T, H, W, 3) uint8 RGB frames; the codec follows the extension (.mp4 H.264, .mkv lossless FFV1,
    .avi MJPEG, .webm VP9). fps may be a fraction such as Fraction(30000, 1001); crf is H.264/VP9's quality."""
    path = Path(path)
    if path.suffix.lower() not in _ENCODERS:
        raise ValueError(f"cannot write {path}: expected one of {', '.join(_ENCODERS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    codec, pix_fmt = _ENCODERS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec in ("libx264", "libvpx-vp9"):
            stream.options = {"crf": str(crf)} | ({"b:v": "0"} if codec == "libvpx-vp9" else {})
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
