"""Train every stage of a recipe: python scripts/train.py --config configs/two_stream.py[:args] --workdir W.

Overrides: --config.batch_size=16 --config.stages.flow.epochs=100 ... (the config is locked: typos fail).
Finished stages (W/<stage>/DONE) are skipped; an interrupted stage resumes from its newest good checkpoint, if
the keys that determine its result are unchanged (W/<stage>/config.json; --restart_stage NAME starts it over).
One training per workdir (W/.lock). SIGTERM or Ctrl-C saves a checkpoint after the current step and exits 0;
a second Ctrl-C aborts at once.
Multi-process (see README, "Scaling out"): auto-detected on TPU pod slices, SLURM and Open MPI, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on each process; all share one --workdir.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ego_jax.specs import RunSpec  # noqa: E402
from ego_jax.train import cli, distributed, loop, paths  # noqa: E402
from ego_jax.train.workdir_lock import WorkdirLocked  # noqa: E402

config_flags.DEFINE_config_file("config", None, "experiment config file[:key=value,...]", lock_config=True)
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and DONE markers")
flags.DEFINE_multi_string("restart_stage", [], "start this stage over (repeatable); its old directory is moved "
                          "to W/restarted/")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    cli.setup_logs()
    distributed.initialize_from_flags()
    config, workdir = flags.FLAGS.config, paths.absolute(flags.FLAGS.workdir)
    logging.info("config:\n%s", config)
    try:
        done = loop.train(RunSpec.from_config(config), workdir, restart=tuple(flags.FLAGS.restart_stage))
    except (FileNotFoundError, ValueError, FloatingPointError, WorkdirLocked) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        sys.exit(f"aborted: {e}")
    if not done:
        logging.warning("stopped before the end; rerun the same command to resume")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
