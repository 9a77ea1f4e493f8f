"""One writer per workdir: W/.lock names the training process that holds it (pid, host, start, command).

    with WorkdirLock(workdir):          # WorkdirLocked (naming the holder) if another live process holds it
        ...                             # train: the only process writing checkpoints, metrics and DONE in W
    holder(workdir)                     # -> the live holder's record, or None (readers: evaluation, plots)

A lock left by a crash (SIGKILL, power loss) is stale when its process no longer runs on this host (pid gone,
or the pid now belongs to a process started later); the next writer takes it over with a warning. A lock from
another host cannot be checked from here: the message says how to remove it once that run is known to be gone.
Several processes of one multi-process run share one lock: process 0 takes it for all of them.
W/.lock.guard stays behind: an empty file that serialises takeovers on one host (flock).
"""
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
import uuid

LOCK = ".lock"


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir; the message names it and what to do."""


def _start_time(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), to tell a reused pid from the locker."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(record: dict) -> bool:
    """Whether the process of a lock record still runs (True when that cannot be checked from this host)."""
    if record.get("host") != socket.gethostname():
        return True
    pid = int(record.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    start = _start_time(pid)
    return start is None or record.get("pid_start") in (None, start)


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or left empty by a crash between create and write


def describe(record: dict) -> str:
    """Lock record -> 'pid 123 on host h since 2026-01-01 10:00:00 UTC (python scripts/train.py ...)'."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("time", 0)))
    return f"pid {record.get('pid')} on host {record.get('host')} since {since} ({record.get('command', '?')})"


def holder(workdir: str) -> dict | None:
    """The record of the live process holding `workdir`, or None (free, or a stale lock)."""
    record = _read(os.path.join(workdir, LOCK))
    return record if record and _alive(record) else None


class WorkdirLock:
    """Exclusive writer lock on a workdir (context manager); acquire() raises WorkdirLocked if held."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK)
        self.record = None

    def acquire(self) -> "WorkdirLock":
        """Take the lock (taking over a stale one) -> self; WorkdirLocked naming the holder if it is alive."""
        os.makedirs(self.workdir, exist_ok=True)
        record = dict(pid=os.getpid(), host=socket.gethostname(), pid_start=_start_time(os.getpid()),
                      time=time.time(), command=" ".join([os.path.basename(sys.executable), *sys.argv])[:300],
                      token=uuid.uuid4().hex)
        # Takeovers are serialised on this host by flock on a guard file, so two starters never both remove
        # a stale lock and then each other's fresh one.
        with open(self.path + ".guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                for attempt in range(20):
                    try:
                        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        other = _read(self.path)
                        if other is None:
                            continue
                        if other == {} and attempt < 10:  # a starter between create and write: give it a moment
                            time.sleep(0.1)
                            continue
                        if other and _alive(other):
                            raise WorkdirLocked(
                                f"workdir {self.workdir} is in use by {describe(other)}. Wait for it to finish or "
                                f"stop it (kill -TERM {other.get('pid')}: it saves and exits); two runs in one "
                                f"workdir would overwrite each other's checkpoints. If that run is gone (another "
                                f"host cannot be checked from here), remove {self.path}") from None
                        logging.warning("workdir %s: taking over the stale lock of %s (that process is gone)",
                                        self.workdir, describe(other) if other else "a process that crashed")
                        os.replace(self.path, self.path + ".stale")
                        continue
                    with os.fdopen(fd, "w") as f:
                        json.dump(record, f)
                    self.record = record
                    return self
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        raise WorkdirLocked(f"could not take {self.path} (it keeps changing); remove it if no run uses {self.workdir}")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.record is not None:
            current = _read(self.path)
            if current and current.get("token") == self.record["token"]:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
            self.record = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
