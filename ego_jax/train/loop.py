"""Runs a recipe's stages in order in a workdir: resumable, sharded, logged, stopped cleanly on SIGTERM.

W/<stage>/checkpoints (orbax), W/<stage>/metrics.jsonl, W/<stage>/eval.json, W/<stage>/DONE (written last),
plus TensorBoard event files in W/<stage>.
"""
import contextlib
import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers, periodic_actions
from flax import nnx

from ego_jax import streams
from ego_jax.train import checkpoint, evaluate, loaders, recipes, sharding
from ego_jax.train import stage as stage_lib
from ego_jax.train.step import TrainState


class StopRequest:
    """SIGTERM handler: only sets a flag; the loop saves a checkpoint at the next step boundary and returns."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum=signal.SIGTERM, frame=None):
        logging.warning("signal %s: saving a checkpoint after the current step, then exiting", signum)
        self.requested = True


def train(config, workdir: str, *, stop: StopRequest | None = None, stop_at_step: int | None = None) -> bool:
    """Run every stage of config.recipe in `workdir`; -> True when all are done, False if stopped early.

    stop_at_step: stop each unfinished stage (with a checkpoint) once it reaches this step, as a preemption would.
    """
    stop = stop or StopRequest()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        mesh = sharding.make_mesh()
        sharding.check_batch_size(config.batch_size, mesh)
        sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
        for name in config.recipe:
            if name not in config.stages:
                raise ValueError(f"config.recipe names stage {name!r}; defined stages: {list(config.stages)}")
            if "imagenet" in config.stages[name].init_from.values():  # fail now, not after the earlier stages
                recipes.check_imagenet(config.imagenet_weights)
        for name in config.recipe:
            if not train_stage(config, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step):
                return False
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)


def evaluate_state(graphdef, state: TrainState, frozen, batches, *, protocol: str, num_classes: int,
                   dtype, kind: str | None = None) -> dict:
    """Accuracy of the model (of stream `kind`, default the protocol's) at a train state with evaluate.py's `protocol`.

    -> dict(accuracy, correct, count); padding excluded by the batch mask. Evaluation switches a traced
    copy to eval mode, so the training modes in `graphdef` and the train state are untouched.
    """
    model = nnx.merge(graphdef, state.params, state.stats, state.rngs, frozen)
    role = evaluate.MODELS[protocol][0]
    kinds = None if kind is None else {role: kind}
    confusion = evaluate.evaluate(batches, protocol, {role: model}, num_classes, kinds=kinds, dtype=dtype)
    correct, count = int(np.trace(confusion)), int(confusion.sum())
    return dict(accuracy=correct / max(count, 1), correct=correct, count=count)


class _Log:
    """Scalars to the clu writer (TensorBoard + console) and to metrics.jsonl."""

    def __init__(self, stage_dir: str):
        self.writer = metric_writers.create_default_writer(
            stage_dir, just_logging=jax.process_index() > 0, asynchronous=False)
        self.jsonl = open(os.path.join(stage_dir, "metrics.jsonl"), "a") if jax.process_index() == 0 else None

    def __call__(self, step: int, scalars: dict):
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, scalars)
        if self.jsonl:
            self.jsonl.write(json.dumps(dict(step=step, **scalars)) + "\n")
            self.jsonl.flush()

    def close(self):
        self.writer.close()
        if self.jsonl:
            self.jsonl.close()


def _write_json(path: str, obj: dict) -> None:
    """One writer on a shared filesystem: process 0."""
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)


def train_stage(config, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step=None) -> bool:
    """Train one stage (skip if DONE, resume from its last checkpoint); -> True when the stage is done.

    Its checkpoint manager and metric writers are closed on every path, errors included; DONE is written after.
    """
    stage_dir = os.path.join(workdir, name)
    if os.path.exists(os.path.join(stage_dir, "DONE")):
        logging.info("stage %s: already done in %s, skipping", name, stage_dir)
        return True
    with contextlib.ExitStack() as closing:
        done = _run_stage(config, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step, closing=closing)
    if done is None:
        return False
    _write_json(os.path.join(stage_dir, "DONE"), done)
    logging.info("stage %s: done, test accuracy %.4f", name, done["accuracy"])
    return True


def _run_stage(config, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step,
               closing: contextlib.ExitStack) -> dict | None:
    """train_stage's body -> the DONE record, or None when stopped early; what it opens is closed by `closing`."""
    stage, stage_dir = config.stages[name], os.path.join(workdir, name)
    os.makedirs(stage_dir, exist_ok=True)
    train_source, test_source = loaders.load_sources(config)
    dtype = jnp.dtype(config.dtype)
    steps_per_epoch = len(train_source) // config.batch_size
    if not steps_per_epoch:
        raise ValueError(f"train split {config.data.train_split!r} has {len(train_source)} clips, fewer than "
                         f"batch_size={config.batch_size}")
    total = steps_per_epoch * stage.epochs
    ckpts = checkpoint.StageCheckpoints(os.path.join(stage_dir, "checkpoints"))
    closing.callback(ckpts.close)

    def init(model, tx, params):
        start = ckpts.latest_step() or 0
        if not start:
            recipes.initialise(model, stage.init_from, workdir=workdir, imagenet_weights=config.imagenet_weights)
            return 0, None
        opt_state, meta = ckpts.restore(start, model, tx.init(params), sharding.replicated(mesh))
        logging.info("stage %s: resuming from step %d (epoch %d)", name, meta["step"], meta["epoch"])
        return start, opt_state

    built = stage_lib.build(config, name, mesh, steps_per_epoch=steps_per_epoch, init=init)
    model, graphdef, state, frozen, train_step = built.model, built.graphdef, built.state, built.frozen, built.train_step
    start, schedules = built.start, built.schedules
    kind = stage.model.kind
    protocol = streams.get(kind).protocol
    log = _Log(stage_dir)
    closing.callback(log.close)
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=log.writer,
                                             every_steps=config.log_every_steps)
    logging.info("stage %s: %d epochs x %d steps, %d trainable / %d frozen arrays", name, stage.epochs,
                 steps_per_epoch, len(jax.tree.leaves(state.params)), len(jax.tree.leaves(frozen)))

    def save(step):
        nnx.update(model, state.params, state.stats, state.rngs)  # frozen arrays are already in the model
        ckpts.save(step, model, state.opt_state, dict(step=step, epoch=step // steps_per_epoch, stage=name))

    def check(step, metrics):
        if not metrics["finite"]:
            raise FloatingPointError(
                f"stage {name}: non-finite loss ({float(metrics['loss'])}) or parameters at step {step} (epoch "
                f"{(step - 1) // steps_per_epoch + 1}); stopped without saving. Last good checkpoint: step "
                f"{ckpts.latest_step()} in {ckpts.directory}")

    def run_eval(step):
        test = evaluate.make_eval_loader(config, test_source, protocol, mesh=mesh, kinds={protocol: kind})
        result = dict(step=step, epoch=step // steps_per_epoch, **evaluate_state(
            graphdef, state, frozen, test, protocol=protocol, num_classes=config.num_classes, dtype=dtype, kind=kind))
        log(step, {"eval/accuracy": result["accuracy"]})
        return result

    loader = loaders.train_loader(config, stage, model, train_source, start_step=start, mesh=mesh)
    window, pending, last_eval, t0 = [], None, None, time.perf_counter()
    for step, batch in zip(range(start + 1, total + 1), loader):
        state, metrics = train_step(state, frozen, batch)
        if pending is not None:  # checked one step late, so the host never waits for the device here
            window.append(jax.device_get(pending[1]))
            check(pending[0], window[-1])
        pending = (step, metrics)
        if step == start + 1:
            logging.info("stage %s: first step (compile) %.1fs", name, time.perf_counter() - t0)
        report(step)
        boundary = step % steps_per_epoch == 0
        epoch = step // steps_per_epoch
        if step % config.log_every_steps == 0 or step == total:
            window.append(jax.device_get(metrics))
            check(step, window[-1])
            pending = None
            log(step, {**{f"train/{k}": np.mean([w[k] for w in window]) for k in window[0] if k != "finite"},
                       **{("lr" if g == "base" else f"lr/{g}"): s(step - 1) for g, s in schedules.items()},
                       "epoch": epoch})
            window = []
        if boundary and (epoch % config.eval_every_epochs == 0 or step == total):
            last_eval = run_eval(step)
        stopping = stop.requested or step == stop_at_step
        if step == total or stopping or (boundary and epoch % config.checkpoint_every_epochs == 0):
            if pending is not None:
                check(*pending)
            save(step)
        if stopping and step < total:
            logging.warning("stage %s: stopped at step %d/%d with a checkpoint; rerun the same command to resume",
                            name, step, total)
            return None

    if last_eval is None or last_eval["step"] != total:  # resumed exactly at the end
        last_eval = run_eval(total)
    save(total)
    _write_json(os.path.join(stage_dir, "eval.json"), dict(stage=name, split=config.data.test_split, **last_eval))
    return dict(stage=name, step=total, epochs=stage.epochs, accuracy=last_eval["accuracy"])


