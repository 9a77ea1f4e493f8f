"""tfds builder `gtea61`: one record per clip, its frames one per record in a frame file per split (S1..S4).

Layout and storage of a build: ego_jax.data.frame_records (its storage choices were measured on this release's
real 455x256 files: RGB keeps its source PNG bytes; JPEG q95 would be 5x smaller but changes pixels by up to 31
levels, which the reference never saw). Motion maps: feature `maps_filled` counts maps filled from a neighbour.
"""

import dataclasses
import logging

import numpy as np
import tensorflow_datasets as tfds

from ego_jax.data.frame_records import FrameBuilder, frame_file  # noqa: F401  (frame_file: gtea61's API)
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


@dataclasses.dataclass(eq=False)
class Gtea61Config(tfds.core.BuilderConfig):
    """A modality subset; a config without a modality has no feature for it."""

    modalities: tuple[str, ...] = ()


class Gtea61(FrameBuilder):
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

    def _clips(self, manual_dir):
        clips = layout.scan(manual_dir, self.builder_config.modalities, CONFIGS)
        subjects = sorted({c.subject for c in clips})
        if len(subjects) < len(layout.SUBJECTS):
            log.warning("only subjects %s found in %s; building only their splits", ", ".join(subjects), manual_dir)
        filled = [c for c in clips if c.maps_filled]
        if filled:
            log.info(
                "filled %d missing motion maps in %d clips from their nearest maps (feature maps_filled)",
                sum(c.maps_filled for c in filled),
                len(filled),
            )
        return {s: [c for c in clips if c.subject == s] for s in subjects}

    def _record(self, clip: layout.Clip) -> dict:
        record = dict(label=clip.class_name, subject=clip.subject, clip_id=clip.clip_id, num_frames=clip.num_frames)
        if "mmaps" in clip.files:
            record["maps_filled"] = clip.maps_filled
        return record
