"""Executors of a graph of jobs (a suite's stages, a dataset's flow shards): local processes or SLURM jobs, by submitit.

    executor = Executor("local", workers=2)      # or Executor("slurm", options=dict(partition="gpu", ...))
    executor.run([Node(name, fn, after, done_marker), ...], jobs_dir, stop=stop)   # -> True when all are done

Each job is a pickled callable that submitit runs in its own process (`python -m submitit.core._submit`), its
logs in jobs_dir/submitit/<job id>_<task>_log.{out,err}:
  local   submitit's LocalExecutor: at most `workers` jobs at once, each submitted once the jobs it runs after have
          finished (LocalExecutor has no dependencies); with gpus_per_job G, worker slot i sees GPUs iG .. iG+G-1
          (CUDA_VISIBLE_DEVICES, empty when G is 0: CPU jobs).
  slurm   submitit's SlurmExecutor: every job submitted at once, with --dependency=afterok:<job ids> on the jobs it
          runs after and --kill-on-invalid-dep=yes (a failed job's dependants end instead of pending forever). A job
          of K nodes runs one task per GPU (G/K a node; one task a node without GPUs), which jax.distributed finds
          through SLURM's environment.
(The serial executor is no executor: the suite runner trains in its own process, ego_jax.experiments.runner.)

The driver is idempotent. jobs_dir/<name>/submitted.json keeps every submission of a node (job id, log, the job ids
it waits for), so a rerun after a crash or logout skips finished nodes (their DONE marker), waits for running jobs
(a local job's controller process, a SLURM job's state in sacct) and resubmits the ones that ended unfinished,
printing their log. Jobs ending unfinished in a session are not resubmitted in it: the driver finishes what does
not depend on them and raises JobsFailed naming each one's log. A job writes jobs_dir/<name>/attempt-<job id>-<pid>
.json each time it runs (host, pid, start, end, device, outcome: done, preempted (then requeued), stopped or error),
so a requeued job shows one attempt per run.
"""

import argparse
import dataclasses
import importlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable

from absl import flags
from ml_collections import config_dict, config_flags

from ego_jax.cli.common import EXIT_STOPPED
from ego_jax.train import paths, workdir_lock

KINDS = ("serial", "local", "slurm")
SUBMITIT = "submitit"  # jobs_dir/submitit: submitit's folder (pickled jobs, results, logs, sbatch scripts)
XLA_CACHE = "xla_cache"  # jobs_dir/xla_cache: the jobs' persistent compilation cache (--*.compilation_cache)
POLL_S = {"local": 1.0, "slurm": 20.0}  # how often the driver looks at its jobs (sacct is rate-limited by submitit)


def _import_submitit():
    """submitit without its import-time logging set-up, unless SUBMITIT_LOG_LEVEL asks for it.

    submitit/core/logger.py calls logging.config.dictConfig when imported, which closes every handler the process
    already has: a FileHandler opened with mode "w" stops writing for good, and absl's handler closes its stream when
    that is no longer sys.stderr (pytest's capture file, seen as "I/O operation on closed file" in a later test).
    SUBMITIT_LOG_LEVEL=NOCONFIG is submitit's own switch for this, read once at import; its logger then propagates to
    the root logger's handlers. The variable is restored, so the jobs' processes configure submitit as usual."""
    unset = "SUBMITIT_LOG_LEVEL" not in os.environ
    if unset:
        os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
    try:
        return importlib.import_module("submitit")
    finally:
        if unset:
            del os.environ["SUBMITIT_LOG_LEVEL"]


submitit = _import_submitit()


def local_defaults() -> config_dict.ConfigDict:
    """--local.*: the local executor's job resources."""
    return config_dict.ConfigDict(
        dict(
            gpus_per_job=0,  # GPUs each job sees (worker slot i: GPUs i*G .. i*G+G-1); 0: CPU jobs
            timeout_min=7 * 24 * 60,  # a job is signalled (USR2: checkpoint and requeue) signal_delay_s before this
            signal_delay_s=30,
            compilation_cache=True,  # jobs share JAX's persistent compilation cache in jobs_dir/xla_cache
            setup="",
        )
    )  # shell lines run before each job


def slurm_defaults() -> config_dict.ConfigDict:
    """--slurm.*: sbatch parameters of every job (None: the cluster's default)."""
    return config_dict.ConfigDict(
        dict(
            partition=config_dict.placeholder(str),
            account=config_dict.placeholder(str),
            qos=config_dict.placeholder(str),
            constraint=config_dict.placeholder(str),
            gpus_per_job=0,  # over all nodes of a job; one task per GPU
            nodes_per_job=1,
            cpus_per_task=config_dict.placeholder(int),
            mem=config_dict.placeholder(str),  # per node, sbatch syntax (64G)
            timeout_min=24 * 60,
            signal_delay_s=120,  # USR2 this long before the time limit: the job checkpoints and is requeued
            max_requeues=3,  # time limits a job may hit (submitit's max_num_timeout); preemptions do not count
            compilation_cache=True,  # jobs share JAX's persistent compilation cache in jobs_dir/xla_cache
            setup="",
        )
    )  # shell lines run before the job, e.g. 'module load cuda/12.4'


def define_flags() -> None:
    """--executor, --workers, --local.*, --slurm.* (the commands that submit jobs: experiment, extract_flow)."""
    flags.DEFINE_enum(
        "executor",
        "serial",
        KINDS,
        "serial: everything in this process (or this multi-process launch); local: each job a local "
        "process through submitit, --workers at once; slurm: each job a SLURM job (submitit), "
        "submitted with its dependencies",
    )
    flags.DEFINE_integer("workers", 1, "--executor=local: jobs running at once")
    config_flags.DEFINE_config_dict("local", local_defaults(), "--executor=local: resources of each job")
    config_flags.DEFINE_config_dict("slurm", slurm_defaults(), "--executor=slurm: sbatch parameters of each job")


def from_flags() -> "Executor | None":
    """The executor the flags of define_flags() ask for; None for serial."""
    f = flags.FLAGS
    if f.executor == "serial":
        return None
    return Executor(f.executor, workers=f.workers, options=(f.local if f.executor == "local" else f.slurm).to_dict())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """define_flags() for an argparse command that takes --shard I/N: --executor, --shards, --local.*, --slurm.*."""
    group = parser.add_argument_group("jobs (submitit): --shards jobs, each with its --shard I/N")
    group.add_argument(
        "--executor",
        choices=KINDS,
        default="serial",
        help="serial: this process does it all (its --shard); local: --shards local processes at once; "
        "slurm: a job array of --shards jobs",
    )
    group.add_argument("--shards", type=int, default=1, help="--executor local|slurm: jobs, shard I of N each")
    for kind, defaults in (("local", local_defaults()), ("slurm", slurm_defaults())):
        for key in defaults:
            kind_of = defaults.get_type(key)
            group.add_argument(
                f"--{kind}.{key}",
                dest=f"{kind}.{key}",
                default=defaults[key],
                help=argparse.SUPPRESS,
                type=(lambda v: v.lower() in ("1", "true", "yes")) if kind_of is bool else kind_of,
            )


def from_args(args: argparse.Namespace) -> "Executor | None":
    """The executor the arguments of add_arguments() ask for (None for serial); locally all shards run at once."""
    if args.executor == "serial":
        return None
    options = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith(args.executor + ".")}
    if options.get("nodes_per_job", 1) != 1:
        raise ValueError(
            "--slurm.nodes_per_job: a shard job is one process on one node; more shards (--shards) "
            "spread the work further"
        )
    return Executor(args.executor, workers=args.shards, options=options, tasks=1)


class JobsFailed(RuntimeError):
    """Jobs ended without finishing; the message names each one's log."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One job of a graph: `fn()` runs it; it starts after the nodes named in `after`; `done` is its marker file."""

    name: str  # unique in the graph; names its record directory jobs_dir/<name> (and the SLURM job)
    fn: Callable
    after: tuple[str, ...]
    done: str

    def finished(self) -> bool:
        return os.path.exists(self.done)


def _submissions_path(jobs_dir: str, name: str) -> str:
    return os.path.join(jobs_dir, name, "submitted.json")


def submissions(jobs_dir: str, name: str) -> list[dict]:
    """Every submission of node `name` in jobs_dir, oldest first."""
    path = _submissions_path(jobs_dir, name)
    return (
        paths.read_json(path, "it records the jobs submitted for this stage: delete it once none of them runs")
        if os.path.exists(path)
        else []
    )


def attempts(jobs_dir: str, name: str) -> list[dict]:
    """Every run of node `name`'s jobs (a requeued job runs again), by start time."""
    folder = os.path.join(jobs_dir, name)
    found = (
        [
            paths.read_json(os.path.join(folder, f), "it records one run of a job: delete it")
            for f in os.listdir(folder)
            if f.startswith("attempt-")
        ]
        if os.path.isdir(folder)
        else []
    )
    return sorted(found, key=lambda a: a["start"])


class Attempt:
    """A job's record of one run of it: jobs_dir/<name>/attempt-<job id>-<pid>.json, written at start and end."""

    def __init__(self, jobs_dir: str, name: str, **fields):
        try:
            job_id = submitit.JobEnvironment().job_id
        except RuntimeError:  # not in a submitit job (called directly)
            job_id = "none"
        self.record = dict(
            name=name,
            job_id=job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            start=time.time(),
            end=None,
            outcome="running",
            **fields,
        )
        self.path = os.path.join(jobs_dir, name, f"attempt-{job_id}-{os.getpid()}.json")
        self._write()

    def end(self, outcome: str, **fields) -> None:
        """Record how this run ended: done, preempted, stopped or error."""
        self.record.update(end=time.time(), outcome=outcome, **fields)
        self.record["wall_s"] = self.record["end"] - self.record["start"]
        self._write()

    def _write(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        paths.write_atomic(self.path, json.dumps(self.record, indent=1))


def summary(jobs_dir: str, names) -> list[dict]:
    """Per node that has jobs: job ids, runs, summed wall time of its runs, its last log and the devices it ran on."""
    out = []
    for name in names:
        subs, runs = submissions(jobs_dir, name), attempts(jobs_dir, name)
        if not subs:
            continue
        out.append(
            dict(
                name=name,
                executor=subs[-1]["executor"],
                job_ids=[s["job_id"] for s in subs],
                attempts=len(runs),
                wall_s=sum(a.get("wall_s") or 0.0 for a in runs),
                log=subs[-1]["log"]["err"],
                devices=sorted({a["device"] for a in runs if a.get("device")}),
            )
        )
    return out


class _LocalProcess:
    """A local job submitted by an earlier driver: running while its controller process is (same host only)."""

    def __init__(self, record: dict):
        self.job_id, self.record = record["job_id"], record

    def done(self) -> bool:
        return not (
            self.record.get("host") == socket.gethostname()
            and workdir_lock.process_alive(int(self.job_id), self.record.get("pid_start"))
        )


class Executor:
    """submitit's LocalExecutor or SlurmExecutor driving a graph of Nodes (see the module doc)."""

    def __init__(self, kind: str, *, workers: int = 1, options: dict | None = None, tasks: int | None = None):
        """tasks: processes per job (default: one per GPU on SLURM, one locally; see tasks_per_job)."""
        if kind not in KINDS[1:]:
            raise ValueError(f"executor {kind!r}: expected one of {KINDS[1:]} (serial needs no executor)")
        defaults = (local_defaults() if kind == "local" else slurm_defaults()).to_dict()
        unknown = sorted(set(options or {}) - set(defaults))
        if unknown:
            raise ValueError(f"--{kind}.{unknown[0]}: not an option of the {kind} executor ({sorted(defaults)})")
        self.kind, self.workers, self.options, self.tasks = kind, workers, {**defaults, **(options or {})}, tasks
        o = self.options
        if workers < 1:
            raise ValueError(f"--workers={workers}: expected at least 1 job at once")
        if kind == "slurm" and (o["nodes_per_job"] < 1 or o["gpus_per_job"] % o["nodes_per_job"]):
            raise ValueError(
                f"--slurm.gpus_per_job={o['gpus_per_job']} over --slurm.nodes_per_job="
                f"{o['nodes_per_job']}: expected at least 1 node and the same GPU count on each"
            )
        if kind == "slurm" and submitit.SlurmExecutor.affinity() < 0:
            raise ValueError(
                "--executor=slurm: no srun on PATH; run this command where sbatch and srun work (a SLURM login node)"
            )

    @property
    def tasks_per_job(self) -> int:
        """Processes of one job: one per GPU on SLURM (one a node without GPUs), one locally."""
        if self.tasks is not None:
            return self.tasks
        if self.kind == "local":
            return 1
        return max(self.options["gpus_per_job"], self.options["nodes_per_job"])

    def describe(self) -> str:
        """'local, 2 workers' / 'slurm, partition gpu, 2 nodes x 4 GPUs a job' (for results footnotes)."""
        o = self.options
        if self.kind == "local":
            return f"local, {self.workers} worker(s), {o['gpus_per_job']} GPU(s) a job"
        per_node = o["gpus_per_job"] // o["nodes_per_job"]
        return (
            f"slurm, partition {o['partition'] or '(default)'}, {o['nodes_per_job']} node(s) x {per_node} GPU(s) a job"
        )

    def _submitit(self, jobs_dir: str, *, name: str, slot: int = 0, dependency: str | None = None):
        """A submitit executor set up for one job (worker slot `slot` locally; sbatch --dependency on SLURM)."""
        o, folder = self.options, os.path.join(jobs_dir, SUBMITIT)
        # Jobs import the ego_jax (and configs/) this driver runs, installed or not.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"]
        if o["compilation_cache"]:  # each job is a fresh process: it compiles only what no job before it did
            cache = shlex.quote(os.path.join(os.path.abspath(jobs_dir), XLA_CACHE))
            least = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # default 1 s; model inits are many short ones
            setup += [
                f"export JAX_COMPILATION_CACHE_DIR=${{JAX_COMPILATION_CACHE_DIR:-{cache}}}",
                f"export {least}=${{{least}:-0}}",
            ]
        setup += [o["setup"]] if o["setup"] else []
        if self.kind == "local":
            ex = submitit.LocalExecutor(folder)
            gpus = o["gpus_per_job"]
            ex.update_parameters(
                timeout_min=o["timeout_min"],
                signal_delay_s=o["signal_delay_s"],
                gpus_per_node=gpus,
                visible_gpus=tuple(range(slot * gpus, (slot + 1) * gpus)),
                setup=setup,
            )
            return ex
        ex = submitit.SlurmExecutor(folder, max_num_timeout=o["max_requeues"])
        nodes, gpus = o["nodes_per_job"], o["gpus_per_job"]
        optional = {
            k: o[k] for k in ("partition", "account", "qos", "constraint", "cpus_per_task", "mem") if o[k] is not None
        }
        ex.update_parameters(
            job_name=name,
            time=o["timeout_min"],
            nodes=nodes,
            ntasks_per_node=self.tasks_per_job // nodes,
            gpus_per_node=gpus // nodes or None,
            signal_delay_s=o["signal_delay_s"],
            setup=setup,
            dependency=dependency,
            additional_parameters={"kill-on-invalid-dep": "yes"},
            **optional,
        )
        return ex

    def _submit(self, node: Node, jobs_dir: str, *, slot: int, live: dict):
        """Submit `node` and record it (with the last job of each node it runs after); -> the submitit Job.

        live: the running jobs by node name; on SLURM the job waits for those it runs after (afterok).
        """
        waits = [str(live[d].job_id) for d in node.after if d in live]
        dependency = f"afterok:{':'.join(waits)}" if waits else None
        job = self._submitit(jobs_dir, name=node.name, slot=slot, dependency=dependency).submit(node.fn)
        self._record(node, job, jobs_dir, slot=slot, live=live, dependency=dependency)
        return job

    def _submit_array(self, nodes: list[Node], jobs_dir: str, *, name: str) -> list:
        """Submit nodes that wait for no job as one SLURM job array (submitit's executor.batch()); -> their Jobs."""
        ex = self._submitit(jobs_dir, name=name)
        with ex.batch():
            jobs = [ex.submit(node.fn) for node in nodes]
        for node, job in zip(nodes, jobs):
            self._record(node, job, jobs_dir, slot=0, live={}, dependency=None)
        return jobs

    def _record(self, node: Node, job, jobs_dir: str, *, slot: int, live: dict, dependency: str | None) -> None:
        """Add the submission of `node` as `job` to jobs_dir/<name>/submitted.json."""
        after = {
            d: str(live[d].job_id) if d in live else (submissions(jobs_dir, d) or [{}])[-1].get("job_id")
            for d in node.after
        }
        record = dict(
            executor=self.kind,
            job_id=str(job.job_id),
            submitted=time.time(),
            host=socket.gethostname(),
            slot=slot,
            after=after,
            dependency=dependency,
            log=dict(out=str(job.paths.stdout), err=str(job.paths.stderr)),
        )
        if self.kind == "local":  # its id is the controller's pid: keep the start time, to know it after a pid reuse
            record["pid_start"] = workdir_lock.start_time(int(job.job_id))
        path = _submissions_path(jobs_dir, node.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        paths.write_atomic(path, json.dumps(submissions(jobs_dir, node.name) + [record], indent=1))
        logging.info(
            "%s: submitted job %s%s, log %s",
            node.name,
            job.job_id,
            f" ({dependency})" if dependency else "",
            record["log"]["err"],
        )

    def _find(self, record: dict, jobs_dir: str):
        """The job of an earlier driver's submission record, to wait for it."""
        if record["executor"] == "local":
            return _LocalProcess(record)
        return submitit.SlurmJob(os.path.join(jobs_dir, SUBMITIT), record["job_id"])

    def run(self, nodes: list[Node], jobs_dir: str, *, stop, array: str | None = None) -> bool:
        """Run every unfinished node (listed after the nodes it runs after); -> True when all are done.

        array: on SLURM, submit the nodes that wait for no job as one job array of that name (alike jobs: shards).

        False when `stop.requested` (a signal to the driver): its jobs go on, and a rerun finds them. JobsFailed
        (after everything that could run has) when jobs ended without finishing.
        """
        by_name = {n.name: n for n in nodes}
        live, slots, failed = {}, {}, {}  # name -> job, worker slot, why it did not finish
        for node in nodes:
            record = (submissions(jobs_dir, node.name) or [None])[-1]
            if node.finished() or record is None:
                continue
            job = self._find(record, jobs_dir)
            if not job.done():
                live[node.name], slots[node.name] = job, record.get("slot", 0)
                logging.info(
                    "%s: job %s (submitted by an earlier driver) is still running; waiting for it",
                    node.name,
                    record["job_id"],
                )
            else:
                logging.warning(
                    "%s: job %s ended without finishing; submitting it again. Its log: %s",
                    node.name,
                    record["job_id"],
                    record["log"]["err"],
                )
        while True:
            for name, job in list(live.items()):
                if job.done():
                    del live[name], slots[name]
                    if not by_name[name].finished():
                        failed[name] = f"job {job.job_id} ended without finishing: {_log(jobs_dir, name)}"
                        logging.error("%s: %s", name, failed[name])
            batch = []  # array members of this pass
            for node in nodes:
                if node.name in live or node.name in failed or node in batch or node.finished():
                    continue
                blocked = [d for d in node.after if d in failed]
                if blocked:
                    failed[node.name] = f"not run: it starts from {blocked[0]}, which did not finish"
                    continue
                if not all(by_name[d].finished() or (self.kind == "slurm" and d in live) for d in node.after):
                    continue
                if self.kind == "local" and len(live) >= self.workers:
                    break
                if array and self.kind == "slurm" and not any(d in live for d in node.after):
                    batch.append(node)
                    continue
                slot = min(set(range(self.workers)) - set(slots.values())) if self.kind == "local" else 0
                live[node.name] = self._submit(node, jobs_dir, slot=slot, live=live)
                slots[node.name] = slot
            if batch:
                for node, job in zip(batch, self._submit_array(batch, jobs_dir, name=array)):
                    live[node.name], slots[node.name] = job, 0
            if not live:
                break
            if stop.requested:
                logging.warning(
                    "stopped: %d job(s) still running (%s); rerun the same command to wait for them",
                    len(live),
                    ", ".join(str(j.job_id) for j in live.values()),
                )
                return False
            time.sleep(POLL_S[self.kind])
        if failed:
            raise JobsFailed(
                f"{len(failed)} job(s) did not finish; rerun the same command to submit them again:\n  "
                + "\n  ".join(f"{name}: {why}" for name, why in failed.items())
            )
        return True


class Command(submitit.helpers.Checkpointable):
    """A job running an ego_jax command: `main(argv)` of `module`; its DONE marker `done` written when it returns 0.

    A command that skips the work it finished (extract_flow) resumes when submitit requeues it (checkpoint():
    the same command again).
    """

    def __init__(self, module: str, argv: list[str], done: str):
        self.module, self.argv, self.done = module, argv, done

    def __call__(self) -> None:
        name = os.path.basename(os.path.dirname(self.done))
        attempt = Attempt(os.path.dirname(os.path.dirname(self.done)), name, argv=self.argv)
        code = importlib.import_module(self.module).main(self.argv)
        attempt.end("done" if not code else "error")
        if code:
            sys.exit(code)
        paths.write_atomic(self.done, json.dumps(dict(argv=self.argv)))


def shards(module: str, argv: list[str], count: int, jobs_dir: str) -> list[Node]:
    """A command taking --shard I/N as `count` Nodes (markers jobs_dir/shard-I-of-N/DONE), for run(array=...)."""
    out = []
    for i in range(count):
        name = f"shard-{i}-of-{count}"
        done = os.path.join(jobs_dir, name, "DONE")
        out.append(Node(name=name, fn=Command(module, [*argv, f"--shard={i}/{count}"], done), after=(), done=done))
    return out


def job_argv(argv: list[str]) -> list[str]:
    """A command line without add_arguments()'s arguments and --shard (a shard job's own command line)."""
    ours = ("--executor", "--shards", "--shard", "--local.", "--slurm.")
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in ours[:3] or arg.startswith(ours[3:]):
            skip = "=" not in arg  # '--shards 4': its value is the next word
        else:
            out.append(arg)
    return out


class _Stop:
    """SIGINT / SIGTERM to a driver: stop waiting (its jobs go on)."""

    requested = False

    def __call__(self, signum, frame):
        self.requested = True


def run_sharded(executor: "Executor", module: str, argv: list[str], count: int, jobs_dir: str) -> int:
    """Run command `module` (argv: its command line) as `count` shard jobs of `executor` -> an exit status.

    0 when every shard is done; EXIT_STOPPED (75) when stopped (rerun the command: finished shards are skipped,
    running ones waited for); JobsFailed when shards failed.
    """
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        done = executor.run(
            shards(module, job_argv(argv), count, jobs_dir), jobs_dir, stop=stop, array=module.rsplit(".", 1)[-1]
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if done else EXIT_STOPPED


def _log(jobs_dir: str, name: str) -> str:
    return submissions(jobs_dir, name)[-1]["log"]["err"]


def preempt_signal() -> int:
    """The signal submitit's jobs take as 'checkpoint and requeue' (USR2, or $SUBMITIT_PREEMPT_SIGNAL)."""
    return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
