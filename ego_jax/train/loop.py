"""Runs a recipe's stages in order in a workdir: resumable, sharded, logged, stopped cleanly on SIGTERM/SIGINT.

W/.lock (the one writer), W/config.json (the last run's specs), W/<stage>/config.json (what the stage was
started with: a resume must match it), W/<stage>/checkpoints (orbax, digest-verified), W/<stage>/metrics.jsonl,
W/<stage>/eval.json, W/<stage>/DONE (written last), plus TensorBoard event files in W/<stage>.
"""

import contextlib
import dataclasses
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
from ego_jax.train import checkpoint, distributed, evaluate, loaders, paths, preflight, sharding, stage as stage_lib
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
        logging.warning(
            "signal %s: saving a checkpoint after the current step, then exiting%s",
            signum,
            " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "",
        )
        self.requested = True


def train(
    run: RunSpec,
    workdir: str,
    *,
    stop: StopRequest | None = None,
    stop_at_step: int | None = None,
    restart: tuple[str, ...] = (),
) -> bool:
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
                if not train_stage(
                    run, name, workdir, mesh=mesh, stop=stop, stop_at_step=stop_at_step, sources=sources
                ):
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
            logging.warning(
                "stage %s: starting over; its previous directory is now %s (delete it when unneeded)", name, target
            )

    distributed.on_process_0(move_aside, f"move {stage_dir} aside")


def evaluate_state(
    graphdef, state: TrainState, frozen, batches, *, protocol: str, num_classes: int, dtype, kind: str | None = None
) -> dict:
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
            str(stage_dir), just_logging=not distributed.is_writer(), asynchronous=False
        )
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


def verify_done(name: str, stage_dir: str | epath.Path) -> bool:
    """Whether the stage in `stage_dir` is finished: DONE exists and its final checkpoint verifies; a DONE whose
    checkpoint does not is moved to rejected_checkpoints/ (so the stage trains again). The writer process only;
    no JAX (an executor's driver calls it without devices)."""
    stage_dir = epath.Path(stage_dir)
    done = stage_dir / "DONE"
    if not done.exists():
        return False
    step = paths.read_done(stage_dir)["step"]
    try:
        checkpoint.verify_digest(stage_dir / "checkpoints" / str(step))
    except checkpoint.BadCheckpoint as e:
        logging.error(
            "stage %s is DONE but its final checkpoint is bad (%s): training it again from its newest good checkpoint",
            name,
            e,
        )
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


def train_stage(
    run: RunSpec,
    name: str,
    workdir: str,
    *,
    mesh,
    stop: StopRequest,
    stop_at_step=None,
    sources=None,
    restart_hint: str | None = None,
) -> bool:
    """Train one stage (skip if DONE, resume from its newest good checkpoint); -> True when the stage is done.

    sources: (train, test) sources already loaded (default: loaders.load_sources(run.data)). Its checkpoint
    manager, eval loader and metric writers are closed on every path, errors included; DONE is written after.
    restart_hint: how to start the stage over, said when none of its checkpoints is good (default: train.py's
    --restart_stage).
    """
    stage_dir = paths.absolute(workdir) / name
    if is_done(name, workdir):
        logging.info("stage %s: already done in %s, skipping", name, stage_dir)
        return True
    restart_hint = restart_hint or (
        f"Start the stage over with --restart_stage {name} (its directory is moved to {workdir}/restarted/)"
    )
    with contextlib.ExitStack() as closing:
        done = _run_stage(
            run,
            name,
            workdir,
            mesh=mesh,
            stop=stop,
            stop_at_step=stop_at_step,
            sources=sources or loaders.load_sources(run.data),
            closing=closing,
            restart_hint=restart_hint,
        )
    if done is None:
        return False
    _write_json(stage_dir / "DONE", done)
    logging.info("stage %s: done, test accuracy %.4f", name, done["accuracy"])
    return True


class _Window:
    """The train metrics since the last log, fetched from the devices one step late (so the host never waits for
    them between logs) and checked as they arrive: a non-finite loss or parameter stops the run.

    Saved with each checkpoint (`saved`, read back by `restore`), so that a stage stopped or killed between two logs
    logs, once resumed, the means an undisturbed run logs.
    """

    def __init__(self, name: str, steps_per_epoch: int, ckpts: checkpoint.StageCheckpoints):
        self.name, self.steps_per_epoch, self.ckpts = name, steps_per_epoch, ckpts
        self.rows, self.pending = [], None

    def check(self, step: int, metrics: dict) -> None:
        """A step's fetched metrics: a non-finite loss or parameter stops the run, naming the last good checkpoint."""
        if not metrics["finite"]:
            raise FloatingPointError(
                f"stage {self.name}: non-finite loss ({float(metrics['loss'])}) or parameters at step {step} (epoch "
                f"{(step - 1) // self.steps_per_epoch + 1}); stopped without saving. Last good checkpoint: step "
                f"{self.ckpts.latest_step()} in {self.ckpts.directory}"
            )

    def push(self, step: int, metrics: dict) -> None:
        """This step's metrics (still on the devices); the previous step's are fetched and checked."""
        self.fetch()
        self.pending = (step, metrics)

    def fetch(self) -> None:
        """Fetch and check the newest step's metrics now (before a checkpoint: non-finite parameters are never
        saved)."""
        if self.pending is not None:
            self.rows.append(jax.device_get(self.pending[1]))
            self.check(self.pending[0], self.rows[-1])
            self.pending = None

    def means(self) -> dict:
        """-> {metric: mean over the window} (the newest step fetched too, 'finite' left out); the window restarts."""
        self.fetch()
        means = {k: np.mean([w[k] for w in self.rows]) for k in self.rows[0] if k != "finite"}
        self.rows = []
        return means

    def saved(self) -> dict:
        """The window (newest step fetched) as JSON for a checkpoint's meta; `restore` reads it back exactly."""
        self.fetch()
        dtypes = {k: np.asarray(v).dtype.name for k, v in self.rows[0].items()} if self.rows else {}
        return dict(dtypes=dtypes, steps=[{k: float(v) for k, v in w.items()} for w in self.rows])

    def restore(self, meta: dict) -> None:
        """The window a checkpoint's meta saved (none: a checkpoint at a log step, or written by an older ego_jax)."""
        saved = meta.get("log_window") or dict(dtypes={}, steps=[])
        self.rows = [{k: np.asarray(v, saved["dtypes"][k]) for k, v in w.items()} for w in saved["steps"]]


def _resume(
    run: RunSpec, name: str, workdir: str, window: _Window, mesh, total: int, restart_hint: str
) -> stage_lib.InitFn:
    """The stage's starting point (a stage.InitFn): its newest good checkpoint (and the train-metric window saved
    with it), which every process must find the same, else its init_from sources at step 0."""
    stage, ckpts = run.stage(name), window.ckpts

    def init(model, tx, params):
        try:
            start, opt_state, meta = ckpts.restore_newest_good(model, tx.init(params), sharding.replicated(mesh))
        except checkpoint.BadCheckpoint as e:
            raise checkpoint.BadCheckpoint(f"stage {name}: {e}\n{restart_hint}") from None
        # Each process restored on its own; they agree unless some do not see the workdir process 0 sees.
        if distributed.any_process(distributed.from_process_0(start or 0) != (start or 0)):
            raise ValueError(
                f"stage {name}: the processes found different newest checkpoints in {ckpts.directory} "
                f"(this one, process {jax.process_index()}: step {start}); every process must see the "
                "same workdir: put it on a filesystem (or bucket) they all share"
            )
        if start is None:
            stage_lib.initialise(model, stage.init_from, workdir=workdir, imagenet_weights=run.imagenet_weights)
            return 0, None
        if start > total:
            raise ValueError(
                f"stage {name}: its newest checkpoint is step {start}, past the {total} steps of "
                f"epochs={stage.epochs}; raise the epochs, or start over with --restart_stage {name}"
            )
        logging.info("stage %s: resuming from step %d (epoch %d)", name, meta["step"], meta["epoch"])
        window.restore(meta)
        return start, opt_state

    return init


@dataclasses.dataclass
class _Training:
    """A stage in training: its built stage (whose `state` each step replaces), train-metric window, checkpoints
    and last evaluation."""

    name: str
    built: stage_lib.Stage
    window: _Window
    last_eval: dict | None = None

    def save(self, step: int) -> None:
        """Checkpoint `step` with the train-metric window, once the newest step's metrics are checked."""
        b, w = self.built, self.window
        log_window = w.saved()
        # The model still holds the host-local arrays init_state started from; orbax writes the global ones.
        nnx.update(b.model, b.state.params, b.state.stats, b.state.rngs, b.frozen)
        w.ckpts.save(
            step,
            b.model,
            b.state.opt_state,
            dict(step=step, epoch=step // w.steps_per_epoch, stage=self.name, log_window=log_window),
        )


def _hooks(run: RunSpec, training: _Training, log: "_Log", test, *, total: int):
    """-> (clu periodic actions run after every step, in order: progress, the train-metric log, the evaluation on the
    test split (kept in training.last_eval), the checkpoint, each also at the stage's last step; the evaluation)."""
    b, window, stream = training.built, training.window, run.stage(training.name).model.stream
    spe, dtype = window.steps_per_epoch, jnp.dtype(run.dtype)

    def log_train(step, t=None):
        lrs = {("lr" if g == "base" else f"lr/{g}"): s(step - 1) for g, s in b.schedules.items()}
        log(step, {**{f"train/{k}": v for k, v in window.means().items()}, **lrs, "epoch": step // spe})

    def evaluate_test(step, t=None):
        training.last_eval = dict(
            step=step,
            epoch=step // spe,
            **evaluate_state(
                b.graphdef,
                b.state,
                b.frozen,
                test,
                protocol=stream.protocol,
                num_classes=run.num_classes,
                dtype=dtype,
                kind=stream.kind,
            ),
        )
        log(step, {"eval/accuracy": training.last_eval["accuracy"]})

    def save(step, t=None):
        training.save(step)

    every = dict(log=run.log_every_steps, eval=spe * run.eval_every_epochs, save=spe * run.checkpoint_every_epochs)
    hooks = [
        periodic_actions.ReportProgress(num_train_steps=total, writer=log.writer, every_steps=every["log"]),
        *(
            periodic_actions.PeriodicCallback(every_steps=every[k], on_steps=[total], callback_fn=fn)
            for k, fn in (("log", log_train), ("eval", evaluate_test), ("save", save))
        ),
    ]
    return hooks, evaluate_test


def _step_loop(run: RunSpec, t: _Training, loader, hooks: list, *, total: int, stop: StopRequest, stop_at_step) -> int:
    """Steps from the built stage's start to `total`, the hooks after each, until done or stopped (with a checkpoint)
    -> the last step applied to the state."""
    b, completed, t0 = t.built, t.built.start, time.perf_counter()
    *periodic, save = hooks
    try:
        for step, batch in zip(range(b.start + 1, total + 1), loader):
            b.state, metrics = b.train_step(b.state, b.frozen, batch)
            completed = step
            t.window.push(step, metrics)
            if step == b.start + 1:
                logging.info("stage %s: first step (compile) %.1fs", t.name, time.perf_counter() - t0)
            for hook in periodic:
                hook(step)
            # Gathered where the host waits for the device anyway (one process: every step, at no cost).
            agreed = jax.process_count() == 1 or step % run.log_every_steps == 0
            stopping = step == stop_at_step or (agreed and distributed.any_process(stop.requested))
            if not save(step) and stopping:
                t.save(step)
            if stopping and step < total:
                break
    except Exception as e:
        # Ctrl-C reaches the loader workers too, and one still starting dies of it: the train state is intact.
        # (One process alone: with several, the save is collective and the others would wait for it.)
        if not stop.requested or jax.process_count() > 1:
            raise
        logging.warning(
            "stage %s: %s: %s after the stop request; saving step %d", t.name, type(e).__name__, e, completed
        )
        if completed > b.start:
            t.save(completed)
    return completed


def _run_stage(
    run: RunSpec,
    name: str,
    workdir: str,
    *,
    mesh,
    stop: StopRequest,
    stop_at_step,
    sources,
    closing: contextlib.ExitStack,
    restart_hint: str,
) -> dict | None:
    """train_stage's body -> the DONE record, or None when stopped early; what it opens is closed by `closing`."""
    stage, stage_dir = run.stage(name), paths.absolute(workdir) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    train_source, test_source = sources
    steps_per_epoch = len(train_source) // run.batch_size
    if not steps_per_epoch:
        raise ValueError(
            f"train split {run.data.train_split!r} has {len(train_source)} clips, fewer than "
            f"batch_size={run.batch_size}"
        )
    total = steps_per_epoch * stage.epochs
    ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints")
    closing.callback(ckpts.close)
    window = _Window(name, steps_per_epoch, ckpts)
    built = stage_lib.build(
        run,
        name,
        mesh,
        steps_per_epoch=steps_per_epoch,
        init=_resume(run, name, workdir, window, mesh, total, restart_hint),
    )
    preflight.write_record(run, workdir, name)  # checked against any earlier record by preflight
    log = _Log(stage_dir, built.start)
    closing.callback(log.close)
    logging.info(
        "stage %s: %d epochs x %d steps, %d trainable / %d frozen arrays",
        name,
        stage.epochs,
        steps_per_epoch,
        len(jax.tree.leaves(built.state.params)),
        len(jax.tree.leaves(built.frozen)),
    )
    # Built once per stage: each evaluation iterates it again, its worker processes started once.
    protocol = stage.model.stream.protocol
    test = loaders.eval_loader(
        run, test_source, protocol, mesh=mesh, kinds={protocol: stage.model.kind}, keep_workers=True
    )
    closing.callback(test.close)

    t = _Training(name, built, window)
    hooks, evaluate_test = _hooks(run, t, log, test, total=total)
    loader = loaders.train_loader(run, name, built.model, train_source, start_step=built.start, mesh=mesh)
    completed = _step_loop(run, t, loader, hooks, total=total, stop=stop, stop_at_step=stop_at_step)
    if completed < total:
        logging.warning(
            "stage %s: stopped at step %d/%d with a checkpoint; rerun the same command to resume",
            name,
            completed,
            total,
        )
        return None
    if t.last_eval is None or t.last_eval["step"] != total:  # resumed exactly at the end
        evaluate_test(total)
    t.save(total)
    _write_json(stage_dir / "eval.json", dict(stage=name, split=run.data.test_split, **t.last_eval))
    return dict(stage=name, step=total, epochs=stage.epochs, accuracy=t.last_eval["accuracy"])
