"""The GTEA family's label files (GTEA, GTEA Gaze+): one file per video, one action a line, and their builders.

A line is `<verb><object,object,...> (first-last)` with first/last the action's 1-based frame numbers in the video
(inclusive); the Ego-RNN authors' prepareGTEA61Dataset.py reads exactly this (the two <...> groups, the numbers
between '(' '-' ')', frames first..last copied as the clip) and so does hassony2's GTEA/GTEA Gaze+ loader
(gteaannots.process_lines, regex `<(.*)><(.*)> \\((.*)-(.*)\\)`, objects split on ','). Other lines (blank, or
without two <...> groups) are not actions and are skipped, counted in the log, as both readers do.
Videos are found by the label file's stem anywhere under the release (.mp4, .avi, .mov, .mkv).
"""

import logging
import re
from pathlib import Path

import tensorflow_datasets as tfds

from ego_jax.data import release
from ego_jax.data.manual_dir import AnnotationError, LayoutError, describe

log = logging.getLogger(__name__)
LINE = re.compile(r"<([^<>]*)><([^<>]*)>\s*\((\d+)-(\d+)\)")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def parse(path: Path) -> tuple[list[tuple[str, tuple[str, ...], int, int]], int]:
    """([(verb, objects, first, last)], lines skipped) of one label file."""
    actions, skipped = [], 0
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = LINE.search(line)
        if m is None:
            skipped += bool(line.strip())
            continue
        first, last = int(m.group(3)), int(m.group(4))
        if not 1 <= first <= last:
            raise AnnotationError(f"{path}:{n}: frame range ({first}-{last}) must be 1 <= first <= last: {line!r}")
        actions.append((m.group(1).strip(), tuple(o.strip() for o in m.group(2).split(",")), first, last))
    return actions, skipped


class GteaLabelsBuilder(release.VideoReleaseBuilder, skip_registration=True):
    """A release of videos with one GTEA label file each; a subclass says where labels live, how a video's stem
    names its subject, and which class (if any) a (verb, objects) pair is."""

    LABEL_FOLDERS: tuple[str, ...] = ("labels",)
    NUM_CLASSES: int = 0

    def _subject(self, stem: str) -> str | None:
        raise NotImplementedError

    def _class(self, verb: str, objects: tuple[str, ...]) -> str | None:
        """The class of an action, or None for an action outside the class list."""
        raise NotImplementedError

    def _class_list(self, found: set[str]) -> list[str]:
        """Class names, label = position; `found`: the classes of every action in the label files."""
        raise NotImplementedError

    def _features(self) -> dict:
        return dict(label=tfds.features.ClassLabel(num_classes=self.NUM_CLASSES))

    def _class_names(self) -> dict[str, list[str]]:
        return {"label": self._classes}

    def _label_files(self, root: Path) -> tuple[Path, list[Path]]:
        for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
            for name in self.LABEL_FOLDERS:
                if (base / name).is_dir():
                    return base, sorted(p for p in (base / name).glob("*.txt") if not p.name.startswith("."))
        raise LayoutError(
            f"no label folder ({' or '.join(self.LABEL_FOLDERS)}/) in {root} or its sub-folders "
            f"(it holds: {describe(root)}): expected one <video>.txt of '<verb><objects> (first-last)' "
            "lines per video"
        )

    def _release_clips(self, manual_dir: Path):
        manual_dir = Path(manual_dir)
        if not manual_dir.is_dir():
            raise LayoutError(
                f"manual folder {manual_dir} does not exist: put the {self.name} download there or pass --manual_dir"
            )
        root, label_files = self._label_files(manual_dir)
        videos = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()}
        actions, skipped_lines, others = [], 0, 0
        for path in label_files:
            subject = self._subject(path.stem)
            if subject is None:
                log.info("ignored label file %s: its name names no subject of %s", path, self.name)
                continue
            parsed, skipped = parse(path)
            skipped_lines += skipped
            for verb, objects, first, last in parsed:
                cls = self._class(verb, objects)
                if cls is None:
                    others += 1
                    continue
                actions.append((path.stem, subject, cls, first, last))
        if not actions:
            raise AnnotationError(f"no action of the {self.name} classes in the label files of {root}")
        self._classes = self._class_list({a[2] for a in actions})
        if skipped_lines or others:
            log.info(
                "label files: skipped %d lines that are not actions and %d actions outside the %d classes",
                skipped_lines,
                others,
                len(self._classes),
            )
        clips = [
            release.VideoClip(
                f"{stem}/{first}-{last}", subject, dict(label=self._classes.index(cls)), videos.get(stem), first, last
            )
            for stem, subject, cls, first, last in actions
        ]
        return root, sorted(clips, key=lambda c: c.clip_id)
