"""config.data -> GTEA61 sources and grain loaders: the one place a config becomes loader arguments.

The train loop and evaluation both read their data through here (so neither imports the other).
"""
from flax import nnx

from ego_jax import streams
from ego_jax.data import datasets
from ego_jax.data.gtea61 import CLASSES
from ego_jax.data.pipeline import Loader, build_loader
from ego_jax.train import recipes, sharding
from ego_jax.train.clips import clip_spec, ms_grid


def load_split(config, split: str):
    """config.data's split of its dataset as a random-access source; a missing build names the commands that make it."""
    d = config.data
    release = datasets.release(d.name)
    try:
        if release == "gtea61":
            return datasets.module(d.name).load_source(split, data_dir=d.data_dir, config=d.builder_config)
        return datasets.module(d.name).load_source(split, data_dir=d.data_dir, config=d.builder_config,
                                                   target=d.get("target", "action"))
    except FileNotFoundError as e:
        build = (f"python scripts/build_dataset.py --dataset {release} --manual_dir {d.manual_dir} "
                 f"--data_dir {d.data_dir} --config {d.builder_config}")
        how = (f"python scripts/make_synthetic.py --root {d.manual_dir} --preset small && {build}"
               if d.name == "synthetic" else f"put the {d.name} release in {d.manual_dir}, then {build}")
        raise FileNotFoundError(f"{e}\nFor this config: {how}") from e


def class_names(config) -> list[str]:
    """Names of the config's num_classes classes: GTEA61's for its 61, else '0'..'C-1'."""
    return list(CLASSES) if len(CLASSES) == config.num_classes else [str(i) for i in range(config.num_classes)]


def load_sources(config):
    """-> (train source, test source) of config.data (see load_split)."""
    return load_split(config, config.data.train_split), load_split(config, config.data.test_split)


def train_loader(config, stage, model: nnx.Module, source, *, start_step: int, mesh) -> Loader:
    """The stage's training batches (its stream's loader kind, MS targets when `model` has an MS head)."""
    kind = stage.model.kind
    spec = clip_spec(config, streams.get(kind).loader, train=True, ms_grid=ms_grid(config, model, kind),
                     ms_head=recipes.ms_kind(stage))
    return build_loader(source, spec, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step,
                        num_epochs=stage.epochs, worker_count=config.data.worker_count,
                        sharding=sharding.batch_sharding(mesh))


def eval_loader(config, source, loader: str, *, eval_stacks: int, mesh, keep_workers: bool = False) -> Loader:
    """config.data's padded one-epoch loader of pipeline kind `loader`, batches sharded over mesh's 'data' axis.

    keep_workers: for an evaluation repeated during training (see pipeline.Loader; close() it at the end)."""
    return build_loader(source, clip_spec(config, loader, train=False, eval_stacks=eval_stacks),
                        global_batch_size=config.eval_batch_size, seed=config.seed, num_epochs=1,
                        worker_count=config.data.worker_count, sharding=sharding.batch_sharding(mesh),
                        keep_workers=keep_workers)
