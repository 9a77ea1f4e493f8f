"""One stage of a recipe made ready to train: model, modes, optimiser, train state and the jitted train step.

The train loop (ego_jax.train.loop) and the step benchmark (scripts/benchmark.py step) both build a stage
here, so the step that is timed is the step that trains. Nothing here reads data or writes logs.
"""
import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from ego_jax.train import recipes
from ego_jax.train.optim import make_optimizer
from ego_jax.train.step import TrainState, compiler_options, init_state, make_train_step, split_model

# (model, tx, params) -> (start step, opt_state or None): loads the stage's starting point into `model`
# (initialisation or a checkpoint); `params` is the trainable subset, for the optimiser state's structure.
InitFn = Callable[..., tuple[int, object]]


@dataclasses.dataclass
class Stage:
    """A stage ready to train: `train_step(state, frozen, batch) -> (state, metrics)`."""

    model: nnx.Module
    graphdef: object
    state: TrainState
    frozen: nnx.State
    train_step: Callable
    schedules: dict
    start: int


def build(config, name: str, mesh, *, steps_per_epoch: int, init: InitFn | None = None) -> Stage:
    """config.stages[name] -> Stage over `mesh` with the stage's trainable set, BN/dropout modes and optimiser.

    init: see InitFn; None keeps the fresh random initialisation and starts at step 0.
    """
    stage = config.stages[name]
    dtype = jnp.dtype(config.dtype)
    model = recipes.build_model(stage.model, num_classes=config.num_classes, dtype=dtype, seed=config.seed,
                                crop=config.data.crop)
    trainable = recipes.param_filter(stage.trainable, model)
    updated_stats = recipes.set_modes(model, bn_train=stage.bn_train, dropout_train=stage.dropout_train)
    params = split_model(model, trainable, updated_stats)[1]
    tx, schedules = make_optimizer(stage.optimizer, params, num_epochs=stage.epochs,
                                   steps_per_epoch=steps_per_epoch, quirk=config.schedule_quirk)
    start, opt_state = init(model, tx, params) if init else (0, None)
    graphdef, state, frozen = init_state(model, trainable, updated_stats, tx, mesh, step=start, opt_state=opt_state)
    train_step = make_train_step(graphdef, recipes.make_loss_fn(stage, dtype), tx, mesh,
                                 compiler_options=compiler_options(config.compiler_options, kind=stage.model.kind))
    return Stage(model, graphdef, state, frozen, train_step, schedules, start)

