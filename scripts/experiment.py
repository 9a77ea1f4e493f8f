"""Run an experiment suite: every run of a table, each stage trained once, hyperparameters chosen on validation.

  python scripts/experiment.py --suite configs/experiments/step1.py[:args] --workdir W [--dry_run]

W/stages/<identity>/ holds each distinct stage (trained once, shared by every run that needs it),
W/runs/<row>/<column>/<run>/ each run's workdir (symlinks into W/stages), W/results.md, W/results.json,
W/results.png (bar chart) and W/per_class_diff.png; the MS suite adds the validation table and W/cam/.
Rerun the same command after a kill: finished stages are skipped and an interrupted one resumes.
--dry_run prints every job, the stages it shares and the train steps per stage, and trains nothing.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ego_jax.train import cli  # noqa: E402

config_flags.DEFINE_config_file("suite", None, "suite config file[:key=value,...] (configs/experiments/)",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "suite workdir: shared stage store, run workdirs, results")
flags.DEFINE_bool("dry_run", False, "print the jobs, shared stages and steps per stage; train nothing")
flags.mark_flags_as_required(["suite", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    """The single entry point: dry run, or run the suite and print its results table (one process; the suite
    writes its store, links and reports from this process)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    cli.setup_logs()
    from ego_jax.experiments import report, runner  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.train.workdir_lock import WorkdirLocked  # noqa: PLC0415

    workdir = os.path.abspath(FLAGS.workdir)
    try:
        if FLAGS.dry_run:
            print(runner.dry_run(FLAGS.suite, workdir))
            return
        results = runner.run_suite(FLAGS.suite, workdir)
    except (OSError, ValueError, KeyError, FloatingPointError, WorkdirLocked) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    if results is None:
        logging.warning("stopped before the end; rerun the same command to resume")
        return
    print(report.markdown(results))
    print(f"-> {workdir}/results.md, results.json, results.png")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
