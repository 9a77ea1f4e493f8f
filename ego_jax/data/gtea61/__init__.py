"""tfds builder for the GTEA61 release (course PNG layout and the authors JPEG layout)."""

from pathlib import Path

from ego_jax.data import clip_index, release
from ego_jax.data.clip_source import ClipSource, DamagedBuildError, Frames
from ego_jax.data.gtea61.builder import CONFIGS, Gtea61, Gtea61Config
from ego_jax.data.gtea61.classes import CLASSES, NUM_CLASSES
from ego_jax.data.gtea61.layout import MODALITIES
from ego_jax.data.manual_dir import (  # the layout errors of every release's manual folder, gtea61's too
    CorruptFrameError,
    FrameCountError,
    FrameFormatError,
    LayoutError,
    ManualDirError,
    MissingModalityError,
    UnknownClassError,
)

DEFAULT_DATA_DIR = "data/tfds"
DEFAULT_MANUAL_DIR = "data/manual/GTEA61"


def build(*, manual_dir=DEFAULT_MANUAL_DIR, data_dir=DEFAULT_DATA_DIR, config: str = "all") -> Gtea61:
    """Builds gtea61/<config> from the release in `manual_dir` into `data_dir` (no-op if already built)."""
    return release.build(Gtea61(config=config, data_dir=str(data_dir)), manual_dir)


def rebuild_command(config: str, data_dir) -> str:
    """The command that builds gtea61/<config> into `data_dir`."""
    return f"python scripts/build_dataset.py --manual_dir <GTEA61 folder> --data_dir {data_dir} --config {config}"


def older_builds(config: str, data_dir) -> list[Path]:
    """Version folders of gtea61/<config> in `data_dir` built by an earlier ego_jax (another layout)."""
    folder = Path(data_dir) / "gtea61" / config
    current = str(Gtea61.VERSION)
    return sorted(p.parent for p in folder.glob("*/dataset_info.json") if p.parent.name != current)


def load_source(split: str, *, data_dir=DEFAULT_DATA_DIR, config: str = "all") -> ClipSource:
    """Random-access source of examples for `split`, e.g. 'S1+S3+S4': dicts of label, subject, clip_id, num_frames
    (maps_filled with motion maps) and one `Frames` sequence of encoded frames per modality of `config`."""
    if config not in CONFIGS:
        raise ValueError(f"unknown gtea61 config {config!r}: expected one of {', '.join(CONFIGS)}")
    builder = Gtea61(config=config, data_dir=str(data_dir))
    if not builder.is_prepared():
        old = older_builds(config, data_dir)
        if old:
            raise FileNotFoundError(
                f"gtea61/{config} in {Path(data_dir).resolve()} was built by an earlier ego_jax (version "
                f"{', '.join(p.name for p in old)}, which stored a whole clip per record; this one reads version "
                f"{Gtea61.VERSION}, which reads only the frames a sample decodes): rebuild with: "
                f"{rebuild_command(config, data_dir)} (then delete {', '.join(map(str, old))})"
            )
        raise FileNotFoundError(
            f"gtea61/{config} is not built in {Path(data_dir).resolve()}: run `{rebuild_command(config, data_dir)}`"
        )
    return release.open_source(builder, split, rebuild=rebuild_command(config, data_dir))


def clip_ids(split: str, *, data_dir=DEFAULT_DATA_DIR, config: str = "all") -> list[str]:
    """Clip ids of `split` in source order, from the index written at build time (no clip record is read)."""
    if config not in CONFIGS or not Gtea61(config=config, data_dir=str(data_dir)).is_prepared():
        load_source(split, data_dir=data_dir, config=config)  # raises the error that says how to build it
    return clip_index.clip_ids(Gtea61(config=config, data_dir=str(data_dir)), data_dir, split)


__all__ = [
    "CLASSES",
    "CONFIGS",
    "ClipSource",
    "DamagedBuildError",
    "Frames",
    "DEFAULT_DATA_DIR",
    "DEFAULT_MANUAL_DIR",
    "MODALITIES",
    "NUM_CLASSES",
    "CorruptFrameError",
    "FrameCountError",
    "FrameFormatError",
    "Gtea61",
    "Gtea61Config",
    "LayoutError",
    "ManualDirError",
    "MissingModalityError",
    "UnknownClassError",
    "build",
    "clip_ids",
    "load_source",
    "older_builds",
    "rebuild_command",
]
