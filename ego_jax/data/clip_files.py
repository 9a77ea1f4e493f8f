"""Clips on disk as a loader source: video files, frame folders and the authors' per-clip layout.

  clips = find_clips("my_videos/")        # every video and frame folder under it (ids: paths relative to it)
  source = FileSource(clips, features=("rgb", "flow_x", "flow_y"), from_frames=predictor.from_frames)

An example holds the clip's frames as ego_jax.data.pipeline reads them, so a clip on disk goes through exactly the
evaluation's sampling and crops: frames of a video decoded (uint8 arrays), frame files as their encoded bytes read
on demand (only the frames the sampling picks are read). Flow comes from the clip's flow_x/ flow_y/ frames in the
authors' layout, or `from_frames` makes the example's modalities from its RGB frames (computing flow).
"""

import collections.abc
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from ego_jax.data import video
from ego_jax.data.manual_dir import AUTHORS_FOLDERS, authors_clip

# The folders of the authors' layout: <root>/frames/<clip id>/, <root>/flow_x/<clip id>/, <root>/flow_y/<clip id>/.
FRAMES = AUTHORS_FOLDERS["rgb"]


class ClipFilesError(ValueError):
    """An --input that holds no clip, or a clip that lacks what the model reads; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class ClipFiles:
    """One clip on disk: a video file or frame folder (`rgb`), and its flow frame files when it has them."""

    clip_id: str
    rgb: Path | tuple[Path, ...] | None  # a video file, or the frame files in order
    flow_x: tuple[Path, ...] | None = None
    flow_y: tuple[Path, ...] | None = None


class _FileFrames(collections.abc.Sequence):
    """Frame files of one clip and modality, each read (encoded bytes) only when indexed."""

    def __init__(self, files: Sequence[Path]):
        self._files = tuple(files)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, i: int) -> bytes:
        return self._files[i].read_bytes()


def _leaf_frame_folders(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that directly hold image files."""
    return sorted({f.parent for f in root.rglob("*") if f.suffix.lower() in video.IMAGE_EXTENSIONS and f.is_file()})


def find_clips(path, features: Sequence[str] = ("rgb",)) -> list[ClipFiles]:
    """A video file, a frame folder, a folder in the authors' layout (frames/, flow_x/, flow_y/ with one folder per
    clip), or a folder of any of these (e.g. class-named subfolders of videos) -> its clips, sorted by id.

    Ids: the file's name without extension for one video or frame folder, else the path relative to `path`.
    features: what the model reads; flow frames are taken from the authors' layout when it has them.
    """
    path = Path(path)
    if path.is_file():
        if not video.is_video(path):
            raise ClipFilesError(
                f"{path} is not a video file: expected one of {', '.join(video.VIDEO_EXTENSIONS)}, "
                "a frame folder, or a folder of clips"
            )
        return [ClipFiles(path.stem, path)]
    if not path.is_dir():
        raise ClipFilesError(f"{path} does not exist: expected a video file, a frame folder or a folder of clips")
    if (path / FRAMES).is_dir():
        flow = tuple(f for f in features if f.startswith("flow"))
        clips, ignored = [], []
        for folder in _leaf_frame_folders(path / FRAMES):
            clip_id = folder.relative_to(path / FRAMES).as_posix()
            has_flow = all((path / AUTHORS_FOLDERS[f] / clip_id).is_dir() for f in flow)
            files = authors_clip(path, clip_id, ("rgb", *flow) if has_flow and flow else ("rgb",), ignored)
            clips.append(ClipFiles(clip_id, files["rgb"], files.get("flow_x"), files.get("flow_y")))
        return clips
    if video.image_files(path):
        return [ClipFiles(path.name, tuple(video.image_files(path)))]
    clips = [
        ClipFiles(f.relative_to(path).with_suffix("").as_posix(), f)
        for f in sorted(path.rglob("*"))
        if f.is_file() and video.is_video(f)
    ]
    clips += [
        ClipFiles(folder.relative_to(path).as_posix(), tuple(video.image_files(folder)))
        for folder in _leaf_frame_folders(path)
        if folder != path
    ]
    if not clips:
        raise ClipFilesError(
            f"no clip in {path}: expected video files ({', '.join(video.VIDEO_EXTENSIONS)}) or "
            "folders of frames, e.g. class-named subfolders of videos"
        )
    return sorted(clips, key=lambda c: c.clip_id)


class FileSource(collections.abc.Sequence):
    """`clips` as examples with the `features` a model reads ('rgb', 'flow_x', 'flow_y'); `ids` names them.

    from_frames: RGB frames -> the example's modalities ('rgb', 'flow_x', 'flow_y'), for clips without flow files
    (None: such clips are an error).
    """

    def __init__(
        self, clips: Sequence[ClipFiles], features: Sequence[str], from_frames: Callable[[Sequence], dict] | None = None
    ):
        self._clips, self._features, self._from_frames = list(clips), tuple(features), from_frames
        self.ids = [c.clip_id for c in self._clips]
        self.split = None

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, index: int) -> dict:
        clip = self._clips[index]
        if isinstance(clip.rgb, Path):
            rgb = list(video.iter_frames(clip.rgb))
            if not rgb:
                raise ClipFilesError(f"{clip.rgb} holds no frames: the video is empty or cannot be decoded")
        else:
            rgb = _FileFrames(clip.rgb)
        example = {"clip_id": clip.clip_id, "rgb": rgb}
        if "flow_x" not in self._features:
            return example
        if clip.flow_x is not None:
            return {**example, "flow_x": _FileFrames(clip.flow_x), "flow_y": _FileFrames(clip.flow_y)}
        if self._from_frames is None:
            raise ClipFilesError(
                f"clip {clip.clip_id} has no flow_x/ flow_y/ frames and no from_frames was given "
                "to compute its flow from its frames"
            )
        return {**example, **self._from_frames(rgb)}
