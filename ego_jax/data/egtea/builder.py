"""tfds builder `egtea`: EGTEA Gaze+'s trimmed action clips, frame-level records (frame_records.py), one split per
participant; the protocol splits train{1,2,3} / test{1,2,3} are clip lists of the build (splits.json).

Manual folder (the release as downloaded; annotations.py says where each format detail comes from):
  action_annotation/{action,verb,noun}_idx.txt, {train,test}_split{1,2,3}.txt
  cropped_clips/<session>/<clip>.mp4        (a flat cropped_clips/<clip>.mp4 is found too)
  frames/<clip>/, flow_x/<clip>/, flow_y/<clip>/   optional: frames and flow extracted already (else computed from
                                                   the videos into extract_dir, release.py)
Quirks survived: a listed clip with neither a video nor extracted frames (partial download) is left out of the
build and of every split, listed in the log and in skipped.json; videos no split lists, and files that are not
clips (.DS_Store, copies like x(1).mp4), are ignored; a clip listed with two different labels is an error.
"""

import json
import logging
from pathlib import Path

import tensorflow_datasets as tfds

from ego_jax.data import release
from ego_jax.data.egtea import annotations
from ego_jax.data.manual_dir import AnnotationError, LayoutError, describe

log = logging.getLogger(__name__)
SPLITS_FILE = "splits.json"


def find_release(root: Path) -> Path:
    """The folder holding action_annotation/: `root` or one of its sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(
            f"manual folder {root} does not exist: put the EGTEA Gaze+ download there or pass --manual_dir"
        )
    found = [p.parent for p in [root / "action_annotation", *root.glob("*/action_annotation")] if p.is_dir()]
    if len(found) != 1:
        raise LayoutError(
            f"{'several' if found else 'no'} EGTEA Gaze+ action_annotation/ folders in {root} (it holds: "
            f"{describe(root)}): expected <release>/action_annotation/ with action_idx.txt and the "
            "split files, and <release>/cropped_clips/"
        )
    return found[0]


class Egtea(release.VideoReleaseBuilder):
    """EGTEA Gaze+ trimmed actions: 106 actions (19 verbs x 51 nouns), 3 train/test splits, RGB and warp flow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frame-level records from cropped_clips or extracted frames; splits 1-3 as clip lists."}
    BUILDER_CONFIGS = release.builder_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download EGTEA Gaze+ (the trimmed action clips and the action annotations) by hand and point --manual_dir at
    the folder holding action_annotation/ and cropped_clips/. Default: data/manual/EGTEA.
    """

    def _features(self) -> dict:
        n = annotations.COUNTS
        return dict(
            label=tfds.features.ClassLabel(num_classes=n["action"]),
            verb=tfds.features.ClassLabel(num_classes=n["verb"]),
            noun=tfds.features.ClassLabel(num_classes=n["noun"]),
        )

    def _release_clips(self, manual_dir: Path):
        root = find_release(manual_dir)
        ann = root / "action_annotation"
        self._names = {f: annotations.read_index(ann / f"{f}_idx.txt") for f in ("action", "verb", "noun")}
        counts = {f: len(v) for f, v in self._names.items()}
        if counts != annotations.COUNTS:
            log.warning("class counts %s differ from EGTEA Gaze+'s %s", counts, annotations.COUNTS)
        counts = {f: min(c, annotations.COUNTS[f]) for f, c in counts.items()}  # the features' sizes bound the ids
        self._splits, labels = {}, {}
        for k in annotations.SPLITS:
            for part in ("train", "test"):
                path = ann / f"{part}_split{k}.txt"
                rows = annotations.read_split(path, counts)
                self._splits[f"{part}{k}"] = [clip for clip, *_ in rows]
                for clip, *ids in rows:
                    if labels.setdefault(clip, (tuple(ids), path))[0] != tuple(ids):
                        raise AnnotationError(
                            f"clip {clip} has labels {tuple(i + 1 for i in ids)} in {path} but "
                            f"{tuple(i + 1 for i in labels[clip][0])} in {labels[clip][1]}"
                        )
        clips_dir = root / "cropped_clips"
        videos = {p.stem: p for p in clips_dir.rglob("*.mp4")} if clips_dir.is_dir() else {}
        unlisted = sorted(set(videos) - set(labels))
        if unlisted:
            log.info("ignored %d videos no split lists (e.g. %s)", len(unlisted), unlisted[0])
        clips = [
            release.VideoClip(
                clip, annotations.participant(clip), dict(zip(("label", "verb", "noun"), ids)), videos.get(clip)
            )
            for clip, (ids, _) in sorted(labels.items())
        ]
        return root, clips

    def _write_metadata(self, folder: Path, kept: list[release.VideoClip]) -> None:
        super()._write_metadata(folder, kept)
        have = {c.clip_id for c in kept}
        splits = {name: [c for c in clips if c in have] for name, clips in self._splits.items()}
        (folder / SPLITS_FILE).write_text(json.dumps(splits) + "\n")

    def _class_names(self) -> dict[str, list[str]]:
        return {"label": self._names["action"], "verb": self._names["verb"], "noun": self._names["noun"]}
