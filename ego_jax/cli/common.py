"""What the absl commands share: launch flags, --help with the command's own flags and examples, config, flag and
run errors in one line, the exit status of a stopped run, and orbax's log noise filtered out.

    def main(argv=None):
        common.run(_train, __doc__, define_flags, argv)

Flags are defined when the command starts, not when its module is imported, so every command module imports
side by side (tests, docs) and --help needs neither jax nor TensorFlow.
"""

import contextlib
import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import is_config_flag  # (not re-exported by the package)

HELP = ("-h", "--help", "--helpshort", "-?")
# Exit status of a run stopped (SIGTERM, Ctrl-C) with a checkpoint before its end: os.EX_TEMPFAIL, "try again".
# Rerunning the same command resumes it, so a scheduler requeues a job that exits with it (0: finished; 1: an
# error to fix first, printed as one `error:` line).
EXIT_STOPPED = 75


def define_launch_flags() -> None:
    """The multi-process launch flags: --coordinator_address, --num_processes, --process_id, --distributed."""
    flags.DEFINE_string(
        "coordinator_address", None, "multi-process: host:port of process 0 (with --num_processes and --process_id)"
    )
    flags.DEFINE_integer("num_processes", None, "multi-process: how many processes run this job")
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index, 0 .. num_processes - 1")
    flags.DEFINE_enum(
        "distributed",
        "auto",
        ("auto", "off"),  # distributed.MODES (importing it imports jax)
        "auto: multi-process when the flags above are given or JAX detects a TPU pod slice, a SLURM "
        "job step or an Open MPI launch; off: one process, whatever the environment says",
    )


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


# What to do about an OSError of a path, by errno (the path and the system's reason come first).
_REMEDY = {
    errno.EACCES: "make it writable, or use a path you may write to",
    errno.EPERM: "make it writable, or use a path you may write to",
    errno.EROFS: "its filesystem is read-only: use a path on a writable one",
    errno.ENOSPC: "free space on that disk (or use a path on another), then rerun the same command",
    errno.EDQUOT: "free space in your quota (or use a path on another disk), then rerun the same command",
    errno.EEXIST: "a file stands where a directory is expected: use another path",
    errno.ENOTDIR: "a file stands where a directory is expected: use another path",
    errno.EISDIR: "a directory stands where a file is expected: use another path",
}


def error_line(e: BaseException) -> str:
    """The message an `error:` exit prints: an OSError names its path, the reason and what to do."""
    if isinstance(e, OSError) and e.strerror:
        if e.filename is None:  # ego_jax's own OSErrors: the whole message
            return e.strerror
        return f"{e.filename}: {e.strerror}" + (f"; {_REMEDY[e.errno]}" if e.errno in _REMEDY else "")
    return str(e)


@contextlib.contextmanager
def one_line_errors(*errors: type[Exception]):
    """A command's expected errors (an OSError, or one of `errors`: bad input, missing or damaged files): logged,
    and exit with one `error:` line (status 1); Ctrl-C (a second one, while a run saves): 'aborted'."""
    try:
        yield
    except KeyboardInterrupt as e:
        sys.exit(f"aborted: {e}" if str(e) else "aborted")
    except (OSError, *errors) as e:
        logging.error("%s", error_line(e))
        sys.exit(f"error: {error_line(e)}")


def exit_stopped() -> None:
    """Say that the run stopped before its end and exit with EXIT_STOPPED."""
    logging.warning("stopped before the end; rerun the same command to resume (exit status %d)", EXIT_STOPPED)
    sys.exit(EXIT_STOPPED)


def _config_files(args: list[str]):
    """(flag name, file) of each config-file flag in args: --config=FILE[:ARGS] or --config FILE[:ARGS]."""
    names = {name for name in flags.FLAGS if is_config_flag(flags.FLAGS[name])}
    for i, arg in enumerate(args):
        name, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in names:
            yield name, (value if eq else (args[i + 1] if i + 1 < len(args) else "")).split(":", 1)[0]


def run(main, doc: str, define_flags, argv: list[str] | None = None) -> None:
    """app.run(main) after define_flags(); -h/--help print `doc` and the flags define_flags() made; a bad --config
    (missing file, file argument or override) exits with one line, not a traceback."""
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
        # A missing config file would fail only when the config is first read, in a long traceback.
        for name, path in _config_files(args[1:]):
            if not os.path.isfile(path):
                sys.exit(
                    f"error: --{name}: no config file {os.path.abspath(path)!r}; give the path of one (for "
                    "example configs/quickstart.py)"
                )
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


def setup_logs() -> None:
    """Keep orbax's warnings, not its per-save INFO lines, on absl's log handler; drop the reports of a failed
    save's abandoned writes."""
    from ego_jax.train.checkpoint import quiet_orbax_logs  # noqa: PLC0415  (jax and orbax: after flag parsing)

    quiet_orbax_logs(logging.get_absl_handler())
    default = sys.unraisablehook

    def unraisable(u):
        # orbax closes its event loop when a save fails (a full disk); tensorstore's writes still in flight then
        # report to the closed loop as they finish, each a traceback. The save's own error is reported.
        if not (u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed"):
            default(u)

    sys.unraisablehook = unraisable
