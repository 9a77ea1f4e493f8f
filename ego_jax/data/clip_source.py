"""Random access to a built split of an ego_jax frame-level dataset: clip records from tfds, frames on demand.

An example is the clip record (label, subject, clip_id, num_frames, and the dataset's own fields) plus, per
modality, a `Frames` sequence: len() is the frame count and frames[i] reads record i of that clip and modality
from its split's frame file (see frame_records.py), so a loader reads exactly the frames it decodes. Sources
pickle without open files (grain workers open their own).
"""

import collections.abc
import os
from pathlib import Path

from array_record.python import array_record_data_source

from ego_jax.data.frame_records import frame_file


class DamagedBuildError(OSError):
    """A frame file of a build that is missing, truncated or corrupt; the message names it and the rebuild command."""


class FrameFile:
    """The encoded frames of one split of a build, read by record index; errors name the file and the split."""

    def __init__(self, path: Path, split: str, rebuild: str):
        self.path, self.split, self._rebuild = Path(path), split, rebuild
        if not self.path.is_file():
            raise DamagedBuildError(
                f"frame file {self.path} of split {split} is missing: the build is incomplete; "
                f"delete {self.path.parent} and {rebuild}"
            )
        try:
            self._records = array_record_data_source.ArrayRecordDataSource([os.fspath(self.path)])
        except (RuntimeError, ValueError) as e:
            raise self._damaged(f"cannot open it ({e})") from e

    def _damaged(self, detail: str) -> DamagedBuildError:
        return DamagedBuildError(
            f"frame file {self.path} of split {self.split} is truncated or corrupt: {detail}. "
            f"Delete {self.path.parent} and {self._rebuild}"
        )

    def __len__(self) -> int:
        return len(self._records)

    def read(self, index: int, what: str) -> bytes:
        """Encoded bytes of record `index`; `what` names the frame in errors."""
        if not 0 <= index < len(self._records):
            raise self._damaged(f"{what} is record {index} but the file holds {len(self._records)} records")
        try:
            return self._records[index]
        except RuntimeError as e:
            raise self._damaged(f"cannot read {what} (record {index}): {e}") from e


class Frames(collections.abc.Sequence):
    """The `count` frames of one clip and modality, records [start, start + count) of a FrameFile."""

    def __init__(self, file: FrameFile, start: int, count: int, what: str):
        self._file, self._start, self._count, self._what = file, start, count, what

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> bytes:
        if not -self._count <= i < self._count:
            raise IndexError(f"frame {i} of {self._what}, which has {self._count} frames")
        i = int(i) % self._count
        return self._file.read(self._start + i, f"{self._what}[{i}]")


class ClipSource(collections.abc.Sequence):
    """Examples of a built split expression (e.g. 'S1+S3+S4'): clip records with a `Frames` per modality.

    indices: the positions of `clips` this source holds, in order (a protocol split inside the build's splits,
    e.g. EGTEA's train_split1); None: all. target: the record field read as `label` (e.g. EGTEA's 'verb').
    """

    def __init__(
        self,
        clips,
        version_dir,
        splits,
        modalities: tuple[str, ...],
        rebuild: str,
        *,
        indices=None,
        target: str = "label",
        name: str | None = None,
    ):
        """`clips`: the tfds data source of the clip records; `splits`: every split of the build."""
        self._clips, self._modalities = clips, modalities
        self._indices, self._target = (None if indices is None else list(indices)), target
        # A clip record names its subject, which is its split.
        self._files = {s: FrameFile(frame_file(version_dir, s), s, rebuild) for s in splits}
        # What errors and checks ask of a source (see pipeline.where_in): the split expression, the clip
        # records' files, and the keys of an example.
        self.split, self.data_source = name or clips.split, clips.data_source
        self.features = (*(k for k in clips.dataset_info.features if k != "first_frame"), *modalities)

    def __len__(self) -> int:
        return len(self._clips) if self._indices is None else len(self._indices)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> dict:
        example = dict(self._clips[index if self._indices is None else self._indices[index]])
        if self._target != "label":
            example["label"] = example[self._target]
        first, n = int(example.pop("first_frame")), int(example["num_frames"])
        clip = f"clip {example['clip_id'].decode()}"
        file = self._files[example["subject"].decode()]
        for k, mod in enumerate(self._modalities):
            example[mod] = Frames(file, first + k * n, n, f"{clip} {mod}")
        return example
