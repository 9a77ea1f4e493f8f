"""Jitted train step over a 'data' mesh; gradients only for a stage's trainable parameters.

Evaluation (periodic and final) is ego_jax.train.evaluate's protocol step, on the model at the train state.

The model is split once per stage into
  params  trainable nnx.Params (differentiated, optimised),
  stats   BatchStats of the BatchNorms that run in training mode (updated by the forward pass),
  rngs    dropout RNG state,
  frozen  everything else (frozen params and frozen BN statistics): an input, never an output,
so frozen values cannot change and XLA never builds the backward pass of a frozen backbone.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from ego_jax import streams
from ego_jax.train import sharding

# (model, batch) -> (scalar loss, dict of scalar metrics); batch holds the loader's uint8 arrays.
LossFn = Callable[[nnx.Module, dict], tuple[jax.Array, dict]]


@struct.dataclass
class TrainState:
    """What a train step carries from step to step (frozen state is passed beside it)."""

    step: jax.Array
    params: nnx.State
    stats: nnx.State
    rngs: nnx.State
    opt_state: optax.OptState


def split_model(model: nnx.Module, trainable: nnx.filterlib.Filter, updated_stats: nnx.filterlib.Filter):
    """model -> (graphdef, params, stats, rngs, frozen); see the module docstring."""
    return nnx.split(model, nnx.All(nnx.Param, trainable), nnx.All(nnx.BatchStat, updated_stats), nnx.RngState, ...)


def init_state(
    model: nnx.Module,
    trainable,
    updated_stats,
    tx: optax.GradientTransformation,
    mesh,
    *,
    step: int = 0,
    opt_state=None,
):
    """model -> (graphdef, TrainState, frozen), replicated over `mesh` (all processes); opt_state default tx.init."""
    graphdef, params, stats, rngs, frozen = split_model(model, trainable, updated_stats)
    opt_state = tx.init(params) if opt_state is None else opt_state
    state = TrainState(jnp.asarray(step, jnp.int32), params, stats, rngs, opt_state)
    return graphdef, sharding.replicate(state, mesh), sharding.replicate(frozen, mesh)


def default_compiler_options(backend: str | None = None, kind: str | None = None) -> dict:
    """XLA options of the train step of a `kind` stream on `backend` (default: jax's), chosen by measurement.

    CPU (jaxlib 0.10): XLA's own defaults for the kinds whose stream entry says cpu_ynnpack (the flow ResNet); for
    every other kind, convolutions run through XLA's Eigen kernels instead of its default YNNPACK fusions (RGB
    stage 1 at 224 px, batch 2, 7 frames: 0.74x the step time). Other backends: none (the options are CPU-only).
    """
    if (backend or jax.default_backend()) != "cpu" or (kind is not None and streams.get(kind).cpu_ynnpack):
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(spec: str, backend: str | None = None, kind: str | None = None) -> dict:
    """config.compiler_options -> XLA options: 'auto' -> default_compiler_options(backend, kind); '' -> none;
    'name=value;name=value' -> those (values as XLA parses them; true/false in any case are booleans, e.g.
    'xla_cpu_multi_thread_eigen=false')."""
    if spec == "auto":
        return default_compiler_options(backend, kind)
    options = {}
    for item in filter(None, spec.split(";")):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name.startswith("xla_"):
            raise ValueError(
                f"compiler_options item {item!r}: expected xla_<option>=<value> items separated by ';', "
                "'auto' (the backend's measured defaults) or '' (XLA's own defaults)"
            )
        # XLA parses a string bool only as 'True'/'False'; a Python bool reaches it whatever the spelling.
        options[name] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def make_train_step(
    graphdef, loss_fn: LossFn, tx: optax.GradientTransformation, mesh, *, compiler_options: dict | None = None
):
    """-> jitted (state, frozen, batch) -> (state, metrics); state donated, batch sharded on 'data'.

    compiler_options: XLA options for this step's compilation (see `compiler_options`); None = XLA's defaults.
    """

    def train_step(state: TrainState, frozen: nnx.State, batch: dict):
        def loss_of(params):
            # copy=True: fresh Variables at this trace level, so BatchNorm may write its statistics.
            model = nnx.merge(graphdef, params, state.stats, state.rngs, frozen, copy=True)
            loss, metrics = loss_fn(model, batch)
            # Only the stats this stage updates are outputs; the others stay frozen inputs.
            stats = _like(nnx.state(model, nnx.BatchStat), state.stats)
            return loss, (metrics, stats, nnx.state(model, nnx.RngState))

        (loss, (metrics, stats, rngs)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A finite loss can still come with an update that overflows; both must hold for a checkpoint to be good.
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(params)]))
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), finite=finite)
        return TrainState(state.step + 1, params, stats, rngs, opt_state), metrics

    rep = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(rep, rep, sharding.batch_sharding(mesh)),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
        compiler_options=compiler_options or None,
    )


def _like(full: nnx.State, subset: nnx.State) -> nnx.State:
    """The entries of `full` at the paths of `subset`."""
    flat = dict(nnx.to_flat_state(full))
    return nnx.from_flat_state([(path, flat[path]) for path, _ in nnx.to_flat_state(subset)])
