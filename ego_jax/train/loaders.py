"""A run's data -> dataset sources and grain loaders (training, and evaluation by protocol).

The train loop and evaluation both read their data through here (so neither imports the other).
"""

import dataclasses
from collections.abc import Mapping

from flax import nnx

from ego_jax.data import datasets
from ego_jax.data.gtea61 import CLASSES
from ego_jax.data.pipeline import Loader, build_loader
from ego_jax.specs import DataSpec, RunSpec
from ego_jax.train import evaluate, sharding
from ego_jax.train.clips import train_clip_spec


def _missing(data: DataSpec, e: FileNotFoundError) -> FileNotFoundError:
    """`e` (a dataset build not found) with the commands that make `data`'s build."""
    release = datasets.release(data.name)
    build = (
        f"python scripts/build_dataset.py --dataset {release} --manual_dir {data.manual_dir} "
        f"--data_dir {data.data_dir} --config {data.builder_config}"
    )
    how = (
        f"python scripts/make_synthetic.py --root {data.manual_dir} --preset small && {build}"
        if data.name == "synthetic"
        else f"put the {data.name} release in {data.manual_dir}, then {build}"
    )
    return FileNotFoundError(f"{e}\nFor this config: {how}")


def load_split(data: DataSpec, split: str):
    """`data`'s split of its dataset as a random-access source; a missing build names the commands that make it."""
    target = {} if datasets.release(data.name) == "gtea61" else dict(target=data.target)
    try:
        return datasets.module(data.name).load_source(
            split, data_dir=data.data_dir, config=data.builder_config, **target
        )
    except FileNotFoundError as e:
        raise _missing(data, e) from e


def clip_ids(data: DataSpec, split: str) -> list[str]:
    """Clip ids of `data`'s split in source order (its dataset's clip index: no clip record is read)."""
    try:
        return datasets.module(data.name).clip_ids(split, data_dir=data.data_dir, config=data.builder_config)
    except FileNotFoundError as e:
        raise _missing(data, e) from e


def class_names(run: RunSpec) -> list[str]:
    """Names of the run's classes (label = position): its dataset's (GTEA61's list; a video release's or your
    folder's build's classes.json), then 'k'..'C-1' for the classes a partial release lacks (a GTEA download with
    fewer than 71 classes numbers its own from 0); '0'..'C-1' where the build has more than run.num_classes."""
    d = run.data
    if datasets.release(d.name) == "gtea61":
        names = list(CLASSES)
    else:
        try:
            names = datasets.module(d.name).class_names(data_dir=d.data_dir, config=d.builder_config, target=d.target)
        except FileNotFoundError as e:
            if not run.num_classes:
                raise _missing(d, e) from e
            names = []
    if run.num_classes and len(names) > run.num_classes:
        return [str(i) for i in range(run.num_classes)]
    return list(names) + [str(i) for i in range(len(names), run.num_classes)]


def resolve_classes(run: RunSpec) -> RunSpec:
    """The run with num_classes its dataset build's class count where the config leaves it to the build (0: your
    folder, data=folder); where a run starts (train, evaluate, predict), before anything builds a model."""
    return run if run.num_classes else dataclasses.replace(run, num_classes=len(class_names(run)))


def load_sources(data: DataSpec):
    """-> (train source, test source) of `data` (see load_split)."""
    return load_split(data, data.train_split), load_split(data, data.test_split)


def test_source(run: RunSpec, split: str | None = None):
    """The run's test split (or `split`) as a random-access source; a clear error if not built."""
    return load_split(run.data, split or run.data.test_split)


def train_loader(run: RunSpec, name: str, model: nnx.Module, source, *, start_step: int, mesh) -> Loader:
    """Stage `name`'s training batches (its stream's loader, MS targets when `model` has an MS head)."""
    return build_loader(
        source,
        train_clip_spec(run, name, model),
        global_batch_size=run.batch_size,
        seed=run.seed,
        start_step=start_step,
        num_epochs=run.stage(name).epochs,
        worker_count=run.data.worker_count,
        sharding=sharding.batch_sharding(mesh),
    )


def eval_loader(
    run: RunSpec,
    source,
    protocol: str,
    *,
    mesh,
    kinds: Mapping[str, str] | None = None,
    fusion_stacks: int = 10,
    keep_workers: bool = False,
) -> Loader:
    """The run's padded one-epoch loader of `source` for evaluation `protocol` (and its roles' stream `kinds`,
    evaluate.role_kinds), batches sharded over mesh's 'data' axis.

    keep_workers: for an evaluation repeated during training (see pipeline.Loader; close() it at the end)."""
    spec = run.data.clip_spec(
        evaluate.protocol_loader(protocol, kinds),
        train=False,
        eval_stacks=evaluate.flow_stacks(protocol, run.data.flow_eval_stacks, fusion_stacks),
    )
    return build_loader(
        source,
        spec,
        global_batch_size=run.eval_batch_size,
        seed=run.seed,
        num_epochs=1,
        worker_count=run.data.worker_count,
        sharding=sharding.batch_sharding(mesh),
        keep_workers=keep_workers,
    )
