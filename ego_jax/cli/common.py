"""What the absl commands share: launch flags, --help with the command's own flags and examples, config and flag
errors in one line, and orbax's log noise filtered out.

    def main(argv=None):
        common.run(_train, __doc__, define_flags, argv)

Flags are defined when the command starts, not when its module is imported, so every command module imports
side by side (tests, docs) and --help needs neither jax nor TensorFlow.
"""
import contextlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

HELP = ("-h", "--help", "--helpshort", "-?")


def define_launch_flags() -> None:
    """The multi-process launch flags: --coordinator_address, --num_processes, --process_id, --distributed."""
    flags.DEFINE_string("coordinator_address", None,
                        "multi-process: host:port of process 0 (with --num_processes and --process_id)")
    flags.DEFINE_integer("num_processes", None, "multi-process: how many processes run this job")
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index, 0 .. num_processes - 1")
    flags.DEFINE_enum("distributed", "auto", ("auto", "off"),  # distributed.MODES (importing it imports jax)
                      "auto: multi-process when the flags above are given or JAX detects a TPU pod slice, a SLURM "
                      "job step or an Open MPI launch; off: one process, whatever the environment says")


def initialize_from_flags() -> None:
    """distributed.initialize() with the parsed launch flags; bad flags: absl's usage error."""
    from ego_jax.train import distributed  # noqa: PLC0415  (jax: after flag parsing)

    f = flags.FLAGS
    try:
        distributed.initialize(f.coordinator_address, f.num_processes, f.process_id, mode=f.distributed)
    except ValueError as e:
        raise app.UsageError(str(e)) from e


def _message(e: BaseException) -> str:
    # ml_collections wraps a KeyError (whose text is a repr) in an AttributeError: unwrap to the text.
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    return " ".join(str(e.args[0] if len(e.args) == 1 else e).split())


def run(main, doc: str, define_flags, argv: list[str] | None = None) -> None:
    """app.run(main) after define_flags(); -h/--help print `doc` and the flags define_flags() made; a bad --config
    (file argument or override) exits with one line, not a traceback."""
    before = set(flags.FLAGS)
    define_flags()
    own = sorted(set(flags.FLAGS) - before)
    prog = (argv or sys.argv)[0]

    def parse(args: list[str]) -> list[str]:
        if any(a in HELP for a in args[1:]):
            for name in own:
                flags.FLAGS.register_key_flag_for_module(prog, flags.FLAGS[name])
            print(f"{doc.strip()}\n\nflags:\n{flags.FLAGS.module_help(prog)}\n\n(--helpfull: absl's flags too)")
            sys.exit(0)
        try:
            return app.parse_flags_with_usage(args)
        except (AttributeError, KeyError, ValueError, TypeError) as e:
            sys.exit(f"error in the config flags ({' '.join(args[1:])}): {_message(e)}")

    def checked(args: list[str]) -> None:
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments {args[1:]}")
        main(args)

    app.run(checked, argv=argv, flags_parser=parse)


def define_workdir_flags(config_help: str = "config of --workdir (default: W/config.json)") -> None:
    """--config (a config file[:key=value,...]) and --workdir (a training workdir), of the commands reading one."""
    config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    flags.DEFINE_string("workdir", None, "the training workdir (W/<stage>/checkpoints)")


def run_of_flags():
    """The run's specs (ego_jax.specs.RunSpec): --config's, else the one --workdir recorded (W/config.json)."""
    from ego_jax.specs import RunSpec  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.train import workdir  # noqa: PLC0415

    return RunSpec.from_config(flags.FLAGS.config) if flags.FLAGS.config else workdir.workdir_run(flags.FLAGS.workdir)


@contextlib.contextmanager
def one_line_errors(*errors: type[BaseException]):
    """A command's expected `errors` (bad input, missing or damaged files): logged, and exit with 'error: ...'."""
    try:
        yield
    except errors as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")


def setup_logs() -> None:
    """Keep orbax's warnings, not its per-save INFO lines, on absl's log handler."""
    from ego_jax.train.checkpoint import quiet_orbax_logs  # noqa: PLC0415  (jax and orbax: after flag parsing)

    quiet_orbax_logs(logging.get_absl_handler())
