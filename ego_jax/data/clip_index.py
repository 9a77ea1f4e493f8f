"""Clip ids of each split of a build in record order, indexed once in <built dataset>/clip_ids.json.

Finding a clip by id then reads one record instead of every example of the split; a protocol split defined by
clip ids (EGTEA's split files) becomes positions in the build. The index is written when the dataset is built
and, for a dataset built before the index existed, on first use.
"""

import json
from pathlib import Path

import tensorflow_datasets as tfds

INDEX = "clip_ids.json"


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def write_index(builder, data_dir) -> dict[str, list[str]]:
    """Read every split of a prepared builder in `data_dir` once -> {split: [clip ids]}, saved."""
    index = {}
    for split in builder.info.splits:
        source = tfds.data_source(
            f"{builder.name}/{builder.builder_config.name}", split=split, data_dir=str(data_dir), download=False
        )
        index[split] = [_text(source[i]["clip_id"]) for i in range(len(source))]
    (Path(builder.data_dir) / INDEX).write_text(json.dumps(index) + "\n")
    return index


def clip_ids(builder, data_dir, split: str) -> list[str]:
    """Clip ids of `split` ('S2', 'S1+S3') in the order of tfds.data_source(split); indexes on first use."""
    path = Path(builder.data_dir) / INDEX
    index = json.loads(path.read_text()) if path.exists() else write_index(builder, data_dir)
    unknown = [s for s in split.split("+") if s not in index]
    if unknown:
        raise ValueError(f"split {split!r}: no subject split {unknown} in the dataset (it has {sorted(index)})")
    return [clip for s in split.split("+") for clip in index[s]]
