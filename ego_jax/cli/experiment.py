"""Run an experiment suite: every run of a table, each stage trained once, hyperparameters chosen on validation
(installed as ego-jax-experiment; from a checkout: python scripts/experiment.py).

  ego-jax-experiment --suite configs/experiments/step1.py:seeds=3 --workdir workdir/step1 --dry_run
  ego-jax-experiment --suite configs/experiments/step1.py[:args] --workdir W
      [--executor serial|local|slurm --workers N --local.gpus_per_job G --slurm.partition P --slurm.gpus_per_job G
       --slurm.nodes_per_job K --slurm.cpus_per_task C --slurm.timeout_min T ...]

W/stages/<identity>/ holds each distinct stage (trained once, shared by every run that needs it),
W/runs/<row>/<column>/<run>/ each run's workdir (symlinks into W/stages), W/results.md, W/results.json,
W/results.png (bar chart; .svg and .pdf beside it) and W/per_class_diff.png; the MS suite adds the validation
table and W/cam/.
Rerun the same command after a kill: finished stages are skipped and an interrupted one resumes.
--dry_run prints every job, the stages it shares and the train steps per stage, and trains nothing.
--rekey (no --suite) renames the stage directories of a store written by an earlier ego_jax, whose keys differ
(a suite run on such a store is refused with this command).
Multi-process: ego-jax-train's launch flags (auto-detected on TPU pod slices, SLURM and Open MPI, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on each process); W on a filesystem all share.
--executor local|slurm: every distinct stage is a job (submitit: local processes, --workers at once, or SLURM jobs
with their dependencies); this process submits them, waits and writes the results. Rerun it after a crash or
logout: it finds finished stages and running jobs (W/jobs/) and resubmits the ones that ended unfinished.
"""

from absl import app, flags
from ml_collections import config_flags

from ego_jax.cli import common
from ego_jax.experiments import executors

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file(
        "suite", None, "suite config file[:key=value,...] (configs/experiments/)", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "suite workdir: shared stage store, run workdirs, results")
    flags.DEFINE_bool("dry_run", False, "print the jobs, shared stages and steps per stage; train nothing")
    flags.DEFINE_bool("rekey", False, "rename the store's stage directories keyed by an earlier ego_jax; train nothing")
    flags.mark_flags_as_required(["workdir"])
    common.define_launch_flags()
    executors.define_flags()


def experiment(argv: list[str]) -> None:
    """Dry run (one process), or run the suite (with every process of a launch) and print its results table."""
    common.setup_logs()
    from ego_jax.data import prepare  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.experiments import plan, report, runner  # noqa: PLC0415
    from ego_jax.experiments.suite import SuiteSpec  # noqa: PLC0415
    from ego_jax.train import distributed  # noqa: PLC0415
    from ego_jax.train.workdir_lock import WorkdirLocked, run_lock  # noqa: PLC0415

    if FLAGS.suite is None and not FLAGS.rekey:
        raise app.UsageError("--suite is required (unless --rekey)")
    with common.one_line_errors(
        ValueError, KeyError, FloatingPointError, WorkdirLocked, prepare.BuildRunning, executors.JobsFailed
    ):
        if FLAGS.rekey:
            workdir = runner.filesystem_workdir(FLAGS.workdir)
            with run_lock(workdir):
                renamed = plan.rekey(workdir)
            print(
                f"re-keyed {len(renamed)} stage(s) of {workdir}/stages"
                + "".join(f"\n  {old} -> {new}" for old, new in renamed.items())
            )
            return
        suite = SuiteSpec.from_config(FLAGS.suite)
        if FLAGS.dry_run:
            print(runner.dry_run(suite, FLAGS.workdir))
            return
        executor = executors.from_flags()
        if executor is None:  # the jobs of an executor are launches of their own
            common.initialize_from_flags()
        results = runner.run_suite(suite, FLAGS.workdir, executor=executor)
    if results is None:
        common.exit_stopped()
    elif distributed.is_writer():
        print(report.markdown(results))
        print(f"-> {runner.filesystem_workdir(FLAGS.workdir)}/results.md, results.json, results.png")


def main(argv: list[str] | None = None) -> None:
    common.run(experiment, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
