"""The clips a stage trains on (`train_clip_spec`: its stream's loader, MS targets on its head's grid), without
grain, tfds or TensorFlow (scripts/benchmark.py step shapes batches with it on an accelerator host)."""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.data.clip_spec import ClipSpec
from ego_jax.specs import DataSpec, RunSpec


def ms_grid(data: DataSpec, model: nnx.Module, stream: streams.Stream):
    """(h, w) of the MS head's output on `data`'s clips, or None for a model without `ms_head` (shape-only)."""
    if getattr(model, "ms_head", None) is None:
        return None
    shapes = data.clip_spec(stream.loader, train=True).shapes()
    batch = {key: jax.ShapeDtypeStruct((1, *shapes[key][0]), shapes[key][1]) for key in stream.inputs}
    out = nnx.eval_shape(lambda m, b: stream.forward(m, b, jnp.float32), model, batch)
    return tuple(out["ms"].shape[2:4])


def train_clip_spec(run: RunSpec, name: str, model: nnx.Module) -> ClipSpec:
    """The training clips of stage `name` (whose built `model` fixes the MS grid, if it has an MS head)."""
    spec = run.stage(name).model
    return run.data.clip_spec(
        spec.stream.loader, train=True, ms_grid=ms_grid(run.data, model, spec.stream), ms_target=spec.ms_target
    )
