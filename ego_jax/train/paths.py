"""Workdir paths as etils.epath.Path: local, or on a filesystem epath reaches (what orbax and tfds take too)."""

import json
import os

from etils import epath


def absolute(path: str | os.PathLike) -> epath.Path:
    """`path` -> epath.Path, a local relative path made absolute (orbax wants absolute); URLs unchanged."""
    path = epath.Path(path)
    return path if path.is_absolute() else path.absolute()


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on a filesystem (local or mounted) rather than a bucket URL (gs://, s3://)."""
    return "://" not in os.fspath(path)


def write_atomic(path: epath.Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader, or a crash, never sees half of it.

    Works on every epath filesystem (a bucket, which cannot append or rename atomically, still creates each object
    whole).
    """
    path = epath.Path(path)
    tmp = path.parent / (path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        if hasattr(f, "fileno"):  # a local file: on disk before the rename
            os.fsync(f.fileno())
    tmp.replace(path)


def write_json(path: epath.Path, obj) -> None:
    """`obj` as indented JSON to `path` through write_atomic."""
    write_atomic(path, json.dumps(obj, indent=1) + "\n")


def read_json(path: epath.Path, remedy: str):
    """The JSON value in `path`; a file that does not parse raises ValueError naming it and `remedy` (what to do)."""
    path = epath.Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({len(text)} bytes; {e}): {remedy}") from None


def read_done(stage_dir: str | os.PathLike) -> dict:
    """W/<stage>/DONE's record (step, epochs, accuracy); one that does not parse is named with what to do."""
    return read_json(
        epath.Path(stage_dir) / "DONE",
        "delete it and rerun the training command: it evaluates the stage's final checkpoint again and writes it anew",
    )
