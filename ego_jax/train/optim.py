"""Optimisers of the reference recipes: coupled weight decay, parameter groups, epoch-wise lr schedules."""

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def path_str(keypath) -> str:
    """jax key path of a leaf in an nnx.State -> '/'-joined nnx path, e.g. 'layer4/2/conv2/kernel'."""
    names = []
    for k in keypath:
        if isinstance(k, jax.tree_util.DictKey):
            names.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            names.append(str(k.idx))
        # GetAttrKey('value') is the Variable wrapper, not part of the nnx path.
    return "/".join(names)


def matches(path: str, patterns: Sequence[str]) -> bool:
    """True if the '/'-joined path fully matches any regex in `patterns`."""
    return any(re.fullmatch(p, path) for p in patterns)


def lr_schedule(
    base_lr: float,
    *,
    milestones: Sequence[int] = (),
    step_size: int = 0,
    gamma: float = 1.0,
    num_epochs: int,
    steps_per_epoch: int,
    quirk: bool = True,
) -> optax.Schedule:
    """Step count -> lr: base_lr * gamma ** (decays so far), decays at epoch milestones or every `step_size` epochs.

    torch's MultiStepLR / StepLR decay at 0-based epoch m (epochs 0..m-1 use the old lr). The reference calls
    `scheduler.step()` at the START of each epoch, so with `quirk=True` every decay lands one epoch early
    (a decay at epoch 1 then applies from the first step).
    """
    if step_size:
        if milestones:
            raise ValueError(f"lr schedule: give milestones {tuple(milestones)} or step_size {step_size}, not both")
        milestones = range(step_size, num_epochs + 1, step_size)
    shift = 1 if quirk else 0
    boundaries = np.array(sorted((m - shift) * steps_per_epoch for m in milestones), np.int32)
    gamma = jnp.float32(gamma)

    def schedule(count):
        decays = jnp.sum(jnp.asarray(count) >= boundaries) if boundaries.size else 0
        return base_lr * gamma**decays

    return schedule


def _base(name: str, *, lr: float, weight_decay: float, eps: float, momentum: float) -> optax.GradientTransformation:
    # Coupled L2 as torch's `weight_decay`: wd * param is added to the gradient BEFORE the adaptive/momentum
    # transform (not AdamW's decoupled decay).
    if name == "adam":
        core = optax.scale_by_adam(eps=eps)
    elif name == "sgd":
        core = optax.trace(decay=momentum) if momentum else optax.identity()
    else:
        raise ValueError(f"optimizer.name={name!r}: expected 'adam' or 'sgd'")
    return optax.chain(optax.add_decayed_weights(weight_decay), core, optax.scale_by_learning_rate(lr))


def make_optimizer(cfg, params, *, num_epochs: int, steps_per_epoch: int, quirk: bool = True):
    """Stage optimiser config + trainable params (nnx.State) -> (optax transform, {group: schedule}).

    cfg: name ('adam'|'sgd'), lr, weight_decay, eps, momentum, schedule (milestones, step_size, gamma),
    param_groups {group: {params: regexes, lr}}; trainable params no group claims use `cfg.lr` (group 'base').
    """
    groups = {"base": cfg.lr, **{g: gc.lr for g, gc in cfg.param_groups.items()}}
    schedules = {
        g: lr_schedule(
            lr,
            milestones=cfg.schedule.milestones,
            step_size=cfg.schedule.step_size,
            gamma=cfg.schedule.gamma,
            num_epochs=num_epochs,
            steps_per_epoch=steps_per_epoch,
            quirk=quirk,
        )
        for g, lr in groups.items()
    }

    def label(keypath, _):
        path = path_str(keypath)
        claimed = [g for g, gc in cfg.param_groups.items() if matches(path, gc.params)]
        if len(claimed) > 1:
            raise ValueError(
                f"parameter {path} is claimed by several param_groups {claimed}; make their regexes disjoint"
            )
        return claimed[0] if claimed else "base"

    labels = jax.tree_util.tree_map_with_path(label, params)
    used = set(jax.tree.leaves(labels))
    for g, gc in cfg.param_groups.items():
        if g not in used:
            raise ValueError(f"param_groups.{g} (regexes {tuple(gc.params)}) matches no trainable parameter")
    txs = {
        g: _base(cfg.name, lr=schedules[g], weight_decay=cfg.weight_decay, eps=cfg.eps, momentum=cfg.momentum)
        for g in groups
    }
    return optax.multi_transform(txs, labels), schedules
