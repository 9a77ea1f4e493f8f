"""Train every stage of a recipe: python scripts/train.py --config configs/two_stream.py[:args] --workdir W.

Overrides: --config.batch_size=16 --config.stages.flow.epochs=100 ... (the config is locked: typos fail).
Finished stages (W/<stage>/DONE) are skipped; an interrupted stage resumes from its last checkpoint.
SIGTERM saves a checkpoint after the current step and exits 0.
Multi-process (see README, "Scaling out"): auto-detected on TPU pod slices, SLURM and Open MPI, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on each process; all share one --workdir.
"""
import logging as std_logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ego_jax.train import distributed, loop  # noqa: E402

config_flags.DEFINE_config_file("config", None, "experiment config file[:key=value,...]", lock_config=True)
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and DONE markers")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


class _QuietOrbax(std_logging.Filter):
    """orbax logs every step of every save at INFO; keep its warnings only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietOrbax())
    distributed.initialize_from_flags()
    config, workdir = flags.FLAGS.config, os.path.abspath(flags.FLAGS.workdir)
    os.makedirs(workdir, exist_ok=True)
    logging.info("config:\n%s", config)
    if distributed.is_writer():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
    try:
        done = loop.train(config, workdir)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    if not done:
        logging.warning("stopped before the end; rerun the same command to resume")


if __name__ == "__main__":
    app.run(main)
