"""Runs a recipe's stages in order in a workdir: resumable, sharded, logged, stopped cleanly on SIGTERM/SIGINT.

W/.lock (the one writer), W/config.json (the last run's specs), W/<stage>/config.json (what the stage was
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

from ego_jax.specs import RunSpec
from ego_jax.train import checkpoint, distributed, evaluate, loaders, paths, preflight, sharding
from ego_jax.train import stage as stage_lib
from ego_jax.train.step import TrainState
from ego_jax.train.workdir_lock import run_lock


class StopRequest:
    """SIGTERM / SIGINT handler: sets a flag; the loop saves a checkpoint at the next step boundary and returns.

    A second SIGINT (Ctrl-C twice) aborts at once with KeyboardInterrupt, without saving.

    With several processes the flags are gathered at log boundaries (log_every_steps), so a signal to any
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


def train(run: RunSpec, workdir: str, *, stop: StopRequest | None = None, stop_at_step: int | None = None,
          restart: tuple[str, ...] = ()) -> bool:
    """Run every stage of the run's recipe in `workdir`; -> True when all are done, False if stopped early.

    Holds the workdir lock (process 0) and checks the whole recipe (preflight) before the first step.
    restart: stages to start over (their directories are moved to W/restarted/, not deleted).
    stop_at_step: stop each unfinished stage (with a checkpoint) once it reaches this step, as a preemption would.
    """
    workdir = paths.absolute(workdir)
    run = loaders.resolve_classes(run)  # data=folder: the build's class count, recorded in W/config.json
    stop = stop or StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with run_lock(workdir):
            for name in restart:
                restart_stage(run, workdir, name)
            mesh = sharding.make_mesh()
            sources = preflight.check(run, workdir, mesh=mesh)
            _write_json(workdir / "config.json", run.to_dict())
            for name in run.recipe:
                if not train_stage(run, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step,
                                   sources=sources):
                    return False
            return True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def restart_stage(run: RunSpec, workdir: str, name: str) -> None:
    """Start stage `name` over: move W/<name> to W/restarted/<name>-<UTC time> (process 0)."""
    if name not in run.stages:
        raise ValueError(f"--restart_stage {name}: not a stage of the config ({list(run.stages)})")
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


def _write_json(path: epath.Path, obj: dict) -> None:
    """Process 0 writes `path`; every process returns once it is written (it is read next by all of them)."""
    distributed.on_process_0(lambda: paths.write_atomic(path, json.dumps(obj, indent=1)), f"write {path}")


def _done(name: str, stage_dir: epath.Path) -> bool:
    """Whether the stage is finished: DONE exists and its final checkpoint verifies (else DONE is set aside)."""
    done = stage_dir / "DONE"
    if not done.exists():
        return False
    step = json.loads(done.read_text())["step"]
    try:
        checkpoint.verify_digest(stage_dir / "checkpoints" / str(step))
    except checkpoint.BadCheckpoint as e:
        logging.error("stage %s is DONE but its final checkpoint is bad (%s): training it again from its newest "
                      "good checkpoint", name, e)
        if jax.process_index() == 0:
            (stage_dir / "rejected_checkpoints").mkdir(parents=True, exist_ok=True)
            done.replace(stage_dir / "rejected_checkpoints" / f"DONE-{step}")
        return False
    return True


def train_stage(run: RunSpec, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step=None,
                sources=None) -> bool:
    """Train one stage (skip if DONE, resume from its newest good checkpoint); -> True when the stage is done.

    sources: (train, test) sources already loaded (default: loaders.load_sources(run.data)). Its checkpoint
    manager, eval loader and metric writers are closed on every path, errors included; DONE is written after.
    """
    stage_dir = paths.absolute(workdir) / name
    # Process 0 decides (it may set a bad DONE aside) and every process takes its answer.
    if distributed.from_process_0(distributed.is_writer() and _done(name, stage_dir)):
        logging.info("stage %s: already done in %s, skipping", name, stage_dir)
        return True
    with contextlib.ExitStack() as closing:
        done = _run_stage(run, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step,
                          sources=sources or loaders.load_sources(run.data), closing=closing)
    if done is None:
        return False
    _write_json(stage_dir / "DONE", done)
    logging.info("stage %s: done, test accuracy %.4f", name, done["accuracy"])
    return True


def _run_stage(run: RunSpec, name: str, workdir: str, *, mesh, stop: StopRequest, stop_at_step, sources,
               closing: contextlib.ExitStack) -> dict | None:
    """train_stage's body -> the DONE record, or None when stopped early; what it opens is closed by `closing`."""
    stage, stage_dir = run.stage(name), paths.absolute(workdir) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    train_source, test_source = sources
    dtype = jnp.dtype(run.dtype)
    steps_per_epoch = len(train_source) // run.batch_size
    if not steps_per_epoch:
        raise ValueError(f"train split {run.data.train_split!r} has {len(train_source)} clips, fewer than "
                         f"batch_size={run.batch_size}")
    total = steps_per_epoch * stage.epochs
    ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints")
    closing.callback(ckpts.close)

    def init(model, tx, params):
        try:
            start, opt_state, meta = ckpts.restore_newest_good(model, tx.init(params), sharding.replicated(mesh))
        except checkpoint.BadCheckpoint as e:
            raise checkpoint.BadCheckpoint(f"stage {name}: {e}\nStart the stage over with --restart_stage {name} "
                                           f"(its directory is moved to {workdir}/restarted/)") from None
        # Each process restored on its own; they agree unless some do not see the workdir process 0 sees.
        if distributed.any_process(distributed.from_process_0(start or 0) != (start or 0)):
            raise ValueError(f"stage {name}: the processes found different newest checkpoints in {ckpts.directory} "
                             f"(this one, process {jax.process_index()}: step {start}); every process must see the "
                             "same workdir: put it on a filesystem (or bucket) they all share")
        if start is None:
            stage_lib.initialise(model, stage.init_from, workdir=workdir, imagenet_weights=run.imagenet_weights)
            return 0, None
        if start > total:
            raise ValueError(f"stage {name}: its newest checkpoint is step {start}, past the {total} steps of "
                             f"epochs={stage.epochs}; raise the epochs, or start over with --restart_stage {name}")
        logging.info("stage %s: resuming from step %d (epoch %d)", name, meta["step"], meta["epoch"])
        return start, opt_state

    built = stage_lib.build(run, name, mesh, steps_per_epoch=steps_per_epoch, init=init)
    preflight.write_record(run, workdir, name)  # checked against any earlier record by preflight
    model, graphdef, state, frozen = built.model, built.graphdef, built.state, built.frozen
    train_step = built.train_step
    start, schedules = built.start, built.schedules
    kind = stage.model.kind
    protocol = stage.model.stream.protocol
    log = _Log(stage_dir, start)
    closing.callback(log.close)
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=log.writer,
                                             every_steps=run.log_every_steps)
    logging.info("stage %s: %d epochs x %d steps, %d trainable / %d frozen arrays", name, stage.epochs,
                 steps_per_epoch, len(jax.tree.leaves(state.params)), len(jax.tree.leaves(frozen)))

    def save(step):
        # The model still holds the host-local arrays init_state started from; orbax writes the global ones.
        nnx.update(model, state.params, state.stats, state.rngs, frozen)
        ckpts.save(step, model, state.opt_state, dict(step=step, epoch=step // steps_per_epoch, stage=name))

    def check(step, metrics):
        if not metrics["finite"]:
            raise FloatingPointError(
                f"stage {name}: non-finite loss ({float(metrics['loss'])}) or parameters at step {step} (epoch "
                f"{(step - 1) // steps_per_epoch + 1}); stopped without saving. Last good checkpoint: step "
                f"{ckpts.latest_step()} in {ckpts.directory}")

    # Built once per stage: each evaluation iterates it again, its worker processes started once.
    test = loaders.eval_loader(run, test_source, protocol, mesh=mesh, kinds={protocol: kind}, keep_workers=True)
    closing.callback(test.close)

    def run_eval(step):
        result = dict(step=step, epoch=step // steps_per_epoch, **evaluate_state(
            graphdef, state, frozen, test, protocol=protocol, num_classes=run.num_classes, dtype=dtype, kind=kind))
        log(step, {"eval/accuracy": result["accuracy"]})
        return result

    loader = loaders.train_loader(run, name, model, train_source, start_step=start, mesh=mesh)
    window, pending, last_eval, t0 = [], None, None, time.perf_counter()
    completed = start  # the last step applied to `state`
    try:
        for step, batch in zip(range(start + 1, total + 1), loader):
            state, metrics = train_step(state, frozen, batch)
            completed = step
            if pending is not None:  # checked one step late, so the host never waits for the device here
                window.append(jax.device_get(pending[1]))
                check(pending[0], window[-1])
            pending = (step, metrics)
            if step == start + 1:
                logging.info("stage %s: first step (compile) %.1fs", name, time.perf_counter() - t0)
            report(step)
            boundary = step % steps_per_epoch == 0
            epoch = step // steps_per_epoch
            if step % run.log_every_steps == 0 or step == total:
                window.append(jax.device_get(metrics))
                check(step, window[-1])
                pending = None
                log(step, {**{f"train/{k}": np.mean([w[k] for w in window]) for k in window[0] if k != "finite"},
                           **{("lr" if g == "base" else f"lr/{g}"): s(step - 1) for g, s in schedules.items()},
                           "epoch": epoch})
                window = []
            if boundary and (epoch % run.eval_every_epochs == 0 or step == total):
                last_eval = run_eval(step)
            # Gathered where the host waits for the device anyway (one process: every step, at no cost).
            agreed = jax.process_count() == 1 or step % run.log_every_steps == 0
            stopping = step == stop_at_step or (agreed and distributed.any_process(stop.requested))
            if step == total or stopping or (boundary and epoch % run.checkpoint_every_epochs == 0):
                if pending is not None:
                    check(*pending)
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
            if pending is not None:
                check(*pending)
            save(completed)
    if completed < total:
        logging.warning("stage %s: stopped at step %d/%d with a checkpoint; rerun the same command to resume",
                        name, completed, total)
        return None

    if last_eval is None or last_eval["step"] != total:  # resumed exactly at the end
        last_eval = run_eval(total)
    save(total)
    _write_json(stage_dir / "eval.json", dict(stage=name, split=run.data.test_split, **last_eval))
    return dict(stage=name, step=total, epochs=stage.epochs, accuracy=last_eval["accuracy"])


