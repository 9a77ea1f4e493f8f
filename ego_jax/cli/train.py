"""Train every stage of a recipe (installed as ego-jax-train; from a checkout: python scripts/train.py).

  ego-jax-train --config configs/two_stream.py:frames=16 --workdir workdir/two_stream_16
  ego-jax-train --config configs/flow.py --workdir W --config.batch_size=16 --config.stages.flow.epochs=100

Overrides: --config.KEY=VALUE (the config is locked: typos fail).
Finished stages (W/<stage>/DONE) are skipped; an interrupted stage resumes from its newest good checkpoint, if
the keys that determine its result are unchanged (W/<stage>/config.json; --restart_stage NAME starts it over).
One training per workdir (W/.lock). SIGTERM or Ctrl-C saves a checkpoint after the current step and exits with
status 75 (EX_TEMPFAIL: rerun to resume; 0 = every stage done, 1 = an error line); a second Ctrl-C aborts at once.
Multi-process (see README, "Scaling out"): auto-detected on TPU pod slices, SLURM and Open MPI, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on each process; all share one --workdir.
"""

from absl import flags, logging
from ml_collections import config_flags

from ego_jax.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "experiment config file[:key=value,...]", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and DONE markers")
    flags.DEFINE_multi_string(
        "restart_stage", [], "start this stage over (repeatable); its old directory is moved to W/restarted/"
    )
    flags.mark_flags_as_required(["config", "workdir"])
    common.define_launch_flags()


def train(argv: list[str]) -> None:
    common.setup_logs()
    common.initialize_from_flags()
    from ego_jax.specs import RunSpec  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.train import loop, paths  # noqa: PLC0415
    from ego_jax.train.workdir_lock import WorkdirLocked  # noqa: PLC0415

    config, workdir = FLAGS.config, paths.absolute(FLAGS.workdir)
    logging.info("config:\n%s", config)
    with common.one_line_errors(ValueError, FloatingPointError, WorkdirLocked):
        done = loop.train(RunSpec.from_config(config), workdir, restart=tuple(FLAGS.restart_stage))
    if not done:
        common.exit_stopped()


def main(argv: list[str] | None = None) -> None:
    common.run(train, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
