"""What the video releases' builders share (EGTEA Gaze+, GTEA71, GTEA Gaze+): clips cut from videos by their
annotations, their frames and warp flow in the authors' per-clip layout, and opening a build by protocol split.

A release's builder lists its clips (`VideoClip`: id, subject, label fields, the video and the frame range the
annotation gives). Each clip's frames come from, in order:
  1. a folder the user extracted already, in the authors' layout under the manual folder
     (`frames/<clip_id>/image_00001.jpg`, `flow_x/<clip_id>/flow_x_00001.jpg`, `flow_y/...`; LSTA's EGTEA
     loader reads exactly this, swathikirans/LSTA gen_splits.py gen_split_egtea_twoStream);
  2. the same layout under `extract_dir` (default <data_dir>/<dataset>_extracted), written by an earlier build;
  3. extraction from the video into extract_dir by ego_jax.data.flow (frames, TV-L1 warp flow quantised as
     dense_flow; `flow_spec`, default warp_tvl1 on OpenCV with dense_flow's parameters, frames resized to a
     256 px short side like GTEA61's released 455x256 frames). As dense_flow, T frames give T - 1 pairs and image k
     is the second frame of pair k: a clip cut from a video by frames first..last is extracted from frames
     first-1..last, so its images are exactly frames first..last (first = 1: frames 2..last); a clip that is its
     own video (EGTEA) loses its first frame. Extraction is resumable (a finished clip is skipped).
"""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ego_jax.data import clip_index, prepare
from ego_jax.data.clip_source import ClipSource
from ego_jax.data.frame_records import FrameBuilder
from ego_jax.data.manual_dir import CorruptVideoError, MissingModalityError, authors_clip

log = logging.getLogger(__name__)
CONFIGS = {"rgb_flow": ("rgb", "flow_x", "flow_y"), "rgb": ("rgb",), "flow": ("flow_x", "flow_y")}
CLASSES_FILE = "classes.json"  # {label field: [class names]} of a build, written by the builder
SKIPPED_FILE = "skipped.json"  # clips the annotations list that the build left out (neither video nor frames)


@dataclasses.dataclass
class VideoClip:
    """One annotated clip of a release: `video` frames first..last (1-based, inclusive; None: the whole video)."""

    clip_id: str
    subject: str
    record: dict  # label fields (indices), as the builder's features
    video: Path | None
    first: int | None = None
    last: int | None = None
    files: dict = dataclasses.field(default_factory=dict)  # {modality: frame paths}, filled by the builder


@dataclasses.dataclass(eq=False)
class ReleaseConfig(tfds.core.BuilderConfig):
    """A modality subset of a video release."""

    modalities: tuple[str, ...] = ()


def builder_configs():
    return [
        ReleaseConfig(name=name, modalities=mods, description=f"modalities: {', '.join(mods)}")
        for name, mods in CONFIGS.items()
    ]


class VideoReleaseBuilder(FrameBuilder, skip_registration=True):
    """Frame-level builder of a release of videos + annotations; a subclass gives `_release_clips`, `_features`,
    `_class_names` and `_label_fields`."""

    DEFAULT_BUILDER_CONFIG_NAME = "rgb_flow"

    def __init__(self, *, extract_dir=None, flow_spec=None, **kwargs):
        super().__init__(**kwargs)
        self._extract_dir = Path(extract_dir) if extract_dir else Path(self.data_dir_root) / f"{self.name}_extracted"
        self._flow_spec = flow_spec

    def _release_clips(self, manual_dir: Path) -> tuple[Path, list[VideoClip]]:
        """(the release folder holding the annotations, every clip with its record), checked before any writing."""
        raise NotImplementedError

    def _features(self) -> dict:
        raise NotImplementedError

    def _class_names(self) -> dict[str, list[str]]:
        """{label field: class names} of the clips just listed (written beside the build)."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        features = dict(
            self._features(),
            subject=tfds.features.Text(),
            clip_id=tfds.features.Text(),
            num_frames=np.int32,
            first_frame=np.int64,
        )
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features),
            description=(
                f"{self.name} clips; read them with ego_jax.data.{self.name}.load_source, which adds each "
                "modality's frames (frame_records.py). Class names: classes.json in the build folder."
            ),
        )

    def _clips(self, manual_dir: Path) -> dict[str, list[VideoClip]]:
        root, clips = self._release_clips(manual_dir)
        modalities = self.builder_config.modalities
        ignored, kept, skipped, todo = [], [], [], []
        for clip in clips:
            for where in (root, self._extract_dir):
                files = authors_clip(where, clip.clip_id, modalities, ignored)
                if files is not None:
                    clip.files = files
                    kept.append(clip)
                    break
            else:
                # A clip with neither video nor frames: a partial download; it is left out and listed.
                (todo if clip.video is not None else skipped).append(clip)
        if todo:
            log.info("extracting frames and warp flow of %d clips into %s", len(todo), self._extract_dir)
            extract(todo, self._extract_dir, self._flow_spec)
            for clip in todo:
                clip.files = authors_clip(self._extract_dir, clip.clip_id, modalities, ignored)
            kept = sorted(kept + todo, key=lambda c: c.clip_id)
        if skipped:
            log.warning(
                "left out %d clips that have neither a video nor extracted frames (partial download?): %s%s",
                len(skipped),
                ", ".join(c.clip_id for c in skipped[:5]),
                " ..." if len(skipped) > 5 else "",
            )
        if ignored:
            log.info("ignored %d files that are not frames in the clips' folders", len(ignored))
        if not kept:
            raise MissingModalityError(f"no clip of {manual_dir} has a video or extracted frames")
        self._write_metadata(Path(self.data_path), kept)
        (Path(self.data_path) / SKIPPED_FILE).write_text(json.dumps([c.clip_id for c in skipped]) + "\n")
        subjects = sorted({c.subject for c in kept})
        return {s: [c for c in kept if c.subject == s] for s in subjects}

    def _write_metadata(self, folder: Path, kept: list[VideoClip]) -> None:
        """Files beside the build (folder: its temporary version folder): the class names."""
        (folder / CLASSES_FILE).write_text(json.dumps(self._class_names()) + "\n")

    def _record(self, clip: VideoClip) -> dict:
        return dict(
            clip.record, subject=clip.subject, clip_id=clip.clip_id, num_frames=len(next(iter(clip.files.values())))
        )


def _checked_video(video: Path, short_side: int | None):
    """(1-based number, (H, W, 3) RGB frame) of `video` one by one; a decoding failure names the file."""
    from ego_jax.data import video as video_lib  # noqa: PLC0415  (PyAV only where videos are decoded)

    try:
        yield from enumerate(video_lib.iter_frames(video, short_side), 1)
    except video_lib.VideoError as e:
        raise CorruptVideoError(f"{e} (a clip of this dataset is cut from it)") from e


def extract(clips: list[VideoClip], out: Path, spec=None) -> None:
    """Frames and warp flow of `clips` in the authors' layout under `out` (ego_jax.data.flow), one decoding pass per
    video; clips already finished there are skipped."""
    from ego_jax.data import flow  # noqa: PLC0415  (OpenCV's optflow and JAX only where flow is computed)

    spec = spec or flow.FlowSpec(short_side=256)
    by_video: dict[Path, list[VideoClip]] = {}
    for clip in clips:
        if not flow.done(out, clip.clip_id, spec):
            by_video.setdefault(clip.video, []).append(clip)
    for video, mine in by_video.items():
        for clip in (c for c in mine if c.first is None):  # a clip that is its own video (EGTEA's cropped clips)
            _write(out, clip, np.stack([f for _, f in _checked_video(video, spec.short_side)]), spec)
        cut = sorted((c for c in mine if c.first is not None), key=lambda c: c.first)
        if not cut:
            continue
        kept, k = {}, 0
        for k, frame in _checked_video(video, spec.short_side):
            if any(max(c.first - 1, 1) <= k <= c.last for c in cut):
                kept[k] = frame
            while cut and cut[0].last == k:
                clip = cut.pop(0)
                _write(out, clip, np.stack([kept[i] for i in range(max(clip.first - 1, 1), clip.last + 1)]), spec)
            low = min((max(c.first - 1, 1) for c in cut), default=k + 1)
            kept = {i: f for i, f in kept.items() if i >= low}
        if cut:
            raise CorruptVideoError(
                f"{video} ends at frame {k}, but its annotations name frames {cut[0].first}-"
                f"{cut[0].last} (clip {cut[0].clip_id}): is the video truncated?"
            )


def _write(out: Path, clip: VideoClip, frames: np.ndarray, spec) -> None:
    from ego_jax.data import flow  # noqa: PLC0415

    if len(frames) < 2:
        raise CorruptVideoError(
            f"clip {clip.clip_id} of {clip.video} has {len(frames)} frame: warp flow needs at "
            "least 2 consecutive frames"
        )
    fields, _ = flow.clip_flow(frames, spec)
    flow.write_clip(out, clip.clip_id, frames, fields, spec)


def rebuild_command(name: str, config: str, data_dir) -> str:
    """The command that builds <name>/<config> into `data_dir`."""
    return (
        f"python scripts/build_dataset.py --dataset {name} --manual_dir <{name} folder> --data_dir {data_dir} "
        f"--config {config}"
    )


def build(builder: FrameBuilder, manual_dir) -> FrameBuilder:
    """Builds `builder` from the release in `manual_dir` (no-op if already built) and indexes its clip ids.

    One build at a time per dataset config and data_dir; the folder an interrupted build left is removed first.
    """
    prepare.download_and_prepare(builder, download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    clip_index.write_index(builder, builder.data_dir_root)
    return builder


def open_source(
    builder: FrameBuilder,
    split: str,
    *,
    named: dict[str, list[str]] | None = None,
    target: str = "label",
    rebuild: str | None = None,
) -> ClipSource:
    """Random-access source of `split` of a prepared build: its own splits joined ('S1+S3') or, with `named`, one
    protocol split {name: clip ids} laid over all of them (EGTEA's train1); `target` read as the label; `rebuild`:
    the command that builds it (errors name it)."""
    data_dir, config = builder.data_dir_root, builder.builder_config.name
    modalities = builder.builder_config.modalities
    rebuild = f"rebuild with: {rebuild or rebuild_command(builder.name, config, data_dir)}"
    splits = sorted(builder.info.splits)
    indices, name = None, None
    if named is not None and split in named:
        index = {cid: i for i, cid in enumerate(clip_index.clip_ids(builder, data_dir, "+".join(splits)))}
        missing = [c for c in named[split] if c not in index]
        if missing:
            raise FileNotFoundError(
                f"split {split} of {builder.name}/{config} names {len(missing)} clips the build "
                f"does not hold (e.g. {missing[0]}): {rebuild}"
            )
        indices, name, split = [index[c] for c in named[split]], split, "+".join(splits)
    clips = tfds.data_source(f"{builder.name}/{config}", split=split, data_dir=str(data_dir), download=False)
    return ClipSource(clips, builder.data_path, splits, modalities, rebuild, indices=indices, target=target, name=name)


class SubjectRelease:
    """The API of a release built with one split per subject (GTEA71, GTEA Gaze+): build, sources, ids, names."""

    def __init__(self, name: str, builder_cls, subjects: tuple[str, ...], manual_dir: str):
        self.name, self._cls, self.subjects, self.default_manual_dir = name, builder_cls, subjects, manual_dir

    def build(self, *, manual_dir=None, data_dir="data/tfds", config: str = "rgb_flow", extract_dir=None):
        """Builds <name>/<config> from the release in `manual_dir` into `data_dir` (no-op if already built)."""
        builder = self._cls(config=config, data_dir=str(data_dir), extract_dir=extract_dir)
        return build(builder, manual_dir or self.default_manual_dir)

    def _prepared(self, data_dir, config: str):
        if config not in CONFIGS:
            raise ValueError(f"unknown {self.name} config {config!r}: expected one of {', '.join(CONFIGS)}")
        builder = self._cls(config=config, data_dir=str(data_dir))
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"{self.name}/{config} is not built in {Path(data_dir).resolve()}: run "
                f"`{rebuild_command(self.name, config, data_dir)}`"
            )
        return builder

    def load_source(
        self, split: str, *, data_dir="data/tfds", config: str = "rgb_flow", target: str = "action"
    ) -> ClipSource:
        """Examples of `split`: subjects joined with '+' (e.g. 'S1+S3+S4')."""
        if target != "action":
            raise ValueError(f"{self.name} has one label, the action: target must be 'action', got {target!r}")
        return open_source(self._prepared(data_dir, config), split)

    def clip_ids(self, split: str, *, data_dir="data/tfds", config: str = "rgb_flow") -> list[str]:
        """Clip ids of `split` in source order (no clip record is read)."""
        return clip_index.clip_ids(self._prepared(data_dir, config), data_dir, split)

    def class_names(self, *, data_dir="data/tfds", config: str = "rgb_flow", target: str = "action") -> list[str]:
        """The build's class names (label = position)."""
        del target
        return json.loads((Path(self._prepared(data_dir, config).data_dir) / CLASSES_FILE).read_text())["label"]
