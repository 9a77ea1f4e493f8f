"""tfds builder `folder`: your own labelled videos (layout.py), frames and warp flow computed at build time.

The frame-level records of every ego_jax dataset (frame_records.py) with the video releases' extraction
(release.py: frames and dense_flow-quantised warp TV-L1 flow in the authors' layout under extract_dir, resumable);
one split per layout split, `train` and `test`. How the clips were split is recorded in split.json beside the
build, and building again into the same data_dir with another split is refused.
"""

import json
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ego_jax.data import release
from ego_jax.data.folder import layout

log = logging.getLogger(__name__)
SPLIT_FILE = "split.json"


class Folder(release.VideoReleaseBuilder):
    """Your labelled videos: class-named folders or video lists, a train and a test split, RGB and warp flow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Class folders, train/test folders or mmaction2 video lists; frame-level records."}
    BUILDER_CONFIGS = release.builder_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point --manual_dir at your folder: class-named subfolders of videos (a held-out fraction of each class is the
    test split), train/ and test/ holding such subfolders, or the video lists train.txt and test.txt
    (`<path> <label>` lines, mmaction2's format; classes.txt names the label indices).
    """

    def __init__(self, *, test_fraction: float = 0.2, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self._split = {"test_fraction": test_fraction, "seed": seed}

    def _features(self) -> dict:
        # The class count is the folder's, known only when it is read: a plain index (names in classes.json).
        return dict(label=np.int64)

    def _release_clips(self, manual_dir: Path):
        self._names, clips, how = layout.scan(manual_dir, **self._split)
        counts = {s: sum(c.split == s for c in clips) for s in layout.SPLITS}
        log.info("%s: %d classes from its %s, %s clips", manual_dir, len(self._names), how, counts)
        if not counts["test"]:
            log.warning("%s has no test clip: the test split is empty", manual_dir)
        self._split_record = {"layout": how, **(self._split if how == "class folders" else {})}
        return Path(manual_dir), [release.VideoClip(c.clip_id, c.split, {"label": c.label}, c.video) for c in clips]

    def _write_metadata(self, folder: Path, kept) -> None:
        super()._write_metadata(folder, kept)
        (folder / SPLIT_FILE).write_text(json.dumps(self._split_record) + "\n")

    def _class_names(self) -> dict[str, list[str]]:
        return {"label": self._names}
