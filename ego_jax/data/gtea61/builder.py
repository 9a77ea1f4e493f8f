"""tfds builder `gtea61`: one example per clip (metadata), its frames one per record in a frame file per split.

Layout of a build (data_dir/gtea61/<config>/<version>/): the tfds splits S1..S4 hold one small record per clip
(label, subject, clip id, frame count, `first_frame`); `frames-<split>.array_record` holds that split's encoded
frames, one per record, each clip's modalities one after another in config order:
frame i of modality k of a clip is record first_frame + k * num_frames + i. So a sample reads only the frames it
decodes (a record holding a whole clip made a 16-frame sample of a 146-frame clip read 10x the bytes it decoded).

Storage, decided by measurement on the real 455x256 sample files (OpenCV, one core, best of 5;
scripts/measure_storage.py): RGB keeps its source PNG bytes (160 KiB, 1.8 ms to decode; re-encoded
PNG is 153-169 KiB and decodes in 2.6-2.8 ms; JPEG q95 is 34 KiB / 0.4 ms but changes pixels by up
to 31 levels, which the reference never saw). Flow and motion maps are re-encoded, losslessly, as
one-channel PNG level 3: the release stores flow as 3 identical channels (27 KiB, 1.0 ms -> 15 KiB,
0.34 ms) and maps decode in 0.14 ms instead of 0.44 ms (1.4 -> 1.8 KiB).
Every frame is decoded once at build time to check it (a few ms per RGB+flow+map frame, spread over
a thread pool), so a corrupt file fails the build, not a training run.
"""
import concurrent.futures
import dataclasses
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath

from ego_jax.data.gtea61 import layout
from ego_jax.data.gtea61.classes import CLASSES

CONFIGS = {
    "all": ("rgb", "flow_x", "flow_y", "mmaps"),
    "rgb_flow": ("rgb", "flow_x", "flow_y"),
    "rgb_mmaps": ("rgb", "mmaps"),
    "rgb": ("rgb",),
    "flow": ("flow_x", "flow_y"),
}
log = logging.getLogger(__name__)
_PNG_LEVEL = 3  # level 9 is 20x slower to encode for 25% smaller flow; decode time is the same.
# One record per chunk, so reading a record reads only it; encoded images do not compress further.
_FRAME_FILE_OPTIONS = "group_size:1,uncompressed"


def frame_file(version_dir, split: str) -> Path:
    """The frame file of `split` in a build's version folder."""
    return Path(version_dir) / f"frames-{split}.array_record"


@dataclasses.dataclass(eq=False)
class Gtea61Config(tfds.core.BuilderConfig):
    """A modality subset; a config without a modality has no feature for it."""

    modalities: tuple[str, ...] = ()


def _read(path: Path) -> tuple[bytes, np.ndarray]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise layout.CorruptFrameError(f"cannot read {path}: {e}") from e
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise layout.CorruptFrameError(
            f"cannot decode {path} ({len(data)} bytes): corrupt, truncated or not an image. Re-download this file."
        )
    if img.dtype != np.uint8:
        raise layout.FrameFormatError(f"{path}: expected an 8-bit image, got {img.dtype}")
    return data, img


def _rgb_frame(path: Path) -> tuple[bytes, tuple[int, int]]:
    """Source bytes of a checked 3-channel frame, and its (H, W)."""
    data, img = _read(path)
    if img.ndim != 3 or img.shape[2] != 3:
        raise layout.FrameFormatError(f"{path}: expected a 3-channel RGB image, got shape {img.shape}")
    return data, img.shape[:2]


def _gray_frame(path: Path, binary: bool) -> tuple[bytes, tuple[int, int]]:
    """One-channel PNG of a checked flow (first channel) or motion-map frame, and its (H, W)."""
    _, img = _read(path)
    if img.ndim == 3:
        # JPEG chroma subsampling may leave the channels of a grey image slightly unequal; PNG may not.
        lossless = path.suffix.lower() == ".png"
        if img.shape[2] != 3 or (lossless and np.any(img != img[..., :1])):
            raise layout.FrameFormatError(
                f"{path}: expected a one-channel image or 3 identical channels (shape {img.shape}); colour-coded "
                "flow is not GTEA61's format (one channel per direction, 128 = no motion)"
            )
        img = np.ascontiguousarray(img[..., 0])
    if binary and np.any((img != 0) & (img != 255)):
        values = np.unique(img)
        raise layout.FrameFormatError(f"{path}: motion map values must be exactly 0 or 255, found {values[:8]}")
    return cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])[1].tobytes(), img.shape


class Gtea61(tfds.core.GeneratorBasedBuilder):
    """GTEA61 egocentric actions: 61 classes, 4 subjects (one split each), RGB, warp flow, motion maps."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Course PNG and authors' JPEG layouts; one example per clip.",
        "2.0.0": "Frames one per record in a frame file per split; clip records hold metadata and first_frame.",
    }
    BUILDER_CONFIGS = [
        Gtea61Config(name=name, modalities=mods, description=f"modalities: {', '.join(mods)}")
        for name, mods in CONFIGS.items()
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "all"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download GTEA61 by hand and put (or point --manual_dir at) the folder holding
    processed_frames2/ (or processed_frames/), flow_x_processed/ and flow_y_processed/
    (course PNG release), or frames/, flow_x/ and flow_y/ (authors' JPEG release).
    Default: data/manual/GTEA61.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds 4.9.10 resolves a packaged builder's file through `importlib_resources`, which it only
        # declares as a dependency for Python < 3.9; this is the path it would find.
        return epath.Path(__file__)

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = dict(
            label=tfds.features.ClassLabel(names=CLASSES),
            subject=tfds.features.Text(),
            clip_id=tfds.features.Text(),
            num_frames=np.int32,
            first_frame=np.int64,
        )
        if "mmaps" in self.builder_config.modalities:
            features["maps_filled"] = np.int32
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "GTEA61 clips; read them with ego_jax.data.gtea61.load_source, which adds each modality's frames. "
                "Frames are encoded image bytes (decode with ego_jax.data.decode), in frames-<split>.array_record: "
                "RGB as in the source, flow x/y and motion maps as one-channel PNG (flow 128 = no motion, maps "
                "{0, 255})."
            ),
            features=tfds.features.FeaturesDict(features),
        )

    def _split_generators(self, dl_manager):
        # The whole folder structure is checked here, before any example is written.
        clips = layout.scan(Path(dl_manager.manual_dir), self.builder_config.modalities, CONFIGS)
        subjects = sorted({c.subject for c in clips})
        if len(subjects) < len(layout.SUBJECTS):
            log.warning("only subjects %s found in %s; building only their splits",
                        ", ".join(subjects), dl_manager.manual_dir)
        filled = [c for c in clips if c.maps_filled]
        if filled:
            log.info("filled %d missing motion maps in %d clips from their nearest maps (feature maps_filled)",
                     sum(c.maps_filled for c in filled), len(filled))
        # data_path is the build's temporary folder here: tfds moves it into place, frame files included, once every
        # split is written, and deletes it if the build fails.
        return {s: self._generate_examples([c for c in clips if c.subject == s], frame_file(self.data_path, s))
                for s in subjects}

    def _generate_examples(self, clips, frames_path: Path):
        writer = array_record_module.ArrayRecordWriter(os.fspath(frames_path), _FRAME_FILE_OPTIONS)
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                first_frame = 0
                for clip in clips:
                    frames = self._frames(clip, pool)
                    for data in frames:
                        writer.write(data)
                    yield clip.clip_id, self._example(clip, first_frame)
                    first_frame += len(frames)
        finally:
            writer.close()

    def _frames(self, clip: layout.Clip, pool: concurrent.futures.Executor) -> list[bytes]:
        """The clip's checked, encoded frames: each modality's in frame order, modalities in config order."""
        encoded, shapes = [], {}
        for mod, files in clip.files.items():
            read = _rgb_frame if mod == "rgb" else lambda p, b=(mod == "mmaps"): _gray_frame(p, b)
            frames = list(pool.map(read, files))
            encoded += [data for data, _ in frames]
            shapes.update({f: shape for f, (_, shape) in zip(files, frames)})
        if len(set(shapes.values())) > 1:
            by_shape = {shape: f for f, shape in shapes.items()}
            detail = ", ".join(f"{f} is {h}x{w}" for (h, w), f in by_shape.items())
            raise layout.FrameFormatError(f"clip {clip.clip_id}: frames differ in size ({detail}); expected one size")
        return encoded

    @staticmethod
    def _example(clip: layout.Clip, first_frame: int) -> dict:
        example = dict(label=clip.class_name, subject=clip.subject, clip_id=clip.clip_id, num_frames=clip.num_frames,
                       first_frame=first_frame)
        if "mmaps" in clip.files:
            example["maps_filled"] = clip.maps_filled
        return example
