"""Workdir paths as etils.epath.Path: local, or on a filesystem epath reaches (what orbax and tfds take too)."""
import os

from etils import epath


def absolute(path: str | os.PathLike) -> epath.Path:
    """`path` -> epath.Path, a local relative path made absolute (orbax wants absolute); URLs unchanged."""
    path = epath.Path(path)
    return path if path.is_absolute() else path.absolute()
