"""A suite's distinct stages as jobs of an executor (--executor local|slurm): one job a stage, after its sources.

    train_all(executor, W, runs, stop=stop)   # the runner's training of `runs` (True when every stage is done)

Each stage key of the runs is one executors.Node, done when W/stages/<key>/DONE exists. Its job (StageJob) trains
the stage through the first run that uses it: that run's workdir links the stage and the stages it starts from
(init_from), whose jobs it runs after (stage 2 after stage 1, joint after RGB stage 2 and flow). A stage trains
under its lease lock (W/stages/<key>/.lock, ego_jax.train.workdir_lock; runner.train_run takes it whatever the
executor), so two jobs of one stage (two drivers; a resubmission while the first still runs) train it once: the
second waits, then finds it DONE (a serial run stops instead, naming the job).

Preemption, submitit's checkpointing protocol: the job takes submitit's preemption signal (USR2, which SLURM sends
--slurm.signal_delay_s before the time limit, and on preemption where the cluster is set up to), SIGTERM and SIGINT
as the train loop's stop request: a checkpoint after the current step. After USR2 it then hands over to submitit's
handler, which calls StageJob.checkpoint() (the same job again), requeues it and exits; the requeued job resumes
from the checkpoint. After SIGTERM or SIGINT it exits unfinished without requeueing, with ego_jax's EXIT_STOPPED
(75, as a stopped ego-jax-train: rerun to resume; a scancel; a cluster that preempts with SIGTERM requeues by its
own PreemptMode).
"""

import logging
import os
import signal
import sys
import time

from ego_jax.cli.common import EXIT_STOPPED
from ego_jax.experiments import executors, plan as plan_lib, report, runner
from ego_jax.train import checkpoint, distributed, loop, sharding
from ego_jax.train.workdir_lock import WorkdirLocked

LOCK_WAIT_S = 30.0  # how often a job waiting for another job of its stage looks again


class _Stop(loop.StopRequest):
    """The train loop's stop request, remembering whether submitit's preemption signal asked for it."""

    def __init__(self):
        super().__init__()
        self.preempted = False

    def __call__(self, signum=signal.SIGTERM, frame=None):
        self.preempted |= signum == executors.preempt_signal()
        super().__call__(signum, frame)


class StageJob(executors.submitit.helpers.Checkpointable):
    """Trains stage `stage` of `run` in the suite workdir (the job's whole work); -> its DONE record's fields.

    processes > 1: the job's tasks form one multi-process run (jax.distributed's SLURM detection).
    checkpoint() (submitit's, from Checkpointable) resubmits the same job, which resumes from the stage's checkpoint.
    """

    def __init__(self, workdir: str, run: plan_lib.Run, stage: str, *, processes: int = 1):
        self.workdir, self.run, self.stage, self.processes = workdir, run, stage, processes

    def __call__(self) -> dict:
        _setup_logs()
        if self.processes > 1:
            distributed.initialize(mode="auto")
        stop = _Stop()
        requeue = signal.getsignal(executors.preempt_signal())  # submitit's checkpoint-and-requeue handler
        for sig in (signal.SIGTERM, signal.SIGINT, executors.preempt_signal()):
            signal.signal(sig, stop)
        key = plan_lib.stage_key(self.run.spec, self.stage)
        done = self._train(key, stop)
        if done:
            return dict(stage=self.stage, key=key, run=self.run.path)
        if stop.preempted and callable(requeue):
            requeue(executors.preempt_signal(), None)  # checkpoint(), requeue, exit (process 0; the others return)
        logging.warning("stage %s: stopped with a checkpoint before its end; rerun the suite to resume it", key)
        sys.exit(EXIT_STOPPED)  # as a stopped ego-jax-train: resumable (a cluster's requeue logic may key on it)

    def _train(self, key: str, stop: "_Stop") -> bool:
        """Train the stage (once a job of it that still runs is gone), recording this run in W/jobs/<key>/.

        -> whether the stage is done (False: stopped).
        """
        attempt = (
            executors.Attempt(os.path.join(self.workdir, runner.JOBS), key, device=report.device(), run=self.run.path)
            if distributed.is_writer()
            else None
        )
        try:
            while True:
                try:
                    done = runner.train_run(
                        self.workdir, self.run, mesh=sharding.make_mesh(), stop=stop, stages=(self.stage,)
                    )
                    break
                except WorkdirLocked as e:  # another job of this stage (two drivers, a resubmission)
                    if stop.requested:
                        done = False
                        break
                    logging.warning("another job trains this stage; waiting for it (%s)", e)
                    time.sleep(LOCK_WAIT_S)
        except BaseException:
            if attempt:
                attempt.end("error")
            raise
        if attempt:
            attempt.end("done" if done else "preempted" if stop.preempted else "stopped")
        return done


def _setup_logs() -> None:
    """The job's log (its stderr file): the train loop's INFO lines, timed, without orbax's per-save lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    checkpoint.quiet_orbax_logs(handler)
    logging.getLogger().handlers = [handler]
    logging.getLogger().setLevel(logging.INFO)


def nodes(workdir: str, runs: list[plan_lib.Run], *, processes: int = 1) -> list[executors.Node]:
    """One Node per distinct stage of `runs`, in the order the runs' recipes need them."""
    out = {}
    for run in runs:
        for name in run.spec.recipe:
            key = plan_lib.stage_key(run.spec, name)
            if key in out:
                continue
            sources = [s for s in run.spec.stage(name).init_from.values() if s in run.spec.recipe]
            out[key] = executors.Node(
                name=key,
                fn=StageJob(workdir, run, name, processes=processes),
                after=tuple(plan_lib.stage_key(run.spec, s) for s in sources),
                done=os.path.join(runner.stage_dir(workdir, run.spec, name), "DONE"),
            )
    return list(out.values())


def train_all(executor: executors.Executor, workdir: str, runs: list[plan_lib.Run], *, stop) -> bool:
    """Every stage of `runs` as a job of `executor` (see the module doc); -> True when all are done."""
    for run in runs:  # the links first, so that no two jobs make the same one
        runner.link_stages(workdir, run)
    jobs = nodes(workdir, runs, processes=executor.tasks_per_job)
    for job in jobs:  # a finished stage is reused once its final checkpoint verifies, else its job trains it again
        loop.verify_done(job.fn.stage, os.path.dirname(job.done))
    return executor.run(jobs, os.path.join(workdir, runner.JOBS), stop=stop)
