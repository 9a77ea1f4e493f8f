"""tfds's download_and_prepare, one build at a time per dataset folder, after the leftovers of an interrupted one.

tfds writes a build into <data_dir>/<name>/<config>/incomplete.XXXXXX_<version>/ and renames it into place at the
end; it deletes that folder when the build raises, but a killed build (SIGTERM, SIGKILL, a preempted VM) leaves it
behind, as large as the part it wrote. A build holds an flock on <data_dir>/<name>/<config>/.build.lock (released
by the kernel however the process ends), so a folder left there while no build holds the lock is a dead build's,
and the next build removes it. A bucket data_dir has no flock: its leftovers are named, not deleted.
"""

import contextlib
import fcntl
import logging
import os
import shutil

from etils import epath

log = logging.getLogger("ego_jax")

INCOMPLETE = "incomplete.*"  # tensorflow_datasets.core.constants.INCOMPLETE_PREFIX + '*'
LOCK = ".build.lock"


class BuildRunning(RuntimeError):
    """Another process is building the same dataset config into the same data_dir."""


def leftovers(builder) -> list[epath.Path]:
    """The incomplete.* folders of builds of this dataset config in its data_dir (a running or a dead build's)."""
    folder = epath.Path(builder.data_dir).parent
    return sorted(folder.glob(INCOMPLETE)) if folder.exists() else []


def _size(path: epath.Path) -> int:
    return sum((p / f).stat().length for p, _, files in path.walk() for f in files)


@contextlib.contextmanager
def _build_lock(folder: epath.Path):
    """Exclusive flock on folder/.build.lock for the build (BuildRunning if another process holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.fspath(folder / LOCK), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildRunning(
                f"another process is building into {folder} (it holds {folder / LOCK}); wait for it "
                "to finish, or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download_and_prepare(builder, **kwargs) -> None:
    """builder.download_and_prepare(**kwargs) under the folder's build lock, removing dead builds' folders first."""
    folder = epath.Path(builder.data_dir).parent
    if "://" in os.fspath(folder):  # a bucket: no lock to tell a dead build from a running one
        for path in leftovers(builder):
            log.warning(
                "%s looks like the folder of an interrupted build; delete it if no build of %s is running", path, folder
            )
        builder.download_and_prepare(**kwargs)
        return
    with _build_lock(folder):
        for path in leftovers(builder):
            size = _size(path)
            shutil.rmtree(os.fspath(path))
            log.warning("removed %s (%.1f MB), left by an interrupted build", path, size / 1e6)
        builder.download_and_prepare(**kwargs)
