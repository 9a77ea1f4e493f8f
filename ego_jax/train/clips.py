"""config.data -> the `ClipSpec` a stage's loader yields, and its MS-target grid (no grain, tfds or TensorFlow)."""
import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.data.clip_spec import ClipSpec


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
