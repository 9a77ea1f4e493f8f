"""Workdir lock: one writer, the holder named, stale locks of dead processes and lapsed leases taken over,
renewal, concurrent starts, and the bucket protocol (no exclusive create) exercised on a local directory."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from ego_jax.train import workdir_lock
from ego_jax.train.workdir_lock import LEASE_S, LOCK, WorkdirLock, WorkdirLocked, holder


def test_second_writer_is_refused_naming_the_holder_until_released(tmp_path):
    with WorkdirLock(str(tmp_path)):
        assert holder(str(tmp_path))["pid"] == os.getpid()
        with pytest.raises(WorkdirLocked, match=rf"in use by pid {os.getpid()} on host {socket.gethostname()}"):
            WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK).exists() and holder(str(tmp_path)) is None
    WorkdirLock(str(tmp_path)).acquire().release()


def _write_lock(path, **record):
    path.write_text(json.dumps(dict(time=0, command="train.py", **record)))


def test_a_dead_process_lock_is_taken_over_another_hosts_once_its_lease_lapsed(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lock(tmp_path / LOCK, pid=int(dead.stdout), host=socket.gethostname())
    assert holder(str(tmp_path)) is None
    lock = WorkdirLock(str(tmp_path)).acquire()
    assert "stale lock" in caplog.text and json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    _write_lock(tmp_path / LOCK, pid=1, host="elsewhere", renewed=time.time() - LEASE_S / 2)
    with pytest.raises(WorkdirLocked, match=rf"pid 1 on host elsewhere.*remove {tmp_path / LOCK}"):
        WorkdirLock(str(tmp_path)).acquire()
    _write_lock(tmp_path / LOCK, pid=1, host="elsewhere", renewed=time.time() - LEASE_S - 1)
    assert holder(str(tmp_path)) is None  # not renewed for a whole lease: that run is gone
    WorkdirLock(str(tmp_path)).acquire().release()
    # A live pid whose process started after the lock was written (pid reuse) is stale too.
    _write_lock(tmp_path / LOCK, pid=os.getpid(), host=socket.gethostname(), pid_start="1")
    assert holder(str(tmp_path)) is None


def _try_lock(workdir, barrier, results):
    barrier.wait()
    try:
        WorkdirLock(workdir).acquire()
        results.put("won")
    except WorkdirLocked:
        results.put("refused")
    barrier.wait()  # keep the winner alive until every contender tried


def test_concurrent_starts_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(str(tmp_path), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert outcomes == ["refused"] * 3 + ["won"]


def test_the_holder_renews_its_lease_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lock, "LEASE_S", 0.5)  # renewed every 0.05 s
    lock = WorkdirLock(str(tmp_path)).acquire()
    first = json.loads((tmp_path / LOCK).read_text())
    deadline = time.time() + 30
    while json.loads((tmp_path / LOCK).read_text())["renewed"] == first["renewed"] and time.time() < deadline:
        time.sleep(0.05)
    renewed = json.loads((tmp_path / LOCK).read_text())
    assert renewed["renewed"] > first["renewed"] and renewed["token"] == first["token"]
    lock.release()
    assert not (tmp_path / LOCK).exists()
    time.sleep(0.2)
    assert not (tmp_path / LOCK).exists()  # the renewal stopped with the release: nothing wrote the lock again


def test_bucket_protocol_one_writer_the_holder_named(tmp_path, monkeypatch):
    """Where there is no exclusive create (gs://): write, wait SETTLE_S, read back whose write won."""
    monkeypatch.setattr(workdir_lock.paths, "is_local", lambda path: False)
    monkeypatch.setattr(workdir_lock, "SETTLE_S", 0.05)
    with WorkdirLock(str(tmp_path)):
        assert not (tmp_path / (LOCK + ".guard")).exists()  # no flock: a bucket has none
        with pytest.raises(WorkdirLocked, match=rf"in use by pid {os.getpid()}"):
            WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK).exists()
    _write_lock(tmp_path / LOCK, pid=1, host="elsewhere", renewed=time.time() - LEASE_S - 1)
    WorkdirLock(str(tmp_path)).acquire().release()  # a lapsed lease is taken over there too
