"""EGTEA Gaze+ (Li, Liu & Rehg, ECCV 2018): 106 action classes (19 verbs, 51 nouns), 32 participants, 3 splits.

  python scripts/build_dataset.py --dataset egtea --manual_dir data/manual/EGTEA --data_dir data/tfds

Splits of a build: one per participant (P01...) and the protocol splits train1..3 / test1..3 of the release's
split files; val{k} / fit{k} split train{k} for hyperparameter selection (ego_jax's choice: every 5th clip of
train{k} in split-file order is validation), so test{k} is never read while choosing. target: 'action' (the
default, the Ego-RNN/LSTA papers' label), 'verb' or 'noun' (LSTA's verb/noun evaluation).
Published Ego-RNN two-stream top-1: 62.2 / 61.5 / 58.63 on splits 1 / 2 / 3, mean 60.76 (the paper's Table;
per-split numbers as listed for arXiv 1807.11794 on wizwand.com; the mean also in MichiganCOG/Gaze-Attention's
README); LSTA two-stream 61.86 (same README).
"""

import json
from pathlib import Path

from ego_jax.data import clip_index, release
from ego_jax.data.clip_source import ClipSource
from ego_jax.data.egtea.annotations import COUNTS, SPLITS
from ego_jax.data.egtea.builder import SPLITS_FILE, Egtea

NAME = "egtea"
NUM_CLASSES = COUNTS["action"]
CONFIGS = release.CONFIGS
DEFAULT_CONFIG = "rgb_flow"
DEFAULT_MANUAL_DIR = "data/manual/EGTEA"
TARGETS = {"action": "label", "verb": "verb", "noun": "noun"}
VALIDATION_EVERY = 5  # val{k}: every 5th clip of train{k}
PUBLISHED = {"two_stream": {1: 62.2, 2: 61.5, 3: 58.63, "mean": 60.76}}


def build(
    *, manual_dir=DEFAULT_MANUAL_DIR, data_dir="data/tfds", config: str = DEFAULT_CONFIG, extract_dir=None
) -> Egtea:
    """Builds egtea/<config> from the release in `manual_dir` into `data_dir` (no-op if already built)."""
    return release.build(Egtea(config=config, data_dir=str(data_dir), extract_dir=extract_dir), manual_dir)


def _prepared(data_dir, config: str) -> Egtea:
    if config not in CONFIGS:
        raise ValueError(f"unknown egtea config {config!r}: expected one of {', '.join(CONFIGS)}")
    builder = Egtea(config=config, data_dir=str(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"egtea/{config} is not built in {Path(data_dir).resolve()}: run "
            f"`{release.rebuild_command(NAME, config, data_dir)}`"
        )
    return builder


def protocol_splits(builder: Egtea) -> dict[str, list[str]]:
    """{train1, test1, val1, fit1, ...: clip ids} of a prepared build."""
    splits = json.loads((Path(builder.data_dir) / SPLITS_FILE).read_text())
    for k in SPLITS:
        train = splits[f"train{k}"]
        splits[f"val{k}"] = train[::VALIDATION_EVERY]
        splits[f"fit{k}"] = [c for i, c in enumerate(train) if i % VALIDATION_EVERY]
    return splits


def load_source(
    split: str, *, data_dir="data/tfds", config: str = DEFAULT_CONFIG, target: str = "action"
) -> ClipSource:
    """Examples of `split` ('train1', 'test1', 'val1', 'fit1', or participants 'P01+P02'); label = `target`."""
    if target not in TARGETS:
        raise ValueError(f"unknown egtea target {target!r}: expected one of {', '.join(TARGETS)}")
    builder = _prepared(data_dir, config)
    return release.open_source(builder, split, named=protocol_splits(builder), target=TARGETS[target])


def clip_ids(split: str, *, data_dir="data/tfds", config: str = DEFAULT_CONFIG) -> list[str]:
    """Clip ids of `split` in source order (no clip record is read)."""
    builder = _prepared(data_dir, config)
    named = protocol_splits(builder)
    return list(named[split]) if split in named else clip_index.clip_ids(builder, data_dir, split)


def class_names(*, data_dir="data/tfds", config: str = DEFAULT_CONFIG, target: str = "action") -> list[str]:
    """The build's class names of `target` (from the release's index files)."""
    builder = _prepared(data_dir, config)
    return json.loads((Path(builder.data_dir) / release.CLASSES_FILE).read_text())[TARGETS[target]]
