"""Real 2-process runs of scripts/train.py and scripts/experiment.py on 127.0.0.1 (2 processes x 1 CPU device,
gloo collectives), each against 1 process x 2 CPU devices.

train.py trains, checkpoints, stops at one agreed step after a SIGTERM to process 1 only, resumes, and ends with
bitwise the parameters, metrics and test accuracy of 1 process: the same global batches, and a 2-way gradient sum
is the same float sum in either order. experiment.py runs a tiny suite to the same table, stages and parameters.
Tiny sizes of test_train_e2e (ResNet-18 width 4, 32 px, T=2, batch 4, 3 steps per epoch); every process has a
hard timeout and is killed at teardown.
"""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_train_e2e import ARGS, ROOT, final_state

from ego_jax.cli import common
from ego_jax.train import checkpoint, distributed, sharding

STAGE, EPOCHS, STEPS_PER_EPOCH = "rgb_stage1", 3, 3
TIMEOUT = 400  # seconds per launch, far above its time on a loaded 2-core machine


@pytest.fixture
def launch():
    """launch([script, args...], devices=1) -> Popen of scripts/<script>; all killed at teardown."""
    procs = []

    def start(argv, *, devices=1):
        env = dict(
            os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), TF_CPP_MIN_LOG_LEVEL="3"
        )
        script = os.path.join(ROOT, argv[0] if os.sep in argv[0] else os.path.join("scripts", argv[0]))
        procs.append(
            subprocess.Popen(
                [sys.executable, script, *argv[1:]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def _train(workdir, data) -> list[str]:
    return [
        "train.py",
        f"--config={os.path.join(ROOT, 'configs', 'convlstm.py')}:{ARGS}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data}",
        "--config.data.crop=32",
        "--config.data.resize=36",
        "--config.data.worker_count=0",
        "--config.model.depth=18",
        "--config.model.width=4",
        "--config.batch_size=4",
        "--config.eval_batch_size=4",
        "--config.log_every_steps=1",
        f"--config.recipe=('{STAGE}',)",
        f"--config.stages.{STAGE}.epochs={EPOCHS}",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pair(launch, argv, *, stop_at: int | None = None):
    """Two processes of one run; with stop_at, process 1 is sent SIGTERM as it takes that step's batch."""
    port = _free_port()
    scripts = [argv[:1], argv[:1] if stop_at is None else [os.path.join("tests", "stop_at_step.py"), str(stop_at)]]
    return [
        launch(
            [
                *scripts[i],
                *argv[1:],
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ]
        )
        for i in (0, 1)
    ]


def _finish(proc, status=0) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == status, out[-4000:]
    return out


def _rows(workdir) -> dict:
    """metrics.jsonl by step."""
    lines = (workdir / STAGE / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def test_two_processes_stop_on_one_signal_resume_and_match_one_process(data_dir, launch, tmp_path):
    t0 = time.perf_counter()
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    reference = launch(_train(single, data_dir), devices=2)

    # SIGTERM to process 1 only, as it takes step 4's batch (not when a file appears: a fast machine ends this tiny
    # run first); process 0 learns of it through the agreement
    pair = _pair(launch, _train(multi, data_dir), stop_at=4)
    outs = [_finish(p, common.EXIT_STOPPED) for p in pair]  # stopped, resumable: both exit saying so
    stopped = [re.search(r"stopped at step (\d+)/(\d+)", out) for out in outs]
    assert all(stopped), "a process did not stop early (did the run end before the signal?)\n" + outs[0][-3000:]
    step = int(stopped[0][1])
    assert int(stopped[1][1]) == step < EPOCHS * STEPS_PER_EPOCH
    assert checkpoint.StageCheckpoints(str(multi / STAGE / "checkpoints")).latest_step() == step
    assert not (multi / STAGE / "DONE").exists()
    t_stop = time.perf_counter()

    outs = [_finish(p) for p in _pair(launch, _train(multi, data_dir))]
    assert all(f"resuming from step {step}" in out for out in outs), outs[1][-3000:]
    _finish(reference)
    t_end = time.perf_counter()

    want, got = final_state(single, STAGE), final_state(multi, STAGE)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    ref_rows, rows = _rows(single), _rows(multi)
    assert sorted(rows) == sorted(ref_rows) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    # train loss, accuracy, grad norm, lr of every step and eval accuracy at epoch ends, each once: the resumed
    # run logged again what came after its checkpoint, in place of what the stopped run had logged
    assert (multi / STAGE / "metrics.jsonl").read_text() == (single / STAGE / "metrics.jsonl").read_text()
    for name in ("DONE", "eval.json"):
        assert json.loads((multi / STAGE / name).read_text()) == json.loads((single / STAGE / name).read_text())
    print(f"2-process test: stop phase {t_stop - t0:.0f}s, resume + reference {t_end - t_stop:.0f}s")


def test_a_suite_on_two_processes_gives_the_table_stages_and_parameters_of_one(data_dir, launch, tmp_path):
    """The flow row of the Step-1 suite (1 stage, 1 seed) through scripts/experiment.py."""
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"

    def suite(workdir):
        return [
            "experiment.py",
            f"--suite={os.path.join(ROOT, 'tests', 'tiny_suite.py')}:data_dir={data_dir},rows=flow,seeds=1",
            f"--workdir={workdir}",
        ]

    reference = launch(suite(single), devices=2)
    outs = [_finish(p) for p in _pair(launch, suite(multi))]
    _finish(reference)
    assert "results.md" in outs[0] and "results.md" not in outs[1], outs[1][-3000:]  # process 0 alone reports

    want, got = (json.loads((w / "results.json").read_text()) for w in (single, multi))
    fields = ("row", "column", "seed", "workdir", "step", "accuracy", "correct", "count", "per_class_accuracy")
    assert [{k: r[k] for k in fields} for r in got["runs"]] == [{k: r[k] for k in fields} for r in want["runs"]]
    assert len(got["runs"]) == 1
    assert {r["key"]: {c: cell["accuracies"] for c, cell in r["cells"].items()} for r in got["rows"]} == {
        r["key"]: {c: cell["accuracies"] for c, cell in r["cells"].items()} for r in want["rows"]
    }
    stages = sorted(os.listdir(single / "stages"))
    assert sorted(os.listdir(multi / "stages")) == stages and len(stages) == 1
    for sid in stages:
        name = sid.rsplit("-", 1)[0]
        w, g = (checkpoint.load_final_state(str(root / "stages" / sid / "checkpoints")) for root in (single, multi))
        assert w.keys() == g.keys()
        for k in w:
            np.testing.assert_array_equal(g[k], w[k], err_msg=f"{sid} {k}")
        assert (multi / "stages" / sid / "metrics.jsonl").read_text() == (
            single / "stages" / sid / "metrics.jsonl"
        ).read_text(), name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coordinator_address="127.0.0.1:1234", num_processes=2), "--process_id missing"),
        (
            dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
            r"process_id=2 must be in 0 \.\. 1",
        ),
        (dict(num_processes=2, process_id=0, mode="off"), "--distributed=off but"),
        (dict(mode="on"), "distributed mode 'on'"),
    ],
)
def test_launch_flags_are_checked_before_jax_starts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_one_process_unless_jax_detects_a_launcher():
    """distributed.initialize() goes through jax.distributed.initialize()'s own detection (public API): nothing found
    -> one process; an Open MPI launch of 1 process (mpirun's variables) -> multi-process mode, 1 process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_COORDINATOR", "KUBERNETES_", "MEGASCALE_"))
    }
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    code = (
        "from ego_jax.train import distributed; distributed.initialize(); import jax; "
        "print(jax.distributed.is_initialized(), jax.process_count())"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mpirun = dict(
        OMPI_MCA_orte_hnp_uri=f"1531576320.0;tcp://127.0.0.1:{port}",
        OMPI_COMM_WORLD_SIZE="1",
        OMPI_COMM_WORLD_RANK="0",
        OMPI_COMM_WORLD_LOCAL_RANK="0",
    )
    for extra, want in (({}, "False 1"), (mpirun, "True 1")):
        proc = subprocess.run(
            [sys.executable, "-c", code], env=dict(env, **extra), capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and proc.stdout.strip() == want, (extra, proc.stdout, proc.stderr[-2000:])


@dataclasses.dataclass(frozen=True)
class _TpuLike:
    """What mesh construction reads of a device of a 2-slice job."""

    id: int
    slice_index: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def test_multi_slice_mesh_runs_slice_after_slice():
    devices = [_TpuLike(i, slice_index=i % 2, process_index=i // 2) for i in range(8)]  # slices interleaved by id
    order = sharding.device_order(devices)
    assert [d.slice_index for d in order] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sorted(d.id for d in order) == list(range(8))


def test_one_slice_keeps_jax_make_mesh_order():
    assert list(sharding.device_order(jax.devices())) == list(jax.make_mesh((4,), ("data",)).devices)
