"""One stage of a recipe made ready to train: model, trainable filter, BN/dropout modes, initialisation, loss,
optimiser, train state and the jitted train step.

A stage (ego_jax.specs.StageSpec) is data: model (kind + kwargs), init_from {target: source}, trainable (path
regexes over nnx state paths), bn_train / dropout_train (path regexes over module paths), optimizer, epochs,
loss. Paths are '/'-joined nnx paths such as 'rgb/backbone/layer4/2/conv2/kernel'.
The train loop (ego_jax.train.loop) and the step benchmark (scripts/benchmark.py step) both build a stage
here, so the step that is timed is the step that trains. Nothing here reads data or writes logs.
"""

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ego_jax import streams
from ego_jax.convert.reference import reference_arrays
from ego_jax.convert.torchvision import load_imagenet
from ego_jax.models import action_loss, ms_loss
from ego_jax.specs import RunSpec, StageSpec
from ego_jax.train import checkpoint, paths
from ego_jax.train.optim import make_optimizer, matches
from ego_jax.train.step import TrainState, compiler_options, init_state, make_train_step, split_model

# (model, tx, params) -> (start step, opt_state or None): loads the stage's starting point into `model`
# (initialisation or a checkpoint); `params` is the trainable subset, for the optimiser state's structure.
InitFn = Callable[..., tuple[int, object]]


def _path(parts) -> str:
    return "/".join(map(str, parts))


def build_model(run: RunSpec, name: str) -> nnx.Module:
    """Stage `name`'s model, freshly initialised from the run's seed by its stream entry, for crop x crop input."""
    spec = run.stage(name).model
    return spec.stream.build(
        run.num_classes, spec.build_kwargs(), dtype=jnp.dtype(run.dtype), rngs=nnx.Rngs(run.seed), crop=run.data.crop
    )


def param_filter(patterns: Sequence[str], model: nnx.Module, what: str = "trainable"):
    """Path regexes -> nnx filter over Params; every regex must match some Param (typos fail loudly)."""
    paths = [_path(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    for pat in patterns:
        if not any(matches(p, [pat]) for p in paths):
            raise ValueError(
                f"{what} regex {pat!r} matches no parameter of the model; parameter paths look like "
                f"{paths[:3]} ... (see nnx.state(model))"
            )
    return lambda path, _: matches(_path(path), patterns)


def set_modes(model: nnx.Module, *, bn_train: Sequence[str], dropout_train: Sequence[str]) -> nnx.filterlib.Filter:
    """Training-mode BatchNorms/Dropouts = modules whose path matches; all others inference mode.

    -> filter selecting the BatchStats of the training-mode BatchNorms (the statistics the step updates).
    """
    modules = [(_path(p), m) for p, m in nnx.iter_modules(model)]
    for pats, kind in ((bn_train, nnx.BatchNorm), (dropout_train, nnx.Dropout)):
        for pat in pats:
            if not any(isinstance(m, kind) and matches(p, [pat]) for p, m in modules):
                raise ValueError(f"regex {pat!r} matches no {kind.__name__} module of the model")
    training_bn = []
    for p, m in modules:
        if isinstance(m, nnx.BatchNorm):
            m.use_running_average = not matches(p, bn_train)
            if not m.use_running_average:
                training_bn.append(p)
        elif isinstance(m, nnx.Dropout):
            m.deterministic = not matches(p, dropout_train)
    return lambda path, _: _path(path[:-1]) in training_bn


def _module_at(model: nnx.Module, target: str) -> nnx.Module:
    m = model
    for name in [] if target == "model" else target.split("/"):
        if not hasattr(m, name):
            raise ValueError(f"init_from target {target!r}: the model has no submodule {name!r}")
        m = getattr(m, name)
    return m


def _other_classes(path, saved: np.ndarray, fresh) -> bool:
    """Whether `saved` is a class head's parameter (a module named 'classifier') that differs from the model's only
    in its last axis, the class count (a model fine-tuned on a dataset with other classes)."""
    return (
        len(path) >= 2
        and path[-2] == "classifier"
        and saved.ndim == fresh.ndim
        and saved.shape[:-1] == fresh.shape[:-1]
    )


def load_flat(module: nnx.Module, flat: dict[str, np.ndarray], source: str) -> None:
    """Copy Params and BatchStats found in `flat` (path -> array) into `module`; others keep their init.

    A classifier whose class count differs from the source's keeps its fresh init (logged: fine-tuning on other
    classes replaces it); any other shape mismatch is an error.
    """
    state = nnx.state(module, (nnx.Param, nnx.BatchStat))
    loaded, kept, replaced = 0, [], []
    for path, var in nnx.to_flat_state(state):
        key = _path(path)
        if key not in flat:
            kept.append(key)
            continue
        value = var[...]
        if flat[key].shape != value.shape:
            if _other_classes(path, flat[key], value):
                replaced.append(f"{key} {flat[key].shape} -> {value.shape}")
                continue
            raise ValueError(
                f"init from {source}: {key} has shape {flat[key].shape}, the model expects "
                f"{value.shape} (different model kwargs?)"
            )
        var[...] = jnp.asarray(flat[key], value.dtype)
        loaded += 1
    if not loaded:
        raise ValueError(f"init from {source}: no parameter path matches the model (wrong source?)")
    nnx.update(module, state)
    if replaced:
        logging.warning(
            "init from %s: classifier replaced (the source has another class count), freshly initialised: %s",
            source,
            ", ".join(replaced),
        )
    logging.info("init from %s: %d arrays loaded, %d kept fresh %s", source, loaded, len(kept), kept[:8])


def check_imagenet(path: str) -> None:
    """Raise a FileNotFoundError saying how to make the ImageNet artifact unless `path` exists."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"ImageNet weights not found at {path!r}. Convert torchvision's ResNet-34 once: "
            f"`python scripts/convert_weights.py resnet34-b627a593.pth {path}`, or set "
            f"--config.imagenet_weights=PATH, or train from scratch with the config argument init=scratch"
        )


def _modality(model: nnx.Module, target: str) -> str:
    """What the ResNet at `target` reads: the one input of the innermost registered stream holding it."""
    parts = [] if target == "model" else target.split("/")
    owners = [streams.of_model(_module_at(model, "/".join(parts[:i]) or "model")) for i in range(len(parts) + 1)]
    owner = next((s for s in reversed(owners) if s is not None), None)
    if owner is None or len(owner.inputs) != 1:
        raise ValueError(
            f"init_from {target}: imagenet needs a backbone inside a stream model that reads one input "
            f"(rgb or flow); {type(model).__name__} is {owner.kind if owner else 'not registered'}"
        )
    return next(iter(owner.inputs))


def initialise(model: nnx.Module, init_from, *, workdir: str, imagenet_weights: str) -> None:
    """Apply a stage's init_from {target ('model' or a submodule path): source}.

    source: 'imagenet' (converted torchvision ResNet-34 .npz into a ResNet), a stage name (its final checkpoint in
    `workdir`, the step its DONE names), or a path: a stage folder of another workdir (its final checkpoint when it
    has a DONE, else its newest good step), a checkpoint directory (its newest good step), or an authors' released
    checkpoint (a .pth state dict of the target's reference layout, read with torch).
    """
    for target, source in init_from.items():
        module = _module_at(model, target)
        if source == "imagenet":
            check_imagenet(imagenet_weights)
            load_imagenet(module, imagenet_weights, modality=_modality(model, target))
            continue
        if source.endswith(".pth"):
            if not os.path.isfile(source):
                raise FileNotFoundError(f"init_from {source!r}: no such reference checkpoint (an authors' .pth)")
            load_flat(module, reference_arrays(module, source)[1], source)
            continue
        directory = paths.absolute(source) if os.sep in source else paths.absolute(workdir) / source
        ckpt = directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory
        step = None  # a checkpoint path: its newest good step
        done = directory / "DONE"
        if os.sep not in source and not done.exists():
            raise FileNotFoundError(
                f"init_from {source!r}: stage {source} is not finished in {workdir} "
                f"(no {done}); run it first (keep it in config.recipe)"
            )
        if done.exists():
            step = paths.read_done(directory).get("step")  # the stage's final checkpoint, not an older one
        load_flat(module, checkpoint.load_final_state(ckpt, step=step), source)


def make_loss_fn(stage: StageSpec, dtype):
    """Stage -> loss_fn(model, uint8 batch) -> (loss, metrics): cross-entropy (+ alpha * MS loss)."""
    stream, loss_cfg, head = stage.model.stream, stage.loss, stage.model.ms_target

    def loss_fn(model, batch):
        out = stream.forward(model, batch, dtype)
        logits = out["logits"].astype(jnp.float32)
        loss = action_loss(logits, batch["label"])
        metrics = dict(accuracy=jnp.mean(jnp.argmax(logits, -1) == batch["label"]))
        if out.get("ms") is not None:
            l_ms = ms_loss(out["ms"].astype(jnp.float32), batch["ms_target"], head, reg_loss=loss_cfg.ms_reg_loss)
            metrics = dict(metrics, action_loss=loss, ms_loss=l_ms)
            loss = loss + loss_cfg.ms_alpha * l_ms
        return loss, metrics

    return loss_fn


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


def build(run: RunSpec, name: str, mesh, *, steps_per_epoch: int, init: InitFn | None = None) -> Stage:
    """Stage `name` of the run -> Stage over `mesh` with its trainable set, BN/dropout modes and optimiser.

    init: see InitFn; None keeps the fresh random initialisation and starts at step 0.
    """
    stage = run.stage(name)
    dtype = jnp.dtype(run.dtype)
    model = build_model(run, name)
    trainable = param_filter(stage.trainable, model)
    updated_stats = set_modes(model, bn_train=stage.bn_train, dropout_train=stage.dropout_train)
    params = split_model(model, trainable, updated_stats)[1]
    tx, schedules = make_optimizer(
        stage.optimizer, params, num_epochs=stage.epochs, steps_per_epoch=steps_per_epoch, quirk=run.schedule_quirk
    )
    start, opt_state = init(model, tx, params) if init else (0, None)
    graphdef, state, frozen = init_state(model, trainable, updated_stats, tx, mesh, step=start, opt_state=opt_state)
    train_step = make_train_step(
        graphdef,
        make_loss_fn(stage, dtype),
        tx,
        mesh,
        compiler_options=compiler_options(run.compiler_options, kind=stage.model.kind),
    )
    return Stage(model, graphdef, state, frozen, train_step, schedules, start)
