"""A run's data -> GTEA61 sources and grain loaders.

The train loop and evaluation both read their data through here (so neither imports the other).
"""
from flax import nnx

from ego_jax.data import datasets
from ego_jax.data.gtea61 import CLASSES
from ego_jax.data.pipeline import Loader, build_loader
from ego_jax.specs import DataSpec, RunSpec
from ego_jax.train import sharding
from ego_jax.train.clips import train_clip_spec


def load_split(data: DataSpec, split: str):
    """`data`'s split of its dataset as a random-access source; a missing build names the commands that make it."""
    release = datasets.release(data.name)
    try:
        if release == "gtea61":
            return datasets.module(data.name).load_source(split, data_dir=data.data_dir, config=data.builder_config)
        return datasets.module(data.name).load_source(split, data_dir=data.data_dir, config=data.builder_config,
                                                      target=data.target)
    except FileNotFoundError as e:
        build = (f"python scripts/build_dataset.py --dataset {release} --manual_dir {data.manual_dir} "
                 f"--data_dir {data.data_dir} --config {data.builder_config}")
        how = (f"python scripts/make_synthetic.py --root {data.manual_dir} --preset small && {build}"
               if data.name == "synthetic" else f"put the {data.name} release in {data.manual_dir}, then {build}")
        raise FileNotFoundError(f"{e}\nFor this config: {how}") from e


def class_names(num_classes: int) -> list[str]:
    """Names of num_classes classes: GTEA61's for its 61, else '0'..'C-1'."""
    return list(CLASSES) if len(CLASSES) == num_classes else [str(i) for i in range(num_classes)]


def load_sources(data: DataSpec):
    """-> (train source, test source) of `data` (see load_split)."""
    return load_split(data, data.train_split), load_split(data, data.test_split)


def train_loader(run: RunSpec, name: str, model: nnx.Module, source, *, start_step: int, mesh) -> Loader:
    """Stage `name`'s training batches (its stream's loader, MS targets when `model` has an MS head)."""
    return build_loader(source, train_clip_spec(run, name, model), global_batch_size=run.batch_size, seed=run.seed,
                        start_step=start_step, num_epochs=run.stage(name).epochs,
                        worker_count=run.data.worker_count, sharding=sharding.batch_sharding(mesh))


def eval_loader(run: RunSpec, source, loader: str, *, eval_stacks: int, mesh, keep_workers: bool = False) -> Loader:
    """The run's padded one-epoch loader of pipeline kind `loader`, batches sharded over mesh's 'data' axis.

    keep_workers: for an evaluation repeated during training (see pipeline.Loader; close() it at the end)."""
    return build_loader(source, run.data.clip_spec(loader, train=False, eval_stacks=eval_stacks),
                        global_batch_size=run.eval_batch_size, seed=run.seed, num_epochs=1,
                        worker_count=run.data.worker_count, sharding=sharding.batch_sharding(mesh),
                        keep_workers=keep_workers)
