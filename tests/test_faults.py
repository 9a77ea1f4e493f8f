"""Fault injection on real tiny runs (issue 12): each fault is refused with a message naming the problem, or
recovered to the same final parameters as an undisturbed run.

One undisturbed run (RGB stage 1 of the ConvLSTM recipe, 2 epochs x 3 steps, checkpoints at steps 3 and 6) is
shared by the scenarios; each works on its own copy. Every process started here ends (killed on teardown).
"""

import builtins
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import stop_at_step
from test_train_e2e import ROOT, run_script, script, script_env, tiny

from configs import convlstm, two_stream
from ego_jax.cli import common
from ego_jax.data import gtea61, prepare
from ego_jax.specs import RunSpec
from ego_jax.train import checkpoint, loaders, loop, preflight, stage as stage_lib, workdir as workdir_lib
from ego_jax.train.workdir_lock import LOCK, WorkdirLocked, holder

STAGE = "rgb_stage1"


def small(data_dir, **changes):  # noqa: F811  (the data_dir fixture's value)
    c = tiny(convlstm, data_dir, epochs=2)
    c.recipe = (STAGE,)
    c.update_from_flattened_dict(changes)  # dotted keys, as --config.a.b=v
    return c


def final_state(workdir):
    return checkpoint.load_final_state(os.path.join(workdir, STAGE, "checkpoints"))


def assert_same(got, want):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The undisturbed run: (workdir, final parameters)."""
    workdir = tmp_path_factory.mktemp("reference")
    assert loop.train(RunSpec.from_config(small(data_dir)), str(workdir))
    return workdir, final_state(workdir)


@pytest.fixture
def work(reference, tmp_path):
    """A copy of the undisturbed run's workdir."""
    shutil.copytree(reference[0], tmp_path / "w")
    return tmp_path / "w"


def ckpt(work, step):
    return work / STAGE / "checkpoints" / str(step)


def largest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.DIGEST]
    return max(files, key=lambda p: p.stat().st_size)


def test_1_corrupt_bytes_in_the_final_checkpoint_are_caught_everywhere_and_retrained(data_dir, reference, work):
    config = small(data_dir)
    data = bytearray(largest_file(ckpt(work, 6)).read_bytes())
    for i in range(0, len(data), max(1, len(data) // 64)):  # 64 flipped bytes
        data[i] ^= 0xFF
    largest_file(ckpt(work, 6)).write_bytes(bytes(data))
    bad = re.escape(str(ckpt(work, 6)))
    # Evaluation refuses the damaged final step, naming it; --allow_unfinished evaluates step 3, labelled so.
    with pytest.raises(checkpoint.BadCheckpoint, match=rf"(?s){bad} is damaged.*--allow_unfinished"):
        workdir_lib.load_stage_model(RunSpec.from_config(config), work, STAGE)
    _, meta = workdir_lib.load_stage_model(RunSpec.from_config(config), work, STAGE, allow_unfinished=True)
    assert (meta["step"], meta["finished"]) == (3, False)
    # A next stage starting from it refuses too (never an older step in place of the final one).
    model = stage_lib.build_model(RunSpec.from_config(config), "rgb_stage2")
    with pytest.raises(checkpoint.BadCheckpoint, match=bad):
        stage_lib.initialise(model, {"model": STAGE}, workdir=str(work), imagenet_weights="unused")
    # Training sees it, retrains steps 4..6 from step 3, and ends where the undisturbed run did.
    assert loop.train(RunSpec.from_config(config), str(work))
    assert_same(final_state(work), reference[1])
    assert (work / STAGE / "rejected_checkpoints" / "6").is_dir()  # kept for inspection, not deleted
    assert (work / STAGE / "rejected_checkpoints" / "DONE-6").exists() and (work / STAGE / "DONE").exists()


def test_2_3_truncated_and_partly_deleted_newest_checkpoint_resumes_from_the_good_one(data_dir, reference, work):
    """An interrupted stage (no DONE) whose newest checkpoint lost half a file and its metadata item."""
    (work / STAGE / "DONE").unlink()
    path = largest_file(ckpt(work, 6))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    shutil.rmtree(ckpt(work, 6) / "meta")
    with pytest.raises(checkpoint.BadCheckpoint, match=rf"{re.escape(str(ckpt(work, 6)))} is damaged: .*missing"):
        checkpoint.restore_state(str(work / STAGE / "checkpoints"), step=6)
    assert loop.train(RunSpec.from_config(small(data_dir)), str(work))
    assert_same(final_state(work), reference[1])


def test_4_a_second_writer_is_refused_naming_the_first_and_a_crashed_ones_lock_is_taken_over(data_dir, work):
    config = small(data_dir)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (work / LOCK).write_text(
            json.dumps(
                dict(
                    pid=sleeper.pid,
                    host=os.uname().nodename,
                    time=time.time(),
                    command="python scripts/train.py (the other run)",
                )
            )
        )
        with pytest.raises(WorkdirLocked, match=rf"in use by pid {sleeper.pid} on host .*the other run"):
            loop.train(RunSpec.from_config(config), str(work))
        # Readers do not need the lock: evaluation reads while the other run holds it.
        assert workdir_lib.load_stage_model(RunSpec.from_config(config), work, STAGE)[1]["step"] == 6
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
    assert holder(str(work)) is None  # its process is gone: stale
    assert loop.train(RunSpec.from_config(config), str(work))
    assert not (work / LOCK).exists()


def test_5_a_changed_config_is_refused_with_a_diff_harmless_keys_pass_and_a_stage_restarts_on_purpose(data_dir, work):
    with pytest.raises(
        ValueError,
        match=r"(?s)stage 'rgb_stage1' .* started with another config.*batch_size: 4 -> 8"
        r".*stages?.optimizer.lr: 0.001 -> 0.01.*--restart_stage rgb_stage1",
    ):
        loop.train(
            RunSpec.from_config(small(data_dir, batch_size=8, **{"stages.rgb_stage1.optimizer.lr": 0.01})), str(work)
        )
    with pytest.raises(ValueError, match=r"stage.epochs: 2 -> 3"):  # a finished stage is not reopened
        loop.train(RunSpec.from_config(small(data_dir, **{"stages.rgb_stage1.epochs": 3})), str(work))
    harmless = {
        "log_every_steps": 1,
        "eval_batch_size": 8,
        "data.worker_count": 1,
        "eval_every_epochs": 5,
        "checkpoint_every_epochs": 7,
    }
    assert loop.train(RunSpec.from_config(small(data_dir, **harmless)), str(work))
    # An unfinished stage may change its length (the epochs already run do not depend on it).
    (work / STAGE / "DONE").unlink()
    longer = RunSpec.from_config(small(data_dir, **{"stages.rgb_stage1.epochs": 3}))
    assert preflight.check_records(longer, str(work)) == []
    # --restart_stage: the old directory is moved aside, the stage starts from scratch under the new config.
    changed = small(data_dir, batch_size=8)
    loop.restart_stage(changed, str(work), STAGE)
    assert not (work / STAGE).exists() and len(os.listdir(work / "restarted")) == 1
    assert preflight.check_records(RunSpec.from_config(changed), str(work)) == []


def _children(pid):
    """pids whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start(workdir, data_dir):
    cmd = script(
        "train.py",
        f"--config={os.path.join(ROOT, 'configs', 'convlstm.py')}:frames=2,data=synthetic,init=scratch",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        "--config.data.crop=32",
        "--config.data.resize=36",
        "--config.data.worker_count=1",
        "--config.model.depth=18",
        "--config.model.width=4",
        "--config.batch_size=4",
        "--config.eval_batch_size=4",
        "--config.log_every_steps=1",
        "--config.recipe=('rgb_stage1',)",
        "--config.stages.rgb_stage1.epochs=1000",
        # No periodic evaluation: its loader's worker would be starting at a random moment; one hit by the
        # Ctrl-C while importing dies (the loop then saves anyway, but the worker prints its traceback).
        "--config.eval_every_epochs=1000",
    )
    # Own session: Ctrl-C in a terminal signals the whole process group (the loader workers too), as killpg does.
    return subprocess.Popen(
        cmd, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait_for_rows(proc, metrics, rows, timeout=900):  # jax import + compile on a loaded machine
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"no {rows} metrics rows: {proc.poll()} {proc.stdout.read()[-3000:] if proc.poll() else ''}")


def test_6_7_ctrl_c_saves_and_exits_cleanly_and_loader_workers_die_with_a_killed_trainer(data_dir, tmp_path):
    workdir = tmp_path / "w"
    metrics = workdir / STAGE / "metrics.jsonl"
    procs = []
    try:
        proc = _start(workdir, data_dir)
        procs.append(proc)
        _wait_for_rows(proc, metrics, 2)
        workers = _children(proc.pid)
        assert len([w for w in workers if _alive(w)]) >= 2  # the grain worker and multiprocessing's resource tracker
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == common.EXIT_STOPPED == 75, out[-3000:]  # stopped, resumable: a scheduler requeues
        assert "rerun the same command to resume" in out and "Traceback" not in out
        step = checkpoint.StageCheckpoints(str(workdir / STAGE / "checkpoints")).latest_step()
        assert step and step >= 2
        assert not (workdir / LOCK).exists()

        proc = _start(workdir, data_dir)  # resumes, then is killed without warning
        procs.append(proc)
        _wait_for_rows(proc, metrics, len(metrics.read_text().splitlines()) + 2)
        workers = [w for w in _children(proc.pid) if _alive(w)]
        assert len(workers) >= 2
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.time() + 120  # a worker still starting (imports, on a loaded machine) exits once started
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "loader workers outlived their killed parent"
        assert (workdir / LOCK).exists() and holder(str(workdir)) is None  # the killed run's lock is stale
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
            for w in _children(p.pid):
                os.kill(w, signal.SIGKILL)


def test_6_a_second_ctrl_c_aborts_at_once():
    stop = loop.StopRequest()
    stop(signal.SIGINT)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt, match="second Ctrl-C"):
        stop(signal.SIGINT)


def test_8_a_missing_modality_is_refused_before_the_first_step(data_dir, tmp_path):
    manual = os.path.join(os.path.dirname(data_dir), "manual")
    gtea61.build(manual_dir=manual, data_dir=data_dir, config="rgb")  # a build without flow
    config = tiny(two_stream, data_dir)
    config.data.builder_config = "rgb"
    with pytest.raises(
        ValueError,
        match=r"(?s)stage 'flow' needs the dataset features \['flow_x', 'flow_y'\].*"
        r"stage 'joint' needs .*--config all",
    ):
        loop.train(RunSpec.from_config(config), str(tmp_path))
    assert not (tmp_path / "rgb_stage1").exists()  # nothing trained first


def test_14_a_missing_config_file_is_one_line_naming_it(tmp_path):
    missing = os.path.join(ROOT, "configs", "nope.py")
    out = run_script("train.py", f"--config={missing}:frames=2", f"--workdir={tmp_path}", "--config.batch_size=4")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        f"error: --config: no config file {missing!r}; give the path of one (for example configs/quickstart.py)"
    ]


@pytest.mark.parametrize(
    "key,value",
    [
        ("checkpoint_every_epochs", 0),
        ("eval_every_epochs", 0),
        ("log_every_steps", 0),
        ("batch_size", 0),
        ("stages.rgb_stage1.epochs", 0),
        ("eval_batch_size", -4),
        ("batch_size", 64),
    ],
)
def test_9_zero_and_out_of_range_values_are_refused_up_front(data_dir, tmp_path, key, value):
    with pytest.raises(ValueError, match=rf"{key.split('.')[-1]}={value}"):
        loop.train(RunSpec.from_config(small(data_dir, **{key: value})), str(tmp_path))
    assert not (tmp_path / STAGE).exists()


def test_10_errors_name_the_damaged_shard_the_weights_file_and_the_config_typo(data_dir, tmp_path):
    damaged = tmp_path / "tfds"
    shutil.copytree(data_dir, damaged)
    shard = next((damaged / "gtea61" / "all").rglob("gtea61-S1.array_record-*"))
    frames = shard.parent / "frames-S1.array_record"
    originals = {f: f.read_bytes() for f in (shard, frames)}

    def damage(path, start, stop):
        data = bytearray(originals[path])
        for i in range(start, stop, 97):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))

    damage(shard, 200, 1000)  # the clip records (metadata only: the rest of the first block is padding)
    with pytest.raises(OSError, match=rf"(?s)of split S1\+S3\+S4 \(file {re.escape(str(shard))}, record \d\).*rebuild"):
        loop.train(RunSpec.from_config(small(str(damaged))), str(tmp_path / "w1"))
    shard.write_bytes(originals[shard])
    damage(frames, len(originals[frames]) // 4, len(originals[frames]) // 2)
    with pytest.raises(OSError, match=rf"(?s)frame file {re.escape(str(frames))} of split S1 .*rebuild with"):
        loop.train(RunSpec.from_config(small(str(damaged))), str(tmp_path / "w1b"))

    weights = tmp_path / "resnet.npz"
    weights.write_bytes(b"not a zip file")
    config = convlstm.get_config("frames=2,data=synthetic")  # starts from ImageNet weights
    config.data.data_dir, config.imagenet_weights = data_dir, str(weights)
    with pytest.raises(ValueError, match=rf"{re.escape(str(weights))} is not a readable ImageNet weights artifact"):
        loop.train(RunSpec.from_config(config), str(tmp_path / "w2"))

    quickstart = os.path.join(ROOT, "configs", "quickstart.py")
    typo = run_script("train.py", f"--config={quickstart}", f"--workdir={tmp_path}", "--config.batch_sze=4")
    assert typo.returncode != 0
    assert "Traceback" not in typo.stderr and 'Did you mean "batch_size"' in typo.stderr.strip().splitlines()[-1]


def _signal_at(monkeypatch, step, signum=signal.SIGTERM):
    """Send this process `signum` as the loader hands out the batch of train step `step` (a stop between steps)."""
    monkeypatch.setattr(loaders, "train_loader", stop_at_step.signal_at(step, signum))


def test_11_metrics_after_a_stop_between_two_logs_are_the_undisturbed_runs_byte_for_byte(
    data_dir, reference, work, tmp_path, monkeypatch
):
    """Logs at steps 2, 4, 6 average the steps since the last log; a stop at step 5 (SIGTERM) or a crash after the
    step-3 checkpoint (SIGKILL) resumes the window where it was, so metrics.jsonl is the undisturbed run's."""
    want = (reference[0] / STAGE / "metrics.jsonl").read_bytes()
    stopped = tmp_path / "sigterm"
    with monkeypatch.context() as patch:
        _signal_at(patch, 5)
        assert not loop.train(RunSpec.from_config(small(data_dir)), str(stopped))
    assert checkpoint.StageCheckpoints(str(stopped / STAGE / "checkpoints")).latest_step() == 5
    assert loop.train(RunSpec.from_config(small(data_dir)), str(stopped))
    assert (stopped / STAGE / "metrics.jsonl").read_bytes() == want
    assert_same(final_state(stopped), reference[1])
    # The crash: DONE and step 6 gone (metrics.jsonl holds rows past step 3, which the resume logs again).
    (work / STAGE / "DONE").unlink()
    shutil.rmtree(ckpt(work, 6))
    assert loop.train(RunSpec.from_config(small(data_dir)), str(work))
    assert (work / STAGE / "metrics.jsonl").read_bytes() == want


def test_12_a_killed_dataset_build_is_cleaned_up_by_the_next_and_a_running_one_is_left_alone(data_dir, tmp_path):
    manual, target = os.path.join(os.path.dirname(data_dir), "manual"), tmp_path / "tfds"
    folder = target / "gtea61" / "rgb"
    # A build killed (SIGTERM) while writing its second clip.
    code = (
        "import os, signal\n"
        "from ego_jax.data import gtea61\n"
        "real = gtea61.Gtea61._generate_examples\n"
        "def dying(self, *args):\n"
        "    for i, example in enumerate(real(self, *args)):\n"
        "        if i == 1:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "        yield example\n"
        "gtea61.Gtea61._generate_examples = dying\n"
        f"gtea61.build(manual_dir={manual!r}, data_dir={str(target)!r}, config='rgb')\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-3000:]
    left = list(folder.glob("incomplete.*"))
    assert len(left) == 1 and any(p.is_file() for p in left[0].rglob("*"))
    # While another build holds the folder, a build is refused and touches nothing.
    with open(folder / prepare.LOCK, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(prepare.BuildRunning, match=rf"another process is building into {re.escape(str(folder))}"):
            gtea61.build(manual_dir=manual, data_dir=target, config="rgb")
        fcntl.flock(other, fcntl.LOCK_UN)
    assert list(folder.glob("incomplete.*")) == left
    builder = gtea61.build(manual_dir=manual, data_dir=target, config="rgb")
    assert builder.is_prepared() and list(folder.glob("incomplete.*")) == []


def _fail_writes(monkeypatch, under, err):
    """Every open for writing of a file under `under` fails with OSError `err` (a read-only or a full filesystem)."""
    real = builtins.open

    def opening(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and os.path.abspath(os.fspath(file)).startswith(str(under)):
            raise OSError(err, os.strerror(err), os.fspath(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opening)


def _error_line(train, *args) -> str:
    """What train.py prints for an error `train(*args)` raises (the commands' one_line_errors)."""
    with pytest.raises(SystemExit) as e, common.one_line_errors(ValueError):
        train(*args)
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def test_13_a_file_for_workdir_a_read_only_workdir_and_a_full_disk_are_one_line_naming_the_path_and_the_fix(
    data_dir, reference, tmp_path, monkeypatch
):
    run = RunSpec.from_config(small(data_dir))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert _error_line(loop.train, run, str(a_file)) == (
        f"error: workdir {a_file} is a file, not a directory: name a directory (it is created if missing)"
    )
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    with monkeypatch.context() as patch:
        _fail_writes(patch, read_only, errno.EROFS)
        assert re.fullmatch(
            rf"error: workdir {re.escape(str(read_only))} is not writable \(Read-only file system: "
            rf"{re.escape(str(read_only))}/\S+\): make it writable, or name a directory you may "
            "write to",
            _error_line(loop.train, run, str(read_only)),
        )
    assert os.listdir(read_only) == []
    # The disk fills up while orbax writes the first checkpoint (step 3, in its worker threads).
    work = tmp_path / "w"
    with monkeypatch.context() as patch:
        _fail_writes(patch, work / STAGE / "checkpoints", errno.ENOSPC)
        assert re.fullmatch(
            rf"error: no space left on the device of {re.escape(str(work / STAGE))}/checkpoints while "
            r"saving checkpoint step 3: free space there \(or move the workdir to a larger disk\) and "
            r"rerun the same command; the stage resumes from its newest good checkpoint \(none yet\)",
            _error_line(loop.train, run, str(work)),
        )
    assert [p.name for p in (work / STAGE / "checkpoints").iterdir()] == ["3.orbax-checkpoint-tmp"]  # the failed save
    assert loop.train(run, str(work))  # space freed: the same command (removes what the failed save left)
    assert_same(final_state(work), reference[1])
    assert sorted(p.name for p in (work / STAGE / "checkpoints").iterdir()) == ["3", "6"]
