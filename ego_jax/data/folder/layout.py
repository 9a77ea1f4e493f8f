"""Which videos of your folder are clips, of which class and split: torchvision's and mmaction2's conventions.

Checked in this order (the first that applies):
  1. video lists `train.txt` and `test.txt` (mmaction2's VideoDataset annotation files): one clip a line,
     `<path relative to the folder> <label>`, the label an index (0-based; names from `classes.txt`, one a line,
     when present, else '0', '1', ...) or a class name (names sorted, as torchvision sorts folders);
  2. `train/` and `test/`, each with class-named subfolders of videos;
  3. class-named subfolders of videos (torchvision's DatasetFolder: classes = sorted folder names, videos anywhere
     below them); a held-out fraction of each class is the test split, drawn with a seed.
Clip ids are the videos' paths relative to the folder, without extension (`open/clip_003`).
"""

import dataclasses
from pathlib import Path

import numpy as np

from ego_jax.data import video
from ego_jax.data.manual_dir import AnnotationError, LayoutError, describe, dirs

SPLITS = ("train", "test")
LISTS = {split: f"{split}.txt" for split in SPLITS}
CLASSES_FILE = "classes.txt"


@dataclasses.dataclass(frozen=True)
class Clip:
    clip_id: str
    split: str  # 'train' | 'test'
    label: int
    video: Path


def _videos(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and video.is_video(f) and not f.name.startswith("."))


def _clip(root: Path, path: Path, split: str, label: int) -> Clip:
    return Clip(path.relative_to(root).with_suffix("").as_posix(), split, label, path)


def _from_lists(root: Path) -> tuple[list[str], list[Clip]]:
    rows = []
    for split, name in LISTS.items():
        for n, line in enumerate((root / name).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) < 2:
                raise AnnotationError(f"{root / name}:{n}: expected `<video path> <label>`, got {line!r}")
            path = root / parts[0]
            if not path.is_file():
                raise AnnotationError(f"{root / name}:{n}: video {path} does not exist (paths are relative to {root})")
            rows.append((split, path, parts[-1]))
    labels = [label for _, _, label in rows]
    if all(label.isdigit() for label in labels):
        indices = [int(label) for label in labels]
        names_file = root / CLASSES_FILE
        names = (
            [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
            if names_file.exists()
            else [str(i) for i in range(max(indices) + 1)]
        )
        if max(indices) >= len(names):
            raise AnnotationError(
                f"label {max(indices)} in the video lists of {root}, but {names_file} names only {len(names)} classes"
            )
    else:
        names = sorted(set(labels))
        indices = [names.index(label) for label in labels]
    return names, [_clip(root, path, split, i) for (split, path, _), i in zip(rows, indices)]


def _class_folders(root: Path) -> dict[str, list[Path]]:
    found = {d.name: _videos(d) for d in dirs(root)}
    empty = [name for name, videos in found.items() if not videos]
    if empty:
        raise LayoutError(
            f"class folders {empty} in {root} hold no video ({', '.join(video.VIDEO_EXTENSIONS)}): "
            "remove them or add their videos"
        )
    return found


def held_out(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which of n videos of a class are test videos: round(fraction * n) of them, at least one when n >= 2 and
    fraction > 0, never all (the class must train)."""
    count = min(max(round(fraction * n), 1 if fraction > 0 and n >= 2 else 0), n - 1)
    test = np.zeros(n, bool)
    test[rng.permutation(n)[:count]] = True
    return test


def scan(root, test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[Clip], str]:
    """Your folder -> (class names, clips, which convention was found: 'lists' | 'split folders' | 'class folders')."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root} does not exist: point --manual_dir at your folder of class-named video folders")
    if all((root / name).is_file() for name in LISTS.values()):
        names, clips = _from_lists(root)
        how = "lists"
    elif all((root / split).is_dir() for split in SPLITS):
        per_split = {split: _class_folders(root / split) for split in SPLITS}
        names = sorted(per_split["train"])
        unknown = sorted(set(per_split["test"]) - set(names))
        if unknown:
            raise LayoutError(f"classes {unknown} of {root / 'test'} have no folder in {root / 'train'}")
        clips = [
            _clip(root, v, split, names.index(c)) for split in SPLITS for c, vs in per_split[split].items() for v in vs
        ]
        how = "split folders"
    else:
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction={test_fraction}: expected a fraction in [0, 1)")
        found = _class_folders(root)
        if not found:
            raise LayoutError(
                f"no class folders in {root} (it holds: {describe(root)}): expected class-named "
                "subfolders of videos, `train/` and `test/` with such subfolders, or video lists "
                f"{LISTS['train']} and {LISTS['test']} (`<path> <label>` lines)"
            )
        names = sorted(found)
        clips = []
        for label, name in enumerate(names):
            test = held_out(len(found[name]), test_fraction, np.random.default_rng([seed, label]))
            clips += [_clip(root, v, SPLITS[int(t)], label) for v, t in zip(found[name], test)]
        how = "class folders"
    seen = {}
    for clip in clips:
        if clip.clip_id in seen:
            first = seen[clip.clip_id]
            raise LayoutError(
                f"clip {clip.clip_id} is listed twice ({first.video} in {first.split}, {clip.video} in "
                f"{clip.split}): a video belongs to one split, and two videos need two names"
            )
        seen[clip.clip_id] = clip
    return names, sorted(clips, key=lambda c: c.clip_id), how
