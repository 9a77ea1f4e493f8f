"""Device mesh with a 'data' axis: batches sharded along it, model and optimiser state replicated."""

import functools

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
    """1-D mesh over `devices` (default: all, of every process) with axis 'data'."""
    # Auto axes: jit's in/out shardings decide the layout and XLA propagates it (jax's default is Explicit).
    return Mesh(
        device_order(jax.devices() if devices is None else list(devices)), ("data",), axis_types=(AxisType.Auto,)
    )


def device_order(devices) -> np.ndarray:
    """The devices in 'data' axis order: jax.make_mesh's (laid out for the interconnect), slice after slice on
    multi-slice TPU (which jax.make_mesh refuses; slices talk over the slower data-centre network).

    The order may interleave processes; each process's loader reads whichever rows its devices hold.
    """
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) > 1:
        return mesh_utils.create_hybrid_device_mesh((len(devices) // len(slices),), (len(slices),), devices)
    return jax.make_mesh((len(devices),), ("data",), devices=devices).devices


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data', other axes whole."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Arrays equal on every process (host or single-device) -> global arrays with a full copy on every device.

    Each goes through the host: across processes, device_put of a jax.Array (jax 0.10.2) builds a global array
    whose shards cannot be read back, and refuses typed PRNG keys, whose raw data moves and is wrapped under jit.
    """
    rep = replicated(mesh)

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(x))
            return jax.jit(wrap, out_shardings=rep)(jax.device_put(np.asarray(jax.random.key_data(x)), rep))
        return jax.device_put(np.asarray(x), rep)

    return jax.tree.map(put, tree)


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """Raise a clear error unless the global batch splits evenly over the 'data' axis."""
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(
            f"{what}={batch_size} is not divisible by the {n} devices of the 'data' mesh axis; "
            f"set --config.{what} to a multiple of {n} (e.g. {max(n, batch_size // n * n)})"
        )
