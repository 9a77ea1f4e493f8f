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


def _missing(config, e: FileNotFoundError) -> FileNotFoundError:
    """`e` (a dataset build not found) with the commands that make config.data's build."""
    d = config.data
    release = datasets.release(d.name)
    build = (f"python scripts/build_dataset.py --dataset {release} --manual_dir {d.manual_dir} "
             f"--data_dir {d.data_dir} --config {d.builder_config}")
    how = (f"python scripts/make_synthetic.py --root {d.manual_dir} --preset small && {build}"
           if d.name == "synthetic" else f"put the {d.name} release in {d.manual_dir}, then {build}")
    return FileNotFoundError(f"{e}\nFor this config: {how}")


def load_split(config, split: str):
    """config.data's split of its dataset as a random-access source; a missing build names the commands that make it."""
    d = config.data
    try:
        if datasets.release(d.name) == "gtea61":
            return datasets.module(d.name).load_source(split, data_dir=d.data_dir, config=d.builder_config)
        return datasets.module(d.name).load_source(split, data_dir=d.data_dir, config=d.builder_config,
                                                   target=d.get("target", "action"))
    except FileNotFoundError as e:
        raise _missing(config, e) from e


def class_names(config) -> list[str]:
    """Names of the config's classes (label = position): its dataset's (GTEA61's list; a video release's or your
    folder's build's classes.json), or '0'..'C-1' where those are not config.num_classes names."""
    d = config.data
    if datasets.release(d.name) == "gtea61":
        names = list(CLASSES)
    else:
        try:
            names = datasets.module(d.name).class_names(data_dir=d.data_dir, config=d.builder_config,
                                                        target=d.get("target", "action"))
        except FileNotFoundError as e:
            if not config.num_classes:
                raise _missing(config, e) from e
            names = []
    if config.num_classes and len(names) != config.num_classes:
        return [str(i) for i in range(config.num_classes)]
    return list(names)


def resolve_classes(config) -> None:
    """Sets config.num_classes to its dataset build's class count where the config leaves it to the build (0: your
    folder, data=folder); where a run starts (train, evaluate), before anything builds a model."""
    if not config.num_classes:
        config.num_classes = len(class_names(config))


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
