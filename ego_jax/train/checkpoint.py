"""orbax checkpoints of a stage: items 'state' (whole model nnx.State, BN stats included), 'opt_state', 'meta'."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

ITEMS = ("state", "opt_state", "meta")


def model_tree(model: nnx.Module) -> dict:
    """Whole model state as a nested dict of arrays; PRNG keys as raw key data (orbax stores plain arrays)."""
    return jax.tree.map(_unwrap_key, nnx.state(model).to_pure_dict())


def load_model_tree(model: nnx.Module, tree: dict) -> None:
    """Inverse of model_tree: write `tree` into `model` (same structure)."""
    state = nnx.state(model)
    like = state.to_pure_dict()
    state.replace_by_pure_dict(jax.tree.map(_wrap_key, like, tree))
    nnx.update(model, state)


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


def load_final_state(directory: str) -> dict[str, np.ndarray]:
    """Latest 'state' of a checkpoint directory -> flat {'/'-joined nnx path: array} (for init_from).

    Restored onto one local device: the run that wrote it may have used devices this process does not have.
    """
    directory = os.path.abspath(directory)
    manager = ocp.CheckpointManager(directory, item_names=ITEMS)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    saved = ocp.StandardCheckpointer().metadata(os.path.join(directory, str(step), "state")).item_metadata
    target = _abstract(saved, jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    manager.close()
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in flat}
