"""tfds builder for the GTEA61 release (course PNG layout and the authors JPEG layout)."""
from pathlib import Path

import tensorflow_datasets as tfds

from ego_jax.data.gtea61 import clip_index
from ego_jax.data.gtea61.builder import CONFIGS, Gtea61, Gtea61Config
from ego_jax.data.gtea61.classes import CLASSES, NUM_CLASSES
from ego_jax.data.gtea61.layout import (
    MODALITIES,
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
    builder = Gtea61(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    clip_index.write_index(builder, data_dir)
    return builder


def clip_ids(split: str, *, data_dir=DEFAULT_DATA_DIR, config: str = "all") -> list[str]:
    """Clip ids of `split` in source order, from the index written at build time (no example is read)."""
    return clip_index.clip_ids(_prepared(data_dir, config), data_dir, split)


def _prepared(data_dir, config: str) -> Gtea61:
    if config not in CONFIGS:
        raise ValueError(f"unknown gtea61 config {config!r}: expected one of {', '.join(CONFIGS)}")
    builder = Gtea61(config=config, data_dir=str(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"gtea61/{config} is not built in {Path(data_dir).resolve()}: run "
            f"`python scripts/build_dataset.py --manual_dir <GTEA61 folder> --data_dir {data_dir} --config {config}`"
        )
    return builder


def load_source(split: str, *, data_dir=DEFAULT_DATA_DIR, config: str = "all"):
    """Random-access source of examples (dicts, see Gtea61._info) for `split`, e.g. 'S1+S3+S4'."""
    _prepared(data_dir, config)
    return tfds.data_source(f"gtea61/{config}", split=split, data_dir=str(data_dir), download=False)


__all__ = [
    "CLASSES",
    "CONFIGS",
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
]
