"""Runs a recipe's stages in order in a workdir: resumable, sharded, logged, stopped cleanly on SIGTERM/SIGINT.

W/.lock (the one writer), W/config.json (the last run's config), W/<stage>/config.json (what the stage was
started with: a resume must match it), W/<stage>/checkpoints (orbax, digest-verified), W/<stage>/metrics.jsonl,
W/<stage>/eval.json, W/<stage>/DONE (written last), plus TensorBoard event files in W/<stage>.
"""
import contextlib
import json
import logging
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath
from flax import nnx

from ego_jax import streams
from ego_jax.train import (
    checkpoint,
    distributed,
    evaluate,
    loaders,
    paths,
    preflight,
    recipes,
    sharding,
    stage as stage_lib,
)
from ego_jax.train.step import TrainState
from ego_jax.train.workdir_lock import run_lock


class StopRequest:
    """SIGTERM / SIGINT handler: sets a flag; the loop saves a checkpoint at the next step boundary and returns.

    A second SIGINT (Ctrl-C twice) aborts at once with KeyboardInterrupt, without saving.

    With several processes the flags are gathered at log boundaries (config.log_every_steps), so a signal to any
    one process stops all of them at the same step.
    """

    def __init__(self):
        self.requested = False

    def __call__(self, signum=signal.SIGTERM, frame=None):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt("second Ctrl-C: aborted without saving")
        logging.warning("signal %s: saving a checkpoint after the current step, then exiting%s", signum,
                        " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "")
        self.requested = True


def train(config, workdir: str, *, stop: StopRequest | None = None, stop_at_step: int | None = None,
          restart: tuple[str, ...] = ()) -> bool:
    """Run every stage of config.recipe in `workdir`; -> True when all are done, False if stopped early.

    Holds the workdir lock (process 0) and checks the whole recipe (preflight) before the first step.
    restart: stages to start over (their directories are moved to W/restarted/, not deleted).
    stop_at_step: stop each unfinished stage (with a checkpoint) once it reaches this step, as a preemption would.
    """
    workdir = paths.absolute(workdir)
    loaders.resolve_classes(config)  # data=folder: the build's class count, recorded in W/config.json
    stop = stop or StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with run_lock(workdir):
            for name in restart:
                restart_stage(config, workdir, name)
            mesh = sharding.make_mesh()
            sources = preflight.check(config, workdir, mesh=mesh)
            _write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))
            for name in config.recipe:
                if not train_stage(config, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step,
                                   sources=sources):
                    return False
            return True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def restart_stage(config, workdir: str, name: str) -> None:
    """Start stage `name` over: move W/<name> to W/restarted/<name>-<UTC time> (process 0)."""
    if name not in config.stages:
        raise ValueError(f"--restart_stage {name}: not a stage of the config ({list(config.stages)})")
    stage_dir = paths.absolute(workdir) / name

    def move_aside():
        if stage_dir.exists():
            target = stage_dir.parent / "restarted" / (name + time.strftime("-%Y%m%dT%H%M%S", time.gmtime()))
            target.parent.mkdir(parents=True, exist_ok=True)
            stage_dir.rename(target)
            logging.warning("stage %s: starting over; its previous directory is now %s (delete it when unneeded)",
                            name, target)

    distributed.on_process_0(move_aside, f"move {stage_dir} aside")


def evaluate_state(graphdef, state: TrainState, frozen, batches, *, protocol: str, num_classes: int,
                   dtype, kind: str | None = None) -> dict:
    """Accuracy of the model (of stream `kind`, default the protocol's) at a train state with evaluate.py's `protocol`.

    -> dict(accuracy, correct, count, confusion: (C, C) nested list, rows true class); padding excluded by the
    batch mask. Evaluation switches a traced copy to eval mode, so the training modes in `graphdef` and the
    train state are untouched.
    """
    model = nnx.merge(graphdef, state.params, state.stats, state.rngs, frozen)
    role = evaluate.MODELS[protocol][0]
    kinds = None if kind is None else {role: kind}
    confusion = evaluate.evaluate(batches, protocol, {role: model}, num_classes, kinds=kinds, dtype=dtype)
    correct, count = int(np.trace(confusion)), int(confusion.sum())
    return dict(accuracy=correct / max(count, 1), correct=correct, count=count, confusion=confusion.tolist())


class _Log:
    """Scalars to the clu writer (TensorBoard + console) and to metrics.jsonl (process 0).

    metrics.jsonl is rewritten whole at each log (paths.write_atomic): never torn by a crash, and the same code on
    a bucket, which cannot append. A resumed stage keeps the rows of the steps its checkpoint holds and logs the
    later ones again, so the file has one row per logged step, as an uninterrupted run writes it.
    """

    def __init__(self, stage_dir: epath.Path, start: int):
        self.writer = metric_writers.create_default_writer(
            str(stage_dir), just_logging=not distributed.is_writer(), asynchronous=False)
        self.path, self.lines = stage_dir / "metrics.jsonl", []
        if distributed.is_writer() and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line torn by a crash while an earlier ego_jax appended to the file
                    logging.warning("%s: dropping a line that is not JSON: %r", self.path, line[:80])
                    continue
                if row.get("step", 0) <= start:
                    self.lines.append(line)

    def __call__(self, step: int, scalars: dict):
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, scalars)
        if distributed.is_writer():
            self.lines.append(json.dumps(dict(step=step, **scalars)))
            paths.write_atomic(self.path, "\n".join(self.lines) + "\n")

    def close(self):
        self.writer.close()


def _window_meta(window: list[dict]) -> dict:
    """Per-step train metrics (0-d arrays) -> JSON for a checkpoint's meta; _window_from_meta restores them exactly."""
    dtypes = {k: np.asarray(v).dtype.name for k, v in window[0].items()} if window else {}
    return dict(dtypes=dtypes, steps=[{k: float(v) for k, v in w.items()} for w in window])


def _window_from_meta(meta: dict) -> list[dict]:
    """Inverse of _window_meta ([] for a checkpoint saved without one, at a log boundary or by an older ego_jax)."""
    saved = meta.get("log_window") or dict(dtypes={}, steps=[])
    return [{k: np.asarray(v, saved["dtypes"][k]) for k, v in w.items()} for w in saved["steps"]]


def _write_json(path: epath.Path, obj: dict) -> None:
    """Process 0 writes `path`; every process returns once it is written (it is read next by all of them)."""
    distributed.on_process_0(lambda: paths.write_atomic(path, json.dumps(obj, indent=1)), f"write {path}")


def verify_done(name: str, stage_dir: str | epath.Path) -> bool:
    """Whether the stage in `stage_dir` is finished: DONE exists and its final checkpoint verifies; a DONE whose
    checkpoint does not is moved to rejected_checkpoints/ (so the stage trains again). The writer process only;
    no JAX (an executor's driver calls it without devices)."""
    stage_dir = epath.Path(stage_dir)
    done = stage_dir / "DONE"
    if not done.exists():
        return False
    step = paths.read_json(done, "delete it: the stage's final checkpoint is evaluated again")["step"]
    try:
        checkpoint.verify_digest(stage_dir / "checkpoints" / str(step))
    except checkpoint.BadCheckpoint as e:
        logging.error("stage %s is DONE but its final checkpoint is bad (%s): training it again from its newest "
                      "good checkpoint", name, e)
        (stage_dir / "rejected_checkpoints").mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another suite process (a job) set it aside first
            done.replace(stage_dir / "rejected_checkpoints" / f"DONE-{step}")
        return False
    return True


def is_done(name: str, workdir: str) -> bool:
    """Whether stage `name` is finished in `workdir` and its final checkpoint verifies (else its DONE is set aside).

    Process 0 decides and every process takes its answer.
    """
    return distributed.from_process_0(distributed.is_writer() and verify_done(name, paths.absolute(workdir) / name))


def train_stage(config, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step=None,
                sources=None, restart_hint: str | None = None) -> bool:
    """Train one stage (skip if DONE, resume from its newest good checkpoint); -> True when the stage is done.

    sources: (train, test) sources already loaded (default: loaders.load_sources(config)). Its checkpoint
    manager, eval loader and metric writers are closed on every path, errors included; DONE is written after.
    restart_hint: how to start the stage over, said when none of its checkpoints is good (default: train.py's
    --restart_stage).
    """
    stage_dir = paths.absolute(workdir) / name
    if is_done(name, workdir):
        logging.info("stage %s: already done in %s, skipping", name, stage_dir)
        return True
    restart_hint = restart_hint or (f"Start the stage over with --restart_stage {name} (its directory is moved to "
                                    f"{workdir}/restarted/)")
    with contextlib.ExitStack() as closing:
        done = _run_stage(config, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step,
                          sources=sources or loaders.load_sources(config), closing=closing, restart_hint=restart_hint)
    if done is None:
        return False
    _write_json(stage_dir / "DONE", done)
    logging.info("stage %s: done, test accuracy %.4f", name, done["accuracy"])
    return True


def _run_stage(config, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step, sources,
               closing: contextlib.ExitStack, restart_hint: str) -> dict | None:
    """train_stage's body -> the DONE record, or None when stopped early; what it opens is closed by `closing`."""
    stage, stage_dir = config.stages[name], paths.absolute(workdir) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    train_source, test_source = sources
    dtype = jnp.dtype(config.dtype)
    steps_per_epoch = len(train_source) // config.batch_size
    if not steps_per_epoch:
        raise ValueError(f"train split {config.data.train_split!r} has {len(train_source)} clips, fewer than "
                         f"batch_size={config.batch_size}")
    total = steps_per_epoch * stage.epochs
    ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints")
    closing.callback(ckpts.close)
    # Train metrics of the steps since the last log: saved with each checkpoint, so that a run resumed from a step
    # between two logs logs the means an undisturbed run logs.
    window = []

    def init(model, tx, params):
        try:
            start, opt_state, meta = ckpts.restore_newest_good(model, tx.init(params), sharding.replicated(mesh))
        except checkpoint.BadCheckpoint as e:
            raise checkpoint.BadCheckpoint(f"stage {name}: {e}\n{restart_hint}") from None
        # Each process restored on its own; they agree unless some do not see the workdir process 0 sees.
        if distributed.any_process(distributed.from_process_0(start or 0) != (start or 0)):
            raise ValueError(f"stage {name}: the processes found different newest checkpoints in {ckpts.directory} "
                             f"(this one, process {jax.process_index()}: step {start}); every process must see the "
                             "same workdir: put it on a filesystem (or bucket) they all share")
        if start is None:
            recipes.initialise(model, stage.init_from, workdir=workdir, imagenet_weights=config.imagenet_weights)
            return 0, None
        if start > total:
            raise ValueError(f"stage {name}: its newest checkpoint is step {start}, past the {total} steps of "
                             f"epochs={stage.epochs}; raise the epochs, or start over with --restart_stage {name}")
        logging.info("stage %s: resuming from step %d (epoch %d)", name, meta["step"], meta["epoch"])
        window.extend(_window_from_meta(meta))
        return start, opt_state

    built = stage_lib.build(config, name, mesh, steps_per_epoch=steps_per_epoch, init=init)
    preflight.write_record(config, workdir, name)  # checked against any earlier record by preflight
    model, graphdef, state, frozen = built.model, built.graphdef, built.state, built.frozen
    train_step = built.train_step
    start, schedules = built.start, built.schedules
    kind = stage.model.kind
    protocol = streams.get(kind).protocol
    log = _Log(stage_dir, start)
    closing.callback(log.close)
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=log.writer,
                                             every_steps=config.log_every_steps)
    logging.info("stage %s: %d epochs x %d steps, %d trainable / %d frozen arrays", name, stage.epochs,
                 steps_per_epoch, len(jax.tree.leaves(state.params)), len(jax.tree.leaves(frozen)))

    def save(step):
        # The model still holds the host-local arrays init_state started from; orbax writes the global ones.
        nnx.update(model, state.params, state.stats, state.rngs, frozen)
        ckpts.save(step, model, state.opt_state, dict(step=step, epoch=step // steps_per_epoch, stage=name,
                                                      log_window=_window_meta(window)))

    def check(step, metrics):
        if not metrics["finite"]:
            raise FloatingPointError(
                f"stage {name}: non-finite loss ({float(metrics['loss'])}) or parameters at step {step} (epoch "
                f"{(step - 1) // steps_per_epoch + 1}); stopped without saving. Last good checkpoint: step "
                f"{ckpts.latest_step()} in {ckpts.directory}")

    pending = None  # (step, metrics on the device): fetched one step late, so the host never waits for it

    def flush():
        """Fetch and check the pending step's metrics into the window."""
        nonlocal pending
        if pending is not None:
            window.append(jax.device_get(pending[1]))
            check(pending[0], window[-1])
            pending = None

    # Built once per stage: each evaluation iterates it again, its worker processes started once.
    test = evaluate.make_eval_loader(config, test_source, protocol, mesh=mesh, kinds={protocol: kind},
                                     keep_workers=True)
    closing.callback(test.close)

    def run_eval(step):
        result = dict(step=step, epoch=step // steps_per_epoch, **evaluate_state(
            graphdef, state, frozen, test, protocol=protocol, num_classes=config.num_classes, dtype=dtype, kind=kind))
        log(step, {"eval/accuracy": result["accuracy"]})
        return result

    loader = loaders.train_loader(config, stage, model, train_source, start_step=start, mesh=mesh)
    last_eval, t0 = None, time.perf_counter()
    completed = start  # the last step applied to `state`
    try:
        for step, batch in zip(range(start + 1, total + 1), loader):
            state, metrics = train_step(state, frozen, batch)
            completed = step
            flush()
            pending = (step, metrics)
            if step == start + 1:
                logging.info("stage %s: first step (compile) %.1fs", name, time.perf_counter() - t0)
            report(step)
            boundary = step % steps_per_epoch == 0
            epoch = step // steps_per_epoch
            if step % config.log_every_steps == 0 or step == total:
                flush()
                log(step, {**{f"train/{k}": np.mean([w[k] for w in window]) for k in window[0] if k != "finite"},
                           **{("lr" if g == "base" else f"lr/{g}"): s(step - 1) for g, s in schedules.items()},
                           "epoch": epoch})
                window.clear()
            if boundary and (epoch % config.eval_every_epochs == 0 or step == total):
                last_eval = run_eval(step)
            # Gathered where the host waits for the device anyway (one process: every step, at no cost).
            agreed = jax.process_count() == 1 or step % config.log_every_steps == 0
            stopping = step == stop_at_step or (agreed and distributed.any_process(stop.requested))
            if step == total or stopping or (boundary and epoch % config.checkpoint_every_epochs == 0):
                flush()
                save(step)
            if stopping and step < total:
                break
    except Exception as e:
        # Ctrl-C reaches the loader workers too, and one still starting dies of it: the train state is intact.
        # (One process alone: with several, the save is collective and the others would wait for it.)
        if not stop.requested or jax.process_count() > 1:
            raise
        logging.warning("stage %s: %s: %s after the stop request; saving step %d", name, type(e).__name__, e,
                        completed)
        if completed > start:
            flush()
            save(completed)
    if completed < total:
        logging.warning("stage %s: stopped at step %d/%d with a checkpoint; rerun the same command to resume",
                        name, completed, total)
        return None

    if last_eval is None or last_eval["step"] != total:  # resumed exactly at the end
        last_eval = run_eval(total)
    save(total)
    _write_json(stage_dir / "eval.json", dict(stage=name, split=config.data.test_split, **last_eval))
    return dict(stage=name, step=total, epochs=stage.epochs, accuracy=last_eval["accuracy"])


