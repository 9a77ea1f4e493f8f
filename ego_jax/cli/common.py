"""What the scripts share: config and flag errors in one line, and orbax's log noise filtered out.

    app.run(main, flags_parser=cli.parse_flags)
"""
import sys

from absl import app, logging


def _message(e: BaseException) -> str:
    # ml_collections wraps a KeyError (whose text is a repr) in an AttributeError: unwrap to the text.
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    return " ".join(str(e.args[0] if len(e.args) == 1 else e).split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad --config (file argument or override) exits with one line, not a traceback."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        sys.exit(f"error in the config flags ({' '.join(argv[1:])}): {_message(e)}")


def setup_logs() -> None:
    """Keep orbax's warnings, not its per-save INFO lines, on absl's log handler."""
    from ego_jax.train.checkpoint import quiet_orbax_logs  # noqa: PLC0415  (jax and orbax: after flag parsing)

    quiet_orbax_logs(logging.get_absl_handler())
