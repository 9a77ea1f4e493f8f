"""orbax checkpoints of a stage: items 'state' (whole model nnx.State, BN stats included), 'opt_state', 'meta'.

StageCheckpoints saves and resumes a stage; restore_state reads a stage's latest model state for init_from
and evaluation, whatever device count wrote it.
"""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ego_jax.train.sharding import make_mesh, replicated

ITEMS = ("state", "opt_state", "meta")


def model_tree(model: nnx.Module) -> dict:
    """Whole model state as a nested dict of arrays; PRNG keys as raw key data (orbax stores plain arrays)."""
    return jax.tree.map(_unwrap_key, nnx.state(model).to_pure_dict())


def load_model_tree(model: nnx.Module, tree: dict, source: str = "checkpoint") -> None:
    """Inverse of model_tree: write `tree` (matched by path) into `model`; other paths or shapes: a clear error."""
    state = nnx.state(model)
    like = state.to_pure_dict()
    # By '/'-joined path: orbax restores list indices (nnx.List) as string keys.
    got = {_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    want = {_path(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(jax.tree.map(_unwrap_key, like))[0]}
    if want != {k: x.shape for k, x in got.items()}:
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        shapes = [f"{k} {got[k].shape} (model {want[k]})" for k in sorted(want.keys() & got.keys())
                  if got[k].shape != want[k]]
        raise ValueError(f"{source} does not fit the model: missing {missing[:4]}, unexpected {extra[:4]}, "
                         f"other shapes {shapes[:4]}; was it written with a different config?")
    state.replace_by_pure_dict(jax.tree_util.tree_map_with_path(lambda p, x: _wrap_key(x, got[_path(p)]), like))
    nnx.update(model, state)


def _path(keys) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)


def _unwrap_key(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _wrap_key(like, x):
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
    return x


def _abstract(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


class StageCheckpoints:
    """CheckpointManager for W/<stage>/checkpoints; saves are synchronous so the next step may donate buffers."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=ITEMS,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                                 create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model: nnx.Module, opt_state, meta: dict) -> None:
        """Write checkpoint `step` (overwrites nothing: a step already saved is skipped)."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(model_tree(model)),
            opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, model: nnx.Module, opt_state, sharding) -> tuple:
        """Load checkpoint `step` into `model`; -> (opt_state shaped like the given one, meta dict)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(model_tree(model), sharding)),
            opt_state=ocp.args.StandardRestore(_abstract(opt_state, sharding)),
            meta=ocp.args.JsonRestore()))
        load_model_tree(model, out["state"])
        return out["opt_state"], out["meta"]

    def close(self) -> None:
        self.manager.close()


def restore_state(directory: str) -> tuple[dict, int]:
    """Latest 'state' item of a checkpoint directory -> (nested dict of arrays, its step).

    The target is the checkpoint's own metadata, replicated over this process's devices: the run that wrote
    it may have used a device count that does not exist here. For init_from and evaluation (resume: StageCheckpoints).
    """
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory} (no such directory)")
    manager = ocp.CheckpointManager(directory, item_names=ITEMS)
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        saved = ocp.StandardCheckpointer().metadata(os.path.join(directory, str(step), "state")).item_metadata
        target = _abstract(saved, replicated(make_mesh()))
        tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    finally:
        manager.close()
    return tree, int(step)


def load_final_state(directory: str) -> dict[str, np.ndarray]:
    """Latest 'state' of a checkpoint directory -> flat {'/'-joined nnx path: array} (for init_from)."""
    flat = jax.tree_util.tree_flatten_with_path(restore_state(directory)[0])[0]
    return {_path(path): np.asarray(v) for path, v in flat}
