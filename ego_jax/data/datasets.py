"""The datasets ego_jax builds and their protocols: which split trains, tests and selects hyperparameters.

  name       classes  splits of a build            protocol splits k                    folds (paper's mean)
  gtea61     61       S1..S4                       test S_k, train the others (S2: fixed) 4 (leave one subject out)
  gtea71     71       S1..S4                       as gtea61                              4
  gtea_gaze  44       Ahmad, Alireza, ... (6)      test subject k, train the others       6
  egtea      106      P01..P32 + train/test{1,2,3} train{k} / test{k} (the release's files) 3
  synthetic  61       S1..S4 (a generated gtea61)  as gtea61                              4
  folder     yours    train, test                  train / test                           1
Validation (hyperparameter selection) stays inside each protocol split's training part: for subject datasets the
last training subject (S4 when S2 is tested, as the suites always did; S3 when S4 is tested), for EGTEA val{k}
(egtea/__init__.py), so the test part is never read while choosing. Sources: each dataset module's docstring.
"""

import dataclasses
import importlib

# folder (your own videos, ego_jax/data/folder): 0 = the build's class count, read where a run starts
# (ego_jax.train.loaders.resolve_classes).
NUM_CLASSES = {"gtea61": 61, "synthetic": 61, "gtea71": 71, "gtea_gaze": 44, "egtea": 106, "folder": 0}
SUBJECTS = {
    "gtea61": ("S1", "S2", "S3", "S4"),
    "synthetic": ("S1", "S2", "S3", "S4"),
    "gtea71": ("S1", "S2", "S3", "S4"),
    "gtea_gaze": ("Ahmad", "Alireza", "Carlos", "Rahul", "Shaghayegh", "Yin"),
}
DEFAULT_SPLIT = {"gtea61": 2, "synthetic": 2, "gtea71": 2, "gtea_gaze": 1, "egtea": 1}
BUILDER_CONFIG = {"gtea61": "all", "synthetic": "all"}  # the others: rgb_flow (no motion maps in their releases)
MANUAL_DIR = {
    "gtea61": "data/manual/GTEA61",
    "synthetic": "data/manual/synthetic",
    "gtea71": "data/manual/GTEA",
    "gtea_gaze": "data/manual/GTEA_Gaze_Plus",
    "egtea": "data/manual/EGTEA",
    "folder": "data/manual/folder",
}
NAMES = tuple(NUM_CLASSES)


def release(name: str) -> str:
    """The builder a dataset name reads: 'synthetic' is a generated gtea61 release."""
    check(name)
    return "gtea61" if name == "synthetic" else name


def module(name: str):
    """The dataset's package (ego_jax.data.gtea61, .egtea, ...): build, load_source, clip_ids."""
    return importlib.import_module(f"ego_jax.data.{release(name)}")


def check(name: str) -> None:
    if name not in NUM_CLASSES:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(NAMES)}")


def folds(name: str) -> tuple[int, ...]:
    """The protocol splits whose mean the papers report (1..number of subjects, or EGTEA's 3 splits)."""
    check(name)
    return {"egtea": (1, 2, 3), "folder": (1,)}.get(name) or tuple(range(1, len(SUBJECTS[name]) + 1))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One protocol split: train / test, and the training part divided into fit / val for selection."""

    split: int
    train: str
    test: str
    fit: str
    val: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def protocol(name: str, split: int = 0, val: str = "") -> Protocol:
    """Protocol split `split` (0: the dataset's default) of `name`; `val` overrides the validation subject."""
    split = split or DEFAULT_SPLIT.get(name, 1)
    if split not in folds(name):
        raise ValueError(f"{name} has protocol splits {folds(name)}, not {split}")
    if name == "folder":  # your own videos: its train and test split; no validation part of its own
        if val:
            raise ValueError(f"folder has one train / test split and no validation split; val={val!r} names none")
        return Protocol(split, "train", "test", "train", "")
    if name == "egtea":
        if val:
            raise ValueError(f"egtea validates on val{split} (a fifth of train{split}); val={val!r} names no split")
        return Protocol(split, f"train{split}", f"test{split}", f"fit{split}", f"val{split}")
    subjects = SUBJECTS[name]
    test = subjects[split - 1]
    train = [s for s in subjects if s != test]
    val = val or train[-1]
    if val not in train:
        raise ValueError(
            f"validation subject {val!r} must be a training subject of split {split} ({', '.join(train)})"
            f", never the test subject {test}"
        )
    return Protocol(split, "+".join(train), test, "+".join(s for s in train if s != val), val)
