"""A run's data -> dataset sources and grain loaders (training, and evaluation by protocol).

The train loop and evaluation both read their data through here (so neither imports the other).
"""
from collections.abc import Mapping

from flax import nnx

from ego_jax.data import datasets
from ego_jax.data.gtea61 import CLASSES
from ego_jax.data.pipeline import Loader, build_loader
from ego_jax.specs import DataSpec, RunSpec
from ego_jax.train import evaluate, sharding
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


def test_source(run: RunSpec, split: str | None = None):
    """The run's test split (or `split`) as a random-access source; a clear error if not built."""
    return load_split(run.data, split or run.data.test_split)


def train_loader(run: RunSpec, name: str, model: nnx.Module, source, *, start_step: int, mesh) -> Loader:
    """Stage `name`'s training batches (its stream's loader, MS targets when `model` has an MS head)."""
    return build_loader(source, train_clip_spec(run, name, model), global_batch_size=run.batch_size, seed=run.seed,
                        start_step=start_step, num_epochs=run.stage(name).epochs,
                        worker_count=run.data.worker_count, sharding=sharding.batch_sharding(mesh))


def eval_loader(run: RunSpec, source, protocol: str, *, mesh, kinds: Mapping[str, str] | None = None,
                fusion_stacks: int = 10, keep_workers: bool = False) -> Loader:
    """The run's padded one-epoch loader of `source` for evaluation `protocol` (and its roles' stream `kinds`,
    evaluate.role_kinds), batches sharded over mesh's 'data' axis.

    keep_workers: for an evaluation repeated during training (see pipeline.Loader; close() it at the end)."""
    spec = run.data.clip_spec(evaluate.protocol_loader(protocol, kinds), train=False,
                              eval_stacks=evaluate.flow_stacks(protocol, run.data.flow_eval_stacks, fusion_stacks))
    return build_loader(source, spec, global_batch_size=run.eval_batch_size, seed=run.seed, num_epochs=1,
                        worker_count=run.data.worker_count, sharding=sharding.batch_sharding(mesh),
                        keep_workers=keep_workers)
