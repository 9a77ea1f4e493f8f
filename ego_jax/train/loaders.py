"""config.data -> GTEA61 sources and grain loaders: the one place a config becomes loader arguments.

The train loop and evaluation both read their data through here (so neither imports the other).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.data.gtea61 import load_source
from ego_jax.data.pipeline import ClipSpec, Loader, build_loader
from ego_jax.train import recipes, sharding


def load_split(config, split: str):
    """config.data's gtea61 split as a random-access source; a missing build names the commands that make it."""
    d = config.data
    try:
        return load_source(split, data_dir=d.data_dir, config=d.builder_config)
    except FileNotFoundError as e:
        build = f"python scripts/build_dataset.py --manual_dir {d.manual_dir} --data_dir {d.data_dir}"
        how = (f"python scripts/make_synthetic.py --root {d.manual_dir} --preset small && {build}"
               if d.name == "synthetic" else f"put the GTEA61 release in {d.manual_dir}, then {build}")
        raise FileNotFoundError(f"{e}\nFor this config: {how}") from e


def load_sources(config):
    """-> (train source, test source) of config.data (see load_split)."""
    return load_split(config, config.data.train_split), load_split(config, config.data.test_split)


def clip_spec(config, loader: str, *, train: bool, ms_grid=None, ms_head: str | None = None,
              eval_stacks: int = 1) -> ClipSpec:
    """config.data's clips for a loader of pipeline kind `loader`.

    ms_grid (h, w): also make motion-map targets on that grid, binarised at config.data.ms_threshold for an MS
    classification head (ms_head 'cls'), moving fractions otherwise. eval_stacks: flow stacks per eval clip.
    """
    d = config.data
    return ClipSpec(loader, train, frames=d.frames, stack=d.stack, crop=d.crop, resize=d.resize,
                    ms_grid=None if ms_grid is None else tuple(ms_grid),
                    ms_threshold=d.ms_threshold if ms_grid and ms_head == "cls" else None,
                    eval_stacks=eval_stacks, method=d.resize_method, rgb_endpoint=d.rgb_endpoint)


def ms_grid(config, model: nnx.Module, kind: str):
    """(h, w) of the MS head's output on config.data's clips, or None for a model without `ms_head` (shape-only)."""
    if getattr(model, "ms_head", None) is None:
        return None
    stream = streams.get(kind)
    shapes = clip_spec(config, stream.loader, train=True).shapes()
    batch = {key: jax.ShapeDtypeStruct((1, *shapes[key][0]), shapes[key][1]) for key in stream.inputs}
    out = nnx.eval_shape(lambda m, b: stream.forward(m, b, jnp.float32), model, batch)
    return tuple(out["ms"].shape[2:4])


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
