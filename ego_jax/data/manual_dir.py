"""What every release's builder shares about a manual folder: its errors and reading numbered frame folders.

A frame folder holds one clip's frames of one modality, numbered 1..N (e.g. the authors' layout
`frames/<clip>/image_00001.jpg`, `flow_x/<clip>/flow_x_00001.jpg`); files that are not frames (.DS_Store,
duplicates like `flow_x_00007(1).png`) are skipped and counted, never read.
"""

import re
from pathlib import Path

from ego_jax.data.decode import DecodeError

# The authors' per-clip layout (Ego-RNN's and LSTA's loaders read it; dense_flow writes flow_x/flow_y like it).
AUTHORS_FOLDERS = {"rgb": "frames", "flow_x": "flow_x", "flow_y": "flow_y"}
AUTHORS_PATTERNS = {
    "rgb": r"(?:image|img)_(\d+)\.(?:jpe?g|png)",
    "flow_x": r"flow_x_(\d+)\.(?:jpe?g|png)",
    "flow_y": r"flow_y_(\d+)\.(?:jpe?g|png)",
}
AUTHORS_NAMES = {"rgb": "image_{:05d}.jpg", "flow_x": "flow_x_{:05d}.jpg", "flow_y": "flow_y_{:05d}.jpg"}


class ManualDirError(ValueError):
    """The manual folder is not a usable release; the message names the file or folder."""


class LayoutError(ManualDirError):
    """No recognised layout, or a folder where subject / instance folders were expected."""


class MissingModalityError(ManualDirError):
    """A modality folder the builder config needs is absent (whole release or one clip)."""


class UnknownClassError(ManualDirError):
    """A class (folder name or annotation) that is not one of the release's classes."""


class FrameCountError(ManualDirError):
    """Frame numbering with gaps, or frame counts that disagree between modalities of a clip."""


class FrameFormatError(ManualDirError):
    """A frame that decodes but has the wrong channels, dtype, size or (maps) values."""


class CorruptFrameError(ManualDirError, DecodeError):
    """A frame file that cannot be read or decoded."""


class CorruptVideoError(ManualDirError):
    """A video that cannot be decoded, or that ends before a frame its annotations name."""


class AnnotationError(ManualDirError):
    """An annotation file (labels, class index, split list) that is missing or has a line of the wrong syntax."""


def dirs(folder: Path) -> list[Path]:
    """Sub-folders that can hold data, sorted."""
    # Files (.DS_Store, Thumbs.db, notes), hidden folders and macOS zip metadata are not part of the structure.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def describe(folder: Path) -> str:
    """'a/, b.txt, ...': what a folder holds, for error messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "nothing"


def numbered_frames(folder: Path, pattern: str, what: str, ignored: list[Path]) -> dict[int, Path]:
    """Frame number -> file for the files in `folder` named like `pattern`; the others go to `ignored`."""
    found = {}
    for f in sorted(folder.iterdir()):
        m = re.fullmatch(pattern, f.name, re.IGNORECASE)
        if m is None or not f.is_file():
            # .DS_Store, duplicates like flow_x_00007(1).png: not frames.
            ignored.append(f)
            continue
        k = int(m.group(1))
        if k in found:
            raise FrameCountError(f"{what}: files {found[k].name} and {f.name} in {folder} are both frame {k}")
        found[k] = f
    return found


def contiguous(found: dict[int, Path], folder: Path, what: str) -> tuple[Path, ...]:
    """The files of frames 1..N in order; gaps are an error naming the missing numbers."""
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        missing = sorted(set(range(1, max(found, default=0) + 1)) - set(found))
        raise FrameCountError(
            f"{what} frames in {folder} are not numbered 1..{len(found)}: missing frame numbers {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}. Restore the missing files (re-download or re-extract this clip)."
        )
    return tuple(found[k] for k in expected)


def authors_clip(root: Path, clip_id: str, modalities, ignored: list[Path]) -> dict[str, tuple[Path, ...]] | None:
    """Frame files per modality of `clip_id` in the authors' layout under `root`; None if it has no folder there.

    Every modality must be present with frames 1..N and one count for all (the authors' releases store one flow
    x/y frame per RGB frame).
    """
    folders = {m: Path(root) / AUTHORS_FOLDERS[m] / clip_id for m in modalities}
    if not any(f.is_dir() for f in folders.values()):
        return None
    files = {}
    for mod, folder in folders.items():
        if not folder.is_dir():
            raise MissingModalityError(
                f"clip {clip_id} has no {mod} folder {folder} although other modalities "
                "have one (partial extraction?): extract it again, or delete the clip's folders"
            )
        found = numbered_frames(folder, AUTHORS_PATTERNS[mod], mod, ignored)
        if not found:
            raise FrameCountError(
                f"no {mod} frames in {folder}: expected files named like {AUTHORS_NAMES[mod].format(1)}"
            )
        files[mod] = contiguous(found, folder, mod)
    counts = {m: len(f) for m, f in files.items()}
    if len(set(counts.values())) > 1:
        raise FrameCountError(
            f"clip {clip_id} in {root}: frame counts disagree between modalities {counts}; "
            "expected one flow x/y frame per RGB frame. Extract the clip again."
        )
    return files
