"""One writer per workdir: W/.lock names the run that holds it (pid, host, start, command) and is renewed while
it runs, on a local disk, a shared filesystem or a bucket (paths through etils.epath).

    with WorkdirLock(workdir):          # WorkdirLocked (naming the holder) if another live run holds it
        ...                             # train: the only process writing checkpoints, metrics and DONE in W
    holder(workdir)                     # -> the live holder's record, or None (readers: evaluation, plots)
    with run_lock(workdir): ...         # every process of a multi-process run: process 0 holds the lock for all

A lock left by a crash (SIGKILL, power loss, a preempted VM) is stale when its process no longer runs on this
host (pid gone, or the pid now belongs to a process started later) or, for a holder on another host, when it
has not been renewed for LEASE_S (the holder renews it every LEASE_S / 10); the next writer takes it over with a
warning. Creating the lock is atomic where the filesystem offers it (O_EXCL, takeovers serialised by flock on
W/.lock.guard, which stays behind as an empty file). A bucket (gs://, s3://) has no exclusive create through
epath: the lock is written, and read back after SETTLE_S to see whose write won; that is exact unless two
starts reach the bucket within SETTLE_S of each other.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from etils import epath

from ego_jax.train import paths

LOCK = ".lock"
LEASE_S = 600.0  # a holder on another host that has not renewed its lock for this long is gone
SETTLE_S = 2.0  # bucket workdirs: how long a start waits before reading back whose lock won


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir; the message names it and what to do."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux): [state, ppid, ...], or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), to tell a reused pid from the locker."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, pid_start: str | None) -> bool:
    """Whether process `pid` of this host runs (a zombie does not) and is the one that started at `pid_start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    fields = _stat(pid)
    if fields is None:  # no /proc: the pid exists
        return True
    return fields[0] != "Z" and pid_start in (None, start_time(pid))


def _alive(record: dict) -> bool:
    """Whether the run of a lock record still runs: its pid on this host, its renewals from another."""
    if record.get("host") != socket.gethostname():
        return time.time() - record.get("renewed", record.get("time", 0)) < LEASE_S
    return process_alive(int(record.get("pid", -1)), record.get("pid_start"))


def _read(path: epath.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or left empty by a crash between create and write


def describe(record: dict) -> str:
    """Lock record -> 'pid 123 on host h since 2026-01-01 10:00:00 UTC (python scripts/train.py ...)'."""

    def utc(t):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))

    renewed = f", renewed {utc(record['renewed'])}" if "renewed" in record else ""
    return (
        f"pid {record.get('pid')} on host {record.get('host')} since {utc(record.get('time', 0))}{renewed} "
        f"({record.get('command', '?')})"
    )


def holder(workdir) -> dict | None:
    """The record of the live process holding `workdir`, or None (free, or a stale lock)."""
    record = _read(epath.Path(workdir) / LOCK)
    return record if record and _alive(record) else None


class WorkdirLock:
    """Exclusive writer lock on a workdir (context manager); acquire() raises WorkdirLocked if held."""

    def __init__(self, workdir):
        self.workdir = paths.absolute(workdir)
        self.path = self.workdir / LOCK
        self.record = None
        self._stop_renewing = threading.Event()
        self._renewer = None

    def acquire(self) -> "WorkdirLock":
        """Take the lock (taking over a stale one) -> self; WorkdirLocked naming the holder if it is alive."""
        if self.workdir.exists() and not self.workdir.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR,
                f"workdir {self.workdir} is a file, not a directory: name a directory (it is created if missing)",
            )
        now = time.time()
        record = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            pid_start=start_time(os.getpid()),
            time=now,
            renewed=now,
            command=" ".join([os.path.basename(sys.executable), *sys.argv])[:300],
            token=uuid.uuid4().hex,
        )
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if paths.is_local(self.path):
                # Takeovers are serialised on this host by flock on a guard file, so two starters never both
                # remove a stale lock and then each other's fresh one.
                with open(os.fspath(self.path) + ".guard", "a") as guard:
                    fcntl.flock(guard, fcntl.LOCK_EX)
                    try:
                        self._take(record, self._create_exclusive)
                    finally:
                        fcntl.flock(guard, fcntl.LOCK_UN)
            else:
                self._take(record, self._create_and_read_back)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise PermissionError(
                e.errno,
                f"workdir {self.workdir} is not writable ({e.strerror}: {e.filename}): "
                "make it writable, or name a directory you may write to",
            ) from e
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew, name="workdir-lock-renewal", daemon=True)
        self._renewer.start()
        return self

    def _take(self, record: dict, create) -> None:
        for attempt in range(20):
            if create(record):
                self.record = record
                return
            other = _read(self.path)
            if other is None:
                continue
            if other == {} and attempt < 10:  # a starter between create and write: give it a moment
                time.sleep(0.1)
                continue
            if other and _alive(other):
                raise WorkdirLocked(
                    f"workdir {self.workdir} is in use by {describe(other)}. Wait for it to finish or stop it "
                    f"(kill -TERM {other.get('pid')}: it saves and exits); two runs in one workdir would overwrite "
                    f"each other's checkpoints. If that run is gone (a run on another host is taken for gone "
                    f"{LEASE_S:.0f} s after its last renewal), remove {self.path}"
                ) from None
            logging.warning(
                "workdir %s: taking over the stale lock of %s (that process is gone)",
                self.workdir,
                describe(other) if other else "a process that crashed",
            )
            with contextlib.suppress(FileNotFoundError):  # (on a bucket another start may have moved it first)
                self.path.replace(self.path.parent / (LOCK + ".stale"))
        raise WorkdirLocked(f"could not take {self.path} (it keeps changing); remove it if no run uses {self.workdir}")

    def _create_exclusive(self, record: dict) -> bool:
        try:
            fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return True

    def _create_and_read_back(self, record: dict) -> bool:
        if self.path.exists():
            return False
        self.path.write_text(json.dumps(record))
        time.sleep(SETTLE_S)
        current = _read(self.path)
        return bool(current) and current.get("token") == record["token"]

    def _renew(self) -> None:
        """Rewrite `renewed` every LEASE_S / 10 while held, so other hosts see the run alive."""
        while not self._stop_renewing.wait(LEASE_S / 10):
            current = _read(self.path)
            if not current or current.get("token") != self.record["token"]:
                logging.error(
                    "workdir %s: the lock is no longer this run's (%s); another run may be writing here",
                    self.workdir,
                    describe(current) if current else "removed",
                )
                return
            try:
                paths.write_atomic(self.path, json.dumps(dict(self.record, renewed=time.time())))
            except OSError as e:  # a passing filesystem fault: the next renewal tries again, well within the lease
                logging.warning("workdir %s: could not renew the lock (%s)", self.workdir, e)

    def release(self) -> None:
        """Stop renewing and remove the lock if it is still ours."""
        if self._renewer is not None:
            self._stop_renewing.set()
            self._renewer.join()
            self._renewer = None
        if self.record is not None:
            current = _read(self.path)
            if current and current.get("token") == self.record["token"]:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.record = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(workdir):
    """Process 0 holds the workdir lock for every process of a run; if it cannot, every process raises."""
    from ego_jax.train import distributed  # noqa: PLC0415  (jax: only for runs, not for readers of the lock)

    lock = WorkdirLock(workdir)
    distributed.on_process_0(lock.acquire, f"take the lock of workdir {workdir}", error=WorkdirLocked)
    try:
        yield
    finally:
        lock.release()
