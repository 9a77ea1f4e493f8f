"""Frame-level records, the storage every ego_jax dataset builder writes (gtea61 2.0.0 and the other releases).

A build (data_dir/<name>/<config>/<version>/) holds tfds splits of one small record per clip (label fields,
subject, clip id, frame count, `first_frame`) and, per split, `frames-<split>.array_record` with that split's
encoded frames one per record, each clip's modalities one after another in config order: frame i of modality k
of a clip is record first_frame + k * num_frames + i. So a sample reads only the frames it decodes.

Storage (measured on GTEA61's real 455x256 files, scripts/measure_storage.py): RGB keeps its source bytes (PNG or
JPEG as delivered); flow and motion maps are re-encoded losslessly as one-channel PNG level 3. Every frame is
decoded once at build time to check it, so a corrupt file fails the build with its path, not a training run.
"""

import concurrent.futures
import inspect
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath

from ego_jax.data.manual_dir import CorruptFrameError, FrameFormatError

log = logging.getLogger(__name__)
_PNG_LEVEL = 3  # level 9 is 20x slower to encode for 25% smaller flow; decode time is the same.
# One record per chunk, so reading a record reads only it; encoded images do not compress further.
_FRAME_FILE_OPTIONS = "group_size:1,uncompressed"


def frame_file(version_dir, split: str) -> Path:
    """The frame file of `split` in a build's version folder."""
    return Path(version_dir) / f"frames-{split}.array_record"


def _read(path: Path) -> tuple[bytes, np.ndarray]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorruptFrameError(f"cannot read {path}: {e}") from e
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CorruptFrameError(
            f"cannot decode {path} ({len(data)} bytes): corrupt, truncated or not an image. Re-download this file."
        )
    if img.dtype != np.uint8:
        raise FrameFormatError(f"{path}: expected an 8-bit image, got {img.dtype}")
    return data, img


def rgb_frame(path: Path) -> tuple[bytes, tuple[int, int]]:
    """Source bytes of a checked 3-channel frame, and its (H, W)."""
    data, img = _read(path)
    if img.ndim != 3 or img.shape[2] != 3:
        raise FrameFormatError(f"{path}: expected a 3-channel RGB image, got shape {img.shape}")
    return data, img.shape[:2]


def gray_frame(path: Path, binary: bool = False) -> tuple[bytes, tuple[int, int]]:
    """One-channel PNG of a checked flow (first channel) or motion-map (binary) frame, and its (H, W)."""
    _, img = _read(path)
    if img.ndim == 3:
        # JPEG chroma subsampling may leave the channels of a grey image slightly unequal; PNG may not.
        lossless = path.suffix.lower() == ".png"
        if img.shape[2] != 3 or (lossless and np.any(img != img[..., :1])):
            raise FrameFormatError(
                f"{path}: expected a one-channel image or 3 identical channels (shape {img.shape}); colour-coded "
                "flow is not the authors' format (one channel per direction, 128 = no motion)"
            )
        img = np.ascontiguousarray(img[..., 0])
    if binary and np.any((img != 0) & (img != 255)):
        values = np.unique(img)
        raise FrameFormatError(f"{path}: motion map values must be exactly 0 or 255, found {values[:8]}")
    return cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])[1].tobytes(), img.shape


def encode_clip(clip_id: str, files: dict[str, tuple[Path, ...]], pool: concurrent.futures.Executor) -> list[bytes]:
    """A clip's checked, encoded frames: each modality's in frame order, modalities in the order of `files`."""
    encoded, shapes = [], {}
    for mod, paths in files.items():
        read = rgb_frame if mod == "rgb" else lambda p, b=(mod == "mmaps"): gray_frame(p, b)
        frames = list(pool.map(read, paths))
        encoded += [data for data, _ in frames]
        shapes.update({f: shape for f, (_, shape) in zip(paths, frames)})
    if len(set(shapes.values())) > 1:
        by_shape = {shape: f for f, shape in shapes.items()}
        detail = ", ".join(f"{f} is {h}x{w}" for (h, w), f in by_shape.items())
        raise FrameFormatError(f"clip {clip_id}: frames differ in size ({detail}); expected one size")
    return encoded


class FrameBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the frame-level builders: a subclass lists its clips per split (`_clips`) and says what each clip's
    record holds (`_record`); this class writes the records and the frame files."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds 4.9.10 resolves a packaged builder's file through `importlib_resources`, which it only
        # declares as a dependency for Python < 3.9; this is the path it would find.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _clips(self, manual_dir: Path) -> dict[str, list]:
        """{split: [clip]}; a clip has `clip_id` and `files` ({modality: frame paths}, config order)."""
        raise NotImplementedError

    def _record(self, clip) -> dict:
        """The clip's record without `first_frame`."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        # The whole manual folder is checked by _clips, before any example is written. data_path is the build's
        # temporary folder here: tfds moves it into place, frame files included, once every split is written, and
        # deletes it if the build fails.
        splits = self._clips(Path(dl_manager.manual_dir))
        return {s: self._generate_examples(clips, frame_file(self.data_path, s)) for s, clips in splits.items()}

    def _generate_examples(self, clips, frames_path: Path):
        writer = array_record_module.ArrayRecordWriter(os.fspath(frames_path), _FRAME_FILE_OPTIONS)
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                first_frame = 0
                for clip in clips:
                    frames = encode_clip(clip.clip_id, clip.files, pool)
                    for data in frames:
                        writer.write(data)
                    yield clip.clip_id, dict(self._record(clip), first_frame=first_frame)
                    first_frame += len(frames)
        finally:
            writer.close()
