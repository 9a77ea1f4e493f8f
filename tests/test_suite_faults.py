"""Fault injection on a tiny suite (issue 22): a suite trusts a reused stage only once it verifies, as train.py
does, leaves no table its runs no longer support, and writes every file of its own whole.

One finished suite (the attention row at 2 frames, one seed: RGB stage 1 for 2 epochs with a checkpoint per
epoch, RGB stage 2 initialised from it for 1 epoch) is shared by the scenarios; each works on its own copy.
"""

import builtins
import json
import os
import re
import shutil

import pytest
import tiny_suite

from ego_jax.experiments import plan, report, runner, stage_job
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.train import checkpoint, loop

RUN = os.path.join("runs", "attention", "frames2", "seed0")


def suite(data_dir) -> SuiteSpec:
    s = tiny_suite.get_config(f"data_dir={data_dir},rows=attention,seeds=1")
    s.rows = tuple(dict(r, args="") for r in s.rows)  # stage 1 on a frozen backbone: the cheaper compile
    s.overrides = s.overrides + (("stages.rgb_stage1.epochs", 2), ("checkpoint_every_epochs", 1))
    return SuiteSpec.from_config(s)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """The undisturbed suite: (workdir, results)."""
    w = tmp_path_factory.mktemp("suite")
    return w, runner.run_suite(suite(data_dir), str(w))


@pytest.fixture
def w(finished, tmp_path):
    shutil.copytree(finished[0], tmp_path / "w", symlinks=True)  # the runs' stage links are relative
    return tmp_path / "w"


def store(w, stage):
    """W/stages/<key> of a stage of the run."""
    return w / "stages" / os.path.basename(os.readlink(w / RUN / stage))


def flip_bytes(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.DIGEST]
    path = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 64)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def accuracies(out):
    return [(r["key"], c, cell["accuracies"]) for r in out["rows"] for c, cell in r["cells"].items()]


def evaluations(w):
    return {stage: json.loads((w / RUN / stage / "eval.json").read_text()) for stage in ("rgb_stage1", "rgb_stage2")}


def test_a_damaged_reused_stage_is_verified_and_retrained_and_no_table_outlives_it(data_dir, finished, w):
    want = evaluations(finished[0])
    s1, s2 = store(w, "rgb_stage1"), store(w, "rgb_stage2")
    flip_bytes(s1 / "checkpoints" / "6")  # the final step; step 3 is good
    flip_bytes(s2 / "checkpoints" / "3")  # its only checkpoint
    bad = re.escape(str(w / RUN / "rgb_stage2" / "checkpoints" / "3"))
    with pytest.raises(checkpoint.BadCheckpoint, match=rf"(?s){bad} is damaged.*delete {re.escape(str(s2))}"):
        runner.run_suite(suite(data_dir), str(w))
    assert not [name for name in report.OUTPUTS if (w / name).exists()]  # the old table is gone with its support
    # Stage 1 was found bad, set aside and trained again from step 3, as train.py does it.
    assert (s1 / "rejected_checkpoints" / "6").is_dir() and (s1 / "rejected_checkpoints" / "DONE-6").exists()
    assert (s1 / "DONE").exists() and (s2 / "rejected_checkpoints" / "DONE-3").exists()
    shutil.rmtree(s2)  # the remedy the error names: stage 2 trains again, from stage 1's retrained checkpoint
    out = runner.run_suite(suite(data_dir), str(w))
    assert accuracies(out) == accuracies(finished[1]) and evaluations(w) == want
    assert (w / "results.md").read_text().split("\n- Data:")[0] == (finished[0] / "results.md").read_text().split(
        "\n- Data:"
    )[0]


class Killed(BaseException):
    """What a SIGKILL does to the process at that point (nothing after it runs)."""


def kill_when_opened_for_writing(monkeypatch, name):
    """The process dies just after it opens a file called `name` (or `name` + a suffix) for writing."""
    real = builtins.open

    def opening(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax+") and os.path.basename(os.fspath(file)).startswith(name):
            f.close()
            raise Killed(file)
        return f

    monkeypatch.setattr(builtins, "open", opening)


def unreadable(w):
    """The suite's JSON files that do not parse."""
    out = []
    for path in w.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            out.append(str(path))
    return out


def test_a_kill_while_a_suite_file_is_written_leaves_it_whole_and_a_damaged_one_is_named(
    data_dir, finished, w, monkeypatch
):
    s1, s2 = store(w, "rgb_stage1"), store(w, "rgb_stage2")
    (s1 / "identity.json").unlink()  # written again by the next run
    for name in ("identity.json", "config.json", "wall.json", "selection.json", "results.json"):
        if name == "wall.json":
            (s2 / "DONE").unlink()  # stage 2 is evaluated again, and its training time added up
        with monkeypatch.context() as patch, pytest.raises(Killed):
            kill_when_opened_for_writing(patch, name)
            runner.run_suite(suite(data_dir), str(w))
        assert unreadable(w) == [], name
    out = runner.run_suite(suite(data_dir), str(w))
    assert accuracies(out) == accuracies(finished[1]) and unreadable(w) == []
    # A damaged file (written by something else) is named, with what to do.
    (s1 / "wall.json").write_text("")
    wall = re.escape(str(w / RUN / "rgb_stage1" / "wall.json"))
    with pytest.raises(ValueError, match=rf"{wall} is not valid JSON \(0 bytes; .*\): delete it"):
        runner.run_suite(suite(data_dir), str(w))


class _Recorder:
    """An executor that records which stage jobs it would run (those without DONE) and runs none."""

    tasks_per_job = 1

    def run(self, nodes, jobs_dir, *, stop):
        self.pending = [n.name for n in nodes if not os.path.exists(n.done)]
        return False


def test_an_executor_reuses_a_finished_stage_only_once_it_verifies(data_dir, w):
    s2 = store(w, "rgb_stage2")
    flip_bytes(s2 / "checkpoints" / "3")
    executor = _Recorder()
    stage_job.train_all(executor, str(w), plan.Plan(suite(data_dir), str(w)).table_runs({}), stop=loop.StopRequest())
    assert executor.pending == [s2.name] and (s2 / "rejected_checkpoints" / "DONE-3").exists()
